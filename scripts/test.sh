#!/usr/bin/env bash
# Runs the test suite against a throwaway PostgreSQL server, in one command.
#
# Usage: scripts/test.sh [pytest arguments...]
#
# 1. creates the virtualenv, or reuses it;
# 2. installs the package with its test and bench extras (again only when
#    pyproject.toml has changed since the last install);
# 3. with RETRO_CHECKS=1, runs ruff check, ruff format --check and mypy;
# 4. starts the server of scripts/postgres.sh and exports its URL as
#    RETRO_TEST_POSTGRES_URL, unless that variable is already set; when no
#    server can be started (no PostgreSQL installed and not root, say), the
#    PostgreSQL tests are skipped and the summary says so in one line, with
#    how to include them; under CI (CI set) that is a failure instead;
# 5. runs `python -m pytest "$@"`; collecting no tests counts as a failure;
# 6. stops the server on exit, if this script started it.
#
# Every step runs even when an earlier check failed, so one run reports all
# problems; the exit status is non-zero if any step failed.
#
# Environment:
#   CI                       set (to anything) on CI: skipped PostgreSQL tests fail
#   RETRO_VENV               virtualenv directory (default .venv)
#   RETRO_CHECKS             1 to run the linters and the type checker first
#   PYTHON                   interpreter that creates the virtualenv (default python3)
#   RETRO_TEST_POSTGRES_URL  use this server instead of starting one
#   RETRO_PG_PORT, ...       see scripts/postgres.sh
set -euo pipefail
shopt -s inherit_errexit

REPO_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd -P)
readonly REPO_ROOT
cd "$REPO_ROOT"

readonly VENV=${RETRO_VENV:-.venv}
readonly PY=$VENV/bin/python
readonly EXTRAS=test,bench
readonly PG=scripts/postgres.sh

FAILED=()

section() { printf '\n==> %s\n' "$*"; }
die() {
    printf 'test.sh: error: %s\n' "$*" >&2
    exit 1
}

ensure_venv() {
    local python=${PYTHON:-python3}
    if [[ -x $PY ]]; then
        section "Reusing virtualenv $VENV ($("$PY" --version))"
        return 0
    fi
    section "Creating virtualenv $VENV"
    command -v "$python" >/dev/null || die "$python not found; set PYTHON"
    "$python" -c 'import sys; sys.exit(sys.version_info < (3, 11))' ||
        die "$python is $("$python" --version 2>&1); Python 3.11 or newer is needed (set PYTHON)"
    "$python" -m venv "$VENV" ||
        die "could not create $VENV (on Debian: apt-get install python3-venv)"
    "$PY" -m pip install --quiet --upgrade pip
    "$PY" --version
}

install_package() {
    local stamp=$VENV/.langchain-retro-installed want
    want=$(cksum <pyproject.toml)
    if [[ -f $stamp && $(<"$stamp") == "$want" ]]; then
        section "langchain-retro[$EXTRAS] already installed (pyproject.toml unchanged)"
        return 0
    fi
    section "Installing langchain-retro[$EXTRAS] into $VENV"
    rm -f "$stamp"
    "$PY" -m pip install --quiet -e ".[$EXTRAS]" || die "pip install failed"
    printf '%s\n' "$want" >"$stamp"
}

# Runs a step, recording its failure instead of stopping.
step() {
    local name=$1 rc=0
    shift
    section "$name"
    "$@" || rc=$?
    if ((rc != 0)); then
        FAILED+=("$name (exit $rc)")
    fi
}

run_checks() {
    step "ruff check" "$VENV/bin/ruff" check .
    step "ruff format --check" "$VENV/bin/ruff" format --check .
    step "mypy" "$PY" -m mypy
}

PG_SKIPPED=""  # why the PostgreSQL tests were skipped, if they were

stop_postgres() {
    if [[ -n $PG_SKIPPED ]]; then
        # It never started; postgres.sh would only repeat why.
        "$PG" stop >/dev/null 2>&1 || true
        return 0
    fi
    section "Stopping PostgreSQL"
    "$PG" stop || true
}

start_postgres() {
    local out rc=0 url
    if [[ -n ${RETRO_TEST_POSTGRES_URL:-} ]]; then
        section "Using PostgreSQL at RETRO_TEST_POSTGRES_URL=$RETRO_TEST_POSTGRES_URL"
        return 0
    fi
    section "Starting PostgreSQL"
    # A server that already ran is someone else's; leave it running.
    if ! "$PG" status >/dev/null 2>&1; then
        trap stop_postgres EXIT
    fi
    out=$("$PG" start) || rc=$?
    url=$(tail -n 1 <<<"$out")
    if ((rc == 0)) && [[ $url == postgresql://* ]]; then
        export RETRO_TEST_POSTGRES_URL=$url
        printf 'RETRO_TEST_POSTGRES_URL=%s\n' "$url"
        return 0
    fi
    if ((rc == 0)); then
        printf 'scripts/postgres.sh start printed %q, not a URL\n' "$url" >&2
    fi
    if [[ -n ${CI:-} ]]; then
        # CI must test both stores: run the rest, but fail.
        FAILED+=("PostgreSQL did not start (see above); CI does not skip its tests")
        return 0
    fi
    PG_SKIPPED="scripts/postgres.sh could not start a server (see above)"
    printf 'test.sh: no PostgreSQL; running every other test.\n'
}

skipped_line() {
    printf 'PostgreSQL tests SKIPPED: %s. To include them, install PostgreSQL ' "$PG_SKIPPED"
    printf '(Debian/Ubuntu: sudo apt-get install postgresql; as root this script does it) '
    printf 'and re-run, or point RETRO_TEST_POSTGRES_URL=postgresql://USER@HOST:PORT/DB '
    printf 'at a server.\n'
}

run_pytest() {
    local rc=0 quiet=()
    if [[ -n $PG_SKIPPED ]]; then
        # pytest's -ra would list every skipped PostgreSQL case, a line per test
        # site; the summary says it once. Later -r options still win.
        quiet=(-r fEX)
    fi
    section "python -m pytest${quiet[*]:+ ${quiet[*]}}${*:+ $*}"
    "$PY" -m pytest "${quiet[@]}" "$@" || rc=$?
    case $rc in
    0) ;;
    5)
        printf '\ntest.sh: pytest collected no tests. That is a failure here: a run\n' >&2
        printf 'that tests nothing must not pass. Check testpaths and any -k/-m filter.\n' >&2
        FAILED+=("pytest: no tests collected (exit 5)")
        ;;
    *) FAILED+=("pytest (exit $rc)") ;;
    esac
}

summary() {
    section "Summary"
    if [[ -n $PG_SKIPPED ]]; then
        skipped_line
    fi
    if ((${#FAILED[@]} == 0)); then
        echo "All steps passed."
        return 0
    fi
    printf 'FAILED: %s\n' "${FAILED[@]}"
    return 1
}

main() {
    # Turn signals into a normal exit so that the EXIT trap stops the server.
    trap 'exit 130' INT
    trap 'exit 143' TERM
    ensure_venv
    install_package
    if [[ ${RETRO_CHECKS:-0} == 1 ]]; then
        run_checks
    fi
    start_postgres
    run_pytest "$@"
    summary
}

main "$@"
