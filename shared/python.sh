# Sourced by every tool's shell scripts: PYTHON is the project's .venv/bin/python when it exists,
# so the documented commands work right after `make install`; a PYTHON set by the user wins.
_samkit_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
if [ -z "${PYTHON:-}" ]; then
    if [ -x "$_samkit_root/.venv/bin/python" ]; then
        PYTHON="$_samkit_root/.venv/bin/python"
    else
        PYTHON=python3
    fi
fi
export PYTHON
