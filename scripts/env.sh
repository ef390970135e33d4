# Create (or reuse) the project's virtual environment in .venv and install nezha with the given extras.
# Sourced by quickstart.sh and test.sh; safe to run any number of times.
# Usage: source scripts/env.sh "quickstart"      (extras, comma-separated)
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${NEZHA_VENV:-$ROOT/.venv}"
EXTRAS="${1:-}"
PY="${PYTHON:-python3.11}"
command -v "$PY" >/dev/null 2>&1 || PY=python3
if [ ! -x "$VENV/bin/python" ]; then
  echo "[setup] creating $VENV"
  "$PY" -m venv "$VENV"
fi
# Pin the CPU wheel first (and keep it pinned): an unpinned torch would pull a multi-GB CUDA build.
STAMP="$VENV/.nezha-installed-$(echo "$EXTRAS" | tr ',' '-')-$(cat "$ROOT/pyproject.toml" "$ROOT/scripts/constraints.txt" | cksum | cut -d' ' -f1)"
if [ ! -f "$STAMP" ]; then
  echo "[setup] installing nezha${EXTRAS:+[$EXTRAS]} into $VENV (CPU PyTorch)"
  "$VENV/bin/python" -m pip install -q --disable-pip-version-check -c "$ROOT/scripts/constraints.txt" torch 2>&1 \
    | grep -v "^WARNING: Location" || true
  "$VENV/bin/python" -m pip install -q --disable-pip-version-check -c "$ROOT/scripts/constraints.txt" \
    -e "$ROOT${EXTRAS:+[$EXTRAS]}" 2>&1 | grep -v "^WARNING: Location" || true
  "$VENV/bin/python" -c "import nezha, torch" || { echo "[setup] install failed" >&2; exit 1; }
  touch "$STAMP"
fi
export PATH="$VENV/bin:$PATH"
