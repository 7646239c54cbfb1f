#!/usr/bin/env bash
# The whole test suite via tox: every test on the kernel transport (py3), the filesystem tests on
# the libfuse transport with mfusepy/libfuse3 (libfuse) and fusepy/libfuse2 (fusepy), and nofuse.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
exec .venv/bin/tox "$@"
