#!/usr/bin/env bash
# Set up .venv and run the NEZHA quickstart (all arguments go to `nezha quickstart`, e.g. --fast).
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/env.sh" "quickstart"
cd "$ROOT"
if python -c "import nezha.commands.quickstart" 2>/dev/null; then
  exec nezha quickstart "$@"
fi
exec nezha demo "$@"
