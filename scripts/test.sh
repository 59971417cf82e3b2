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
#    RETRO_TEST_POSTGRES_URL, unless that variable is already set;
# 5. runs `python -m pytest "$@"`; collecting no tests counts as a failure;
# 6. stops the server on exit, if this script started it.
#
# Every step runs even when an earlier check failed, so one run reports all
# problems; the exit status is non-zero if any step failed.
#
# Environment:
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

stop_postgres() {
    section "Stopping PostgreSQL"
    "$PG" stop || true
}

start_postgres() {
    local url
    if [[ -n ${RETRO_TEST_POSTGRES_URL:-} ]]; then
        section "Using PostgreSQL at RETRO_TEST_POSTGRES_URL=$RETRO_TEST_POSTGRES_URL"
        return 0
    fi
    section "Starting PostgreSQL"
    # A server that already ran is someone else's; leave it running.
    if ! "$PG" status >/dev/null; then
        trap stop_postgres EXIT
    fi
    url=$("$PG" start | tail -n 1) || die "could not start PostgreSQL (see above)"
    [[ $url == postgresql://* ]] || die "scripts/postgres.sh start printed '$url', not a URL"
    export RETRO_TEST_POSTGRES_URL=$url
    printf 'RETRO_TEST_POSTGRES_URL=%s\n' "$url"
}

run_pytest() {
    local rc=0
    section "python -m pytest${*:+ $*}"
    "$PY" -m pytest "$@" || rc=$?
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
