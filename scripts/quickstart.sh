#!/usr/bin/env bash
# Set up .venv and run the NEZHA quickstart (arguments go to `nezha quickstart`, e.g. --fast or --output_dir DIR).
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/env.sh" "quickstart"
cd "$ROOT"
exec nezha quickstart "$@"
