#!/usr/bin/env bash
# The main job: set up, mount the embedded default TD at a temporary directory, walk
# through the files with echo and cat, the ioctl node, a verified quote, the event log
# replayed by an unmodified third-party client under tdxfs run, unmount, and a quick bench.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export PATH="$PWD/.venv/bin:$PATH"

MNT=$(mktemp -d /tmp/tdxfs-demo.XXXXXX)
cleanup() { tdxfs umount "$MNT" 2>/dev/null || true; rm -rf "$MNT" "$MNT.report" "$MNT.state" "$MNT.pki" "$MNT.quote" "$MNT.verify"; }
trap cleanup EXIT
step() { printf '\n\033[1m$ %s\033[0m\n' "$*"; }

step tdxfs mount "$MNT" --state "$MNT.state" --log "$MNT.log"
tdxfs mount "$MNT" --state "$MNT.state" --log "$MNT.log"
findmnt -no SOURCE,FSTYPE,OPTIONS "$MNT"
step ls -l "$MNT"
ls -l "$MNT"

NONCE=$(head -c 64 /dev/urandom | xxd -p -c 64)
step "echo \$NONCE > $MNT/reportdata        # 128 hex chars = 64 bytes of REPORTDATA"
echo "$NONCE" > "$MNT/reportdata"
cat "$MNT/reportdata"

step "cat $MNT/tdreport > $MNT.report; tdxfs report decode $MNT.report"
cat "$MNT/tdreport" > "$MNT.report"
tdxfs report decode "$MNT.report" | grep -E '^(reporttype.type|reportdata|mac|tdinfo.attributes|tdinfo.mrtd|tdinfo.rtmr3) '

step cat "$MNT/rtmr3"
OLD=$(cat "$MNT/rtmr3")
echo "$OLD"
EVENT=$(printf 'my application v1.2' | sha384sum | cut -d' ' -f1)
step "echo \$(printf 'my application v1.2' | sha384sum) > $MNT/rtmr3    # extend"
echo "$EVENT" > "$MNT/rtmr3"
NEW=$(cat "$MNT/rtmr3")
echo "$NEW"
EXPECT=$( (printf '%s' "$OLD" | xxd -r -p; printf '%s' "$EVENT" | xxd -r -p) | sha384sum | cut -d' ' -f1)
echo "SHA-384(old || event) = $EXPECT"
[ "$NEW" = "$EXPECT" ] || { echo "demo: extend result is wrong" >&2; exit 1; }

step "dd if=$MNT/tdreport bs=1 skip=864 count=48 | xxd -p -c 48   # RTMR3 inside a fresh report"
IN_REPORT=$(dd if="$MNT/tdreport" bs=1 skip=864 count=48 status=none | xxd -p -c 48)
echo "$IN_REPORT"
[ "$IN_REPORT" = "$NEW" ] || { echo "demo: RTMR3 in the report differs" >&2; exit 1; }

step "echo not-hex > $MNT/rtmr3     # refused: EINVAL, nothing extended"
echo not-hex > "$MNT/rtmr3" || true
[ "$(cat "$MNT/rtmr3")" = "$NEW" ] && echo "rtmr3 unchanged"
tail -n 1 "$MNT.log"

step "tdxfs report get --via ioctl --mount $MNT --reportdata \$NONCE    # TDX_CMD_GET_REPORT0 on $MNT/tdx_guest"
tdxfs report get --via ioctl --mount "$MNT" --reportdata "$NONCE" | grep -E '^(reportdata|tdinfo.rtmr3) '

step "tdxfs quote get --mount $MNT --reportdata \$NONCE -o $MNT.quote    # configfs-tsm: mkdir, inblob, outblob, rmdir"
tdxfs quote get --mount "$MNT" --reportdata "$NONCE" -o "$MNT.quote"
step "tdxfs pki export $MNT.pki --state $MNT.state && tdxfs quote verify ...   # dcap-qvl, trusting the SIMULATED root"
tdxfs pki export "$MNT.pki" --state "$MNT.state"
tdxfs quote verify "$MNT.quote" --collateral "$MNT.pki/collateral.json" --root "$MNT.pki/root-ca.pem" \
  | grep -E '^(verified|tcb_status|rt_mr3|report_data)'

step "tdxfs extend --rtmr 3 --text 'my service started' --mount $MNT; tail -n 2 $MNT/eventlog"
tdxfs extend --rtmr 3 --text 'my service started' --mount "$MNT"
tail -n 2 "$MNT/eventlog"

step "tdxfs run --mount $MNT -- tdx_verify_rtmr    # Intel's pytdxmeasure at the kernel's paths, unmodified"
tdxfs run --mount "$MNT" -- tdx_verify_rtmr 2>&1 | tee "$MNT.verify"
[ "$(grep -c 'passed the verification' "$MNT.verify")" = 4 ] || { echo "demo: the event log does not replay" >&2; exit 1; }
rm -f "$MNT.verify"

step tdxfs umount "$MNT"
tdxfs umount "$MNT"
rm -f "$MNT.log"

step "tdxfs bench --quick --output bench-out     # ioctl vs files, side by side"
tdxfs bench --quick --output bench-out
echo "demo: done (plots: bench-out/bench.png, bench-out/bench.svg)"
