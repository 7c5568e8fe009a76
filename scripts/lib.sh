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

# Compile Kindler's own modules to bytecode (__pycache__, ignored by git), also
# where PYTHONDONTWRITEBYTECODE is set: Python still reads bytecode it finds, so
# every process Kindler or its tests start skips compiling about a hundred
# modules (a third of a command's start-up). Only changed files are compiled.
# Bytecode only saves time: a checkout Kindler may not write to still starts.
compile_sources() {
    .venv/bin/python -m compileall -q -j 0 manage.py kindler clusters "$@" >/dev/null 2>&1 || true
}

# Run a command once per test mode (KINDLER_TEST_MODES, default "postgres sqlite")
# with KINDLER_TEST_MODE set: every mode, even after one failed, so a failure
# in one never hides the other's. Prints each mode's last line (pytest's
# summary) at the end and returns the first failing status. The first argument
# is how many arguments the caller was given: asked for PostgreSQL-only tests
# alone (scripts/test tests/db/sync), the SQLite run has nothing to collect
# (status 5), which is no failure; with no arguments it is one.
run_test_modes() {
    local given="$1" mode status log last first=0
    shift
    local summaries=()
    log="$(mktemp)"
    for mode in ${KINDLER_TEST_MODES:-postgres sqlite}; do
        echo "== Tests with KINDLER_TEST_MODE=$mode"
        status=0
        # pipefail: the status is the command's, not tee's.
        (set -o pipefail; KINDLER_TEST_MODE="$mode" "$@" 2>&1 | tee "$log") || status=$?
        if [ "$status" = 5 ] && [ "$mode" = sqlite ] && [ "$given" -gt 0 ]; then
            summaries+=("$mode: no SQLite-only tests among the ones asked for")
            continue
        fi
        last="$(grep -v '^[[:space:]]*$' "$log" | tail -n 1 | sed -e 's/^[= ]*//' -e 's/[= ]*$//' || true)"
        summaries+=("$mode: $last (exit $status)")
        if [ "$status" != 0 ] && [ "$first" = 0 ]; then first="$status"; fi
    done
    rm -f "$log"
    echo "== Summary"
    printf '%s\n' "${summaries[@]}"
    return "$first"
}
