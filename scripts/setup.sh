#!/usr/bin/env bash
# Install what a fresh Debian 12 machine lacks for tdxfs, idempotently:
# system FUSE packages, a virtual environment in .venv, and tdxfs itself (editable).
# Run as root (apt-get). Leaves /sbin alone: see README for the mount(8) helper link.
set -euo pipefail
cd "$(dirname "$0")/.."

need=()
command -v fusermount3 >/dev/null || need+=(fuse3)
ldconfig -p | grep -q 'libfuse3\.so\.3' || need+=(libfuse3-3)
ldconfig -p | grep -q 'libfuse\.so\.2' || need+=(libfuse2)      # for the fusepy tox env
command -v xxd >/dev/null || need+=(xxd)
command -v strace >/dev/null || need+=(strace)                 # syscall counts in benchmarks
command -v gcc >/dev/null || need+=(gcc)                       # the bench's C reference server and client
command -v pkg-config >/dev/null || need+=(pkg-config)
[ -f /usr/include/fuse3/fuse_lowlevel.h ] || need+=(libfuse3-dev)
command -v unshare >/dev/null || need+=(util-linux)
python3 -c 'import venv, ensurepip' 2>/dev/null || need+=(python3-venv)
if [ ${#need[@]} -gt 0 ]; then
  echo "setup: installing ${need[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi

if [ ! -x .venv/bin/python ]; then
  python3 -m venv .venv
fi
if ! .venv/bin/python -c 'import tdxfs, mfusepy, cryptography, pytest, tox, matplotlib, pytdxmeasure, cctrusted_vm' 2>/dev/null \
   || [ setup.cfg -nt .venv/.tdxfs-installed ]; then
  .venv/bin/pip install -q --upgrade pip
  .venv/bin/pip install -q -e '.[test,bench,clients]' tox
  touch .venv/.tdxfs-installed
fi
echo "setup: ready ($(.venv/bin/python --version), $(.venv/bin/python -c 'from tdxfs.server.binding import NAME, libfuse_version; print(NAME, "on libfuse", libfuse_version())'))"
