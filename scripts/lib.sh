# Shared by scripts/run and scripts/test: find Python >= 3.12 and keep .venv current.

find_python() {
    local candidate
    local candidates=(python3.13 python3.12 python3)
    local pyenv_root="${PYENV_ROOT:-$HOME/.pyenv}"
    if command -v pyenv >/dev/null 2>&1; then
        pyenv_root="$(pyenv root)"
    fi
    for candidate in "$pyenv_root"/versions/3.1[2-9]*/bin/python3; do
        [ -x "$candidate" ] && candidates+=("$candidate")
    done
    for candidate in "${candidates[@]}"; do
        if "$candidate" -c 'import sys; sys.exit(sys.version_info < (3, 12))' >/dev/null 2>&1; then
            command -v "$candidate" 2>/dev/null || echo "$candidate"
            return 0
        fi
    done
    echo "Kindler needs Python 3.12 or newer (Django 6.1 requires it)." >&2
    echo "Install Python 3.12 or newer (Debian 13: apt-get install python3 python3-venv; elsewhere: pyenv install 3.13)." >&2
    return 1
}

ensure_venv() {
    local requirements="$1"
    local digest
    digest="$(cat requirements*.txt | sha256sum | cut -c1-16)"
    local stamp=".venv/.requirements-$digest-$(basename "$requirements")"
    # A .venv left half-made (no pip) by an earlier failure is made again.
    if ! .venv/bin/python -c 'import sys, pip; sys.exit(sys.version_info < (3, 12))' 2>/dev/null; then
        local python
        python="$(find_python)" || exit 1
        echo "Creating .venv with $python"
        rm -rf .venv
        if ! "$python" -m venv .venv; then
            rm -rf .venv
            echo "$python cannot create a virtual environment." >&2
            echo "On Debian/Ubuntu: apt-get install python3-venv (or the python3.X-venv matching it)." >&2
            exit 1
        fi
    fi
    if [ ! -f "$stamp" ]; then
        echo "Installing $requirements into .venv"
        .venv/bin/python -m pip install --quiet --disable-pip-version-check -r "$requirements"
        find .venv -maxdepth 1 -name '.requirements-*' ! -name ".requirements-$digest-*" -delete
        touch "$stamp"
    fi
}
