#!/usr/bin/env bash
# In-kernel cost of each access pattern: median of RUNS runs of N iterations (µs per op).
# Usage: benchmarks/inkernel.sh [RUNS] [N]
set -euo pipefail
runs=${1:-5}; n=${2:-200000}
bin=$(mktemp /tmp/tdxfs-inkernel.XXXXXX)
trap 'rm -f "$bin"' EXIT
cc -O2 -o "$bin" "$(dirname "$0")/inkernel.c"
for p in ioctl-kept ioctl-open sysfs-pread sysfs-orc shell-tmpfs; do
  out=$(for _ in $(seq "$runs"); do "$bin" "$p" "$n"; done | sort -n)
  med=$(echo "$out" | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}')
  dev=$(echo "$out" | awk 'NR==1 {print $2}')
  printf '%-12s %8s us  %-9s (runs: %s)\n' "$p" "$med" "$dev" "$(echo "$out" | awk '{print $1}' | tr '\n' ' ')"
done
