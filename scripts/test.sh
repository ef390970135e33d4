#!/usr/bin/env bash
# Set up .venv with the test dependencies, then lint and run the test suite.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/env.sh" "test"
cd "$ROOT"
ruff check .
python -m pytest "$@"
