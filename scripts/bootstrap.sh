#!/usr/bin/env bash
# Create .venv from Python 3.12 (if missing) and install stablejax with its pinned stack.
# Usage: scripts/bootstrap.sh [extras]   e.g. scripts/bootstrap.sh dev
set -euo pipefail
cd "$(dirname "$0")/.."
extras="${1:-dev}"
venv=".venv"

find_python() {
    local cand
    for cand in "${PYTHON:-}" python3.12 "$HOME/.pyenv/versions/"3.12*/bin/python /usr/local/bin/python3.12 /usr/bin/python3.12 python3; do
        [ -n "$cand" ] || continue
        command -v "$cand" >/dev/null 2>&1 || [ -x "$cand" ] || continue
        # A pyenv shim may exist while the version is not selected: actually run it.
        if "$cand" -c 'import sys; sys.exit(0 if sys.version_info[:2] == (3, 12) else 1)' >/dev/null 2>&1; then
            echo "$cand"; return 0
        fi
    done
    return 1
}

if [ ! -x "$venv/bin/python" ] || ! "$venv/bin/python" -c 'import sys; sys.exit(0 if sys.version_info[:2]==(3,12) else 1)' 2>/dev/null; then
    py=$(find_python) || {
        echo "error: stablejax needs Python 3.12, and none was found." >&2
        echo "  Install it (e.g. 'pyenv install 3.12', or your distribution's python3.12 package)," >&2
        echo "  or point PYTHON=/path/to/python3.12 at one, then run this command again." >&2
        exit 1
    }
    echo "creating $venv with $py ($("$py" --version))"
    rm -rf "$venv"
    "$py" -m venv "$venv"
fi

stamp="$venv/.installed-$(cat pyproject.toml | sha1sum | cut -c1-12)-$extras"
if [ ! -f "$stamp" ]; then
    start=$(date +%s)
    "$venv/bin/python" -m pip install -q --upgrade pip 2>&1 | grep -v '^WARNING: Location' || true
    "$venv/bin/python" -m pip install -q -e ".[$extras]" 2>&1 | grep -v '^WARNING: Location' || true
    "$venv/bin/python" -c 'import stablejax, jax; assert jax.__version__ != "0.10.2"' || { echo "error: install failed" >&2; exit 1; }
    rm -f "$venv"/.installed-*
    touch "$stamp"
    echo "installed stablejax[$extras] in $(( $(date +%s) - start )) s"
fi
