#!/usr/bin/env bash
# The whole test suite: mfusepy on libfuse3 (py3) and fusepy on libfuse2 (fusepy), via tox.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
exec .venv/bin/tox "$@"
