#!/usr/bin/env bash
# A throwaway PostgreSQL server for the test suite, one per checkout.
#
# Usage: scripts/postgres.sh start|stop|url|status|destroy
#
#   start    initialise the cluster if needed, start it, create the database
#            `retro_test`, wait until it accepts connections; the last line
#            on stdout is the connection string. Safe to run repeatedly and
#            concurrently.
#   stop     stop the server (fast shutdown); the data stays.
#   url      print the connection string.
#   status   print whether the server runs; exit 0 if it does, 3 if not.
#   destroy  stop the server and delete its data.
#
# Environment:
#   RETRO_PG_PORT    TCP port on 127.0.0.1 (default 54329). When unset and the
#                    port is taken by something else, the next free port is used.
#   RETRO_PG_USER    unprivileged user that owns the server when run as root
#                    (default postgres; created if missing).
#   RETRO_PG_BINDIR  directory holding initdb, pg_ctl and postgres.
#   RETRO_PG_DURABLE 1 for a second, durable server with PostgreSQL's default
#                    fsync settings (data in .pgdata-durable/, default port
#                    54339), for benchmarks: the test server turns fsync off,
#                    which flatters every write.
#
# The data lives in .pgdata/ and the Unix socket in .pgrun/ at the repository
# root. When run as root and the repository is not reachable by the server's
# user (say, under /root or in a mktemp directory), or its path is too long for
# a Unix socket, both go to ${TMPDIR:-/tmp}/langchain-retro-pg-<uid>-<hash>/.
#
# PostgreSQL refuses to run as root, so as root every server-side command runs
# as RETRO_PG_USER; otherwise as the current user.
set -euo pipefail
shopt -s inherit_errexit

if [[ ${RETRO_PG_DURABLE:-0} == 1 ]]; then
    readonly DEFAULT_PORT=54339 SUFFIX=-durable
else
    readonly DEFAULT_PORT=54329 SUFFIX=
fi
readonly DB_NAME=retro_test
readonly DB_SUPERUSER=postgres
readonly PG_USER_DEFAULT=postgres
readonly PORT_SCAN=20
readonly START_TIMEOUT=60
# The settings file is rewritten by each start so edits here reach old clusters.
readonly SETTINGS_FILE=langchain_retro.conf

REPO_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd -P)
readonly REPO_ROOT

log() { printf 'postgres.sh: %s\n' "$*" >&2; }
die() {
    printf 'postgres.sh: error: %s\n' "$*" >&2
    exit 1
}

is_root() { [[ $(id -u) -eq 0 ]]; }

# --- binaries ---------------------------------------------------------------

has_server_binaries() {
    [[ -x $1/initdb && -x $1/pg_ctl && -x $1/postgres ]]
}

find_bindir() {
    local dir candidate
    # Debian keeps the server outside PATH; take the newest major version.
    while IFS= read -r dir; do
        if has_server_binaries "$dir"; then
            printf '%s\n' "$dir"
            return 0
        fi
    done < <(compgen -G '/usr/lib/postgresql/*/bin' | sort -rV)
    # Elsewhere (Homebrew, Fedora, a source build) pg_ctl is on PATH; resolve
    # symlinks so that its siblings are found.
    if candidate=$(command -v pg_ctl); then
        dir=$(dirname "$(readlink -f "$candidate")")
        if has_server_binaries "$dir"; then
            printf '%s\n' "$dir"
            return 0
        fi
    fi
    return 1
}

install_server() {
    if ! is_root || ! command -v apt-get >/dev/null; then
        die "PostgreSQL server binaries not found; install them (Debian/Ubuntu:" \
            "apt-get install postgresql) or set RETRO_PG_BINDIR"
    fi
    log "PostgreSQL server binaries not found; installing the Debian package"
    # The package also creates and starts its own cluster on port 5432; it is
    # left alone and does not clash with ours.
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq >&2 || die "apt-get update failed"
    apt-get install -y -qq postgresql >&2 || die "apt-get install postgresql failed"
}

# --- the unprivileged user --------------------------------------------------

pg_user() {
    if is_root; then
        printf '%s\n' "${RETRO_PG_USER:-$PG_USER_DEFAULT}"
    else
        id -un
    fi
}

ensure_pg_user() {
    local user
    user=$(pg_user)
    is_root || return 0
    id -u "$user" >/dev/null 2>&1 && return 0
    log "creating system user '$user' to own the server"
    if command -v useradd >/dev/null; then
        useradd --system --user-group --no-create-home \
            --home-dir /var/lib/postgresql --shell /usr/sbin/nologin "$user" ||
            id -u "$user" >/dev/null 2>&1 || die "useradd $user failed"
    elif command -v adduser >/dev/null; then
        adduser -S -D -H "$user" ||
            id -u "$user" >/dev/null 2>&1 || die "adduser $user failed"
    else
        die "no user '$user' and neither useradd nor adduser to create it;" \
            "set RETRO_PG_USER to an existing unprivileged user"
    fi
}

# Runs a command as the server's user, from / so that an unreadable working
# directory does not trouble initdb or pg_ctl.
as_pg() {
    local user
    user=$(pg_user)
    if ! is_root; then
        "$@"
    elif command -v runuser >/dev/null; then
        (cd / && runuser -u "$user" -- "$@")
    elif command -v setpriv >/dev/null; then
        (cd / && setpriv --reuid="$user" --regid="$(id -g "$user")" --init-groups -- "$@")
    else
        (cd / && su -s /bin/bash "$user" -c "$(printf '%q ' "$@")")
    fi
}

# Owns a directory we created as root to the server's user.
give_to_pg() {
    if is_root; then
        chown "$(pg_user):$(id -g "$(pg_user)")" "$@"
    fi
}

# --- where the data lives ---------------------------------------------------

# Creates a directory whose parent exists; racing another start is fine.
make_dir() {
    local mode=$1 dir=$2
    mkdir -m "$mode" -- "$dir" 2>/dev/null || [[ -d $dir ]] ||
        die "cannot create directory $dir"
}

# Sets DATA_DIR and RUN_DIR.
locate_dirs() {
    local run_in_repo=$REPO_ROOT/.pgrun$SUFFIX base tmp hash
    # 107 bytes is the Unix socket path limit; leave room for the file name.
    if [[ ${#run_in_repo} -le 80 ]] && { ! is_root || as_pg test -x "$REPO_ROOT" 2>/dev/null; }; then
        DATA_DIR=$REPO_ROOT/.pgdata$SUFFIX
        RUN_DIR=$run_in_repo
        return 0
    fi
    hash=$(printf '%s' "$REPO_ROOT" | cksum | cut -d' ' -f1)
    for tmp in "${TMPDIR:-/tmp}" /tmp; do
        tmp=${tmp%/}
        base=$tmp/langchain-retro-pg-$(id -u)-$hash$SUFFIX
        if [[ -d $tmp ]] && { ! is_root || as_pg test -x "$tmp" 2>/dev/null; } &&
            [[ ${#base} -le 80 ]]; then
            DATA_DIR=$base/data
            RUN_DIR=$base/run
            return 0
        fi
    done
    die "no directory reachable by user '$(pg_user)' for the data; tried" \
        "$REPO_ROOT, ${TMPDIR:-/tmp} and /tmp"
}

# Creates the directory holding DATA_DIR and RUN_DIR when it is outside the
# repository, refusing one planted by someone else.
make_base_dir() {
    local base
    base=$(dirname "$DATA_DIR")
    [[ $base == "$REPO_ROOT" ]] && return 0
    make_dir 0755 "$base"
    [[ -d $base && ! -L $base && -O $base ]] ||
        die "$base exists but is not a directory owned by $(id -un); remove it"
}

# --- the server -------------------------------------------------------------

# fd 9 holds the lock (see `lock`); a server inheriting it would hold it forever.
pg() { as_pg "$BINDIR/$1" "${@:2}" 9>&-; }

is_initialised() { [[ -f $DATA_DIR/PG_VERSION ]]; }

is_running() { is_initialised && pg pg_ctl status -D "$DATA_DIR" >/dev/null 2>&1; }

# The port of the running server, from line 4 of postmaster.pid.
running_port() { sed -n 4p "$DATA_DIR/postmaster.pid"; }

# The port the next start tries first.
preferred_port() { printf '%s\n' "${RETRO_PG_PORT:-$DEFAULT_PORT}"; }

url_for() { printf 'postgresql://%s@127.0.0.1:%s/%s\n' "$DB_SUPERUSER" "$1" "$DB_NAME"; }

port_in_use() { (: <>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

sql_quote() { printf "'%s'" "${1//\'/\'\'}"; }

write_settings() {
    local port=$1 file=$DATA_DIR/$SETTINGS_FILE
    cat >"$file" <<EOF
# Written by scripts/postgres.sh on every start; edit the script, not this file.
port = $port
listen_addresses = '127.0.0.1'
unix_socket_directories = $(sql_quote "$RUN_DIR")
max_connections = 200
EOF
    if [[ -z $SUFFIX ]]; then
        cat >>"$file" <<EOF
# Test data is disposable, so durability is traded for speed. Never copy these
# three lines to a server whose data matters.
fsync = off
synchronous_commit = off
full_page_writes = off
EOF
    fi
    chmod 0600 "$file"
    give_to_pg "$file"
}

init_cluster() {
    local out
    if [[ -e $DATA_DIR ]] && [[ -n $(ls -A "$DATA_DIR") ]]; then
        die "$DATA_DIR is not empty but holds no cluster; remove it and retry"
    fi
    log "initialising a cluster in $DATA_DIR"
    make_dir 0700 "$DATA_DIR"
    give_to_pg "$DATA_DIR"
    if ! out=$(pg initdb -D "$DATA_DIR" --username="$DB_SUPERUSER" --auth=trust \
        --encoding=UTF8 --no-locale --no-instructions 2>&1); then
        printf '%s\n' "$out" >&2
        die "initdb failed"
    fi
    printf "\ninclude_if_exists = '%s'\n" "$SETTINGS_FILE" >>"$DATA_DIR/postgresql.conf"
}

# Starts the server on the first port that works; prints that port.
start_server() {
    local port first explicit=${RETRO_PG_PORT:+1} tries logfile=$RUN_DIR/postgres.log
    local log_size new_log
    first=$(preferred_port)
    [[ $first =~ ^[0-9]+$ ]] || die "invalid port '$first' (RETRO_PG_PORT)"
    first=$((10#$first))
    tries=$([[ -n $explicit ]] && echo 1 || echo "$PORT_SCAN")
    for ((port = first; port < first + tries; port++)); do
        if port_in_use "$port"; then
            [[ -n $explicit ]] &&
                die "port $port on 127.0.0.1 is taken; choose another with RETRO_PG_PORT"
            log "port $port is taken; trying $((port + 1))"
            continue
        fi
        write_settings "$port"
        log_size=$(wc -c 2>/dev/null <"$logfile" || echo 0)
        if pg pg_ctl start -D "$DATA_DIR" -l "$logfile" -w -t "$START_TIMEOUT" >&2; then
            printf '%s\n' "$port"
            return 0
        fi
        new_log=$(tail -c "+$((log_size + 1))" "$logfile" 2>/dev/null || true)
        if [[ -z $explicit && $new_log == *"Address already in use"* ]]; then
            log "port $port was taken meanwhile; trying $((port + 1))"
            continue
        fi
        printf '%s\n' "$new_log" >&2
        die "the server did not start; its log is $logfile"
    done
    die "no free port in $first-$((first + tries - 1)); set RETRO_PG_PORT"
}

wait_ready() {
    local port=$1 i
    for ((i = 0; i < START_TIMEOUT * 5; i++)); do
        if "$BINDIR/pg_isready" -q -h 127.0.0.1 -p "$port" -U "$DB_SUPERUSER" \
            -d postgres; then
            return 0
        fi
        sleep 0.2
    done
    die "the server on port $port did not accept connections within ${START_TIMEOUT}s"
}

ensure_database() {
    local port=$1 exists
    local -a psql=("$BINDIR/psql" -X -q -v ON_ERROR_STOP=1 -h 127.0.0.1 -p "$port"
        -U "$DB_SUPERUSER" -d postgres)
    exists=$("${psql[@]}" -tA -c "SELECT 1 FROM pg_database WHERE datname = '$DB_NAME'") ||
        die "could not query the server on port $port"
    if [[ -z $exists ]]; then
        "${psql[@]}" -c "CREATE DATABASE $DB_NAME" || die "could not create $DB_NAME"
        log "created database $DB_NAME"
    fi
}

# Holds an exclusive lock on fd 9 until the script exits, so that concurrent
# starts and stops of the same cluster take turns.
lock() {
    make_dir 0755 "$RUN_DIR"
    give_to_pg "$RUN_DIR"
    command -v flock >/dev/null || return 0
    exec 9>>"$RUN_DIR/lock"
    give_to_pg "$RUN_DIR/lock"
    flock 9
}

check_owner() {
    local owner
    [[ -e $DATA_DIR ]] || return 0
    owner=$(stat -c %U "$DATA_DIR" 2>/dev/null || stat -f %Su "$DATA_DIR")
    [[ $owner == "$(pg_user)" ]] ||
        die "$DATA_DIR belongs to $owner, not $(pg_user); run as $owner or root," \
            "or remove it"
}

# --- commands ---------------------------------------------------------------

cmd_start() {
    local port
    ensure_pg_user
    locate_dirs
    make_base_dir
    lock
    check_owner
    if is_running; then
        port=$(running_port)
        if [[ -n ${RETRO_PG_PORT:-} && $RETRO_PG_PORT != "$port" ]]; then
            log "already running on port $port, not RETRO_PG_PORT=$RETRO_PG_PORT;" \
                "run '$0 stop' first to move it"
        fi
    else
        is_initialised || init_cluster
        log "starting the server from $DATA_DIR"
        port=$(start_server)
    fi
    wait_ready "$port"
    ensure_database "$port"
    url_for "$port"
}

cmd_stop() {
    locate_dirs
    if ! is_initialised; then
        log "no cluster in $DATA_DIR; nothing to stop"
        return 0
    fi
    lock
    check_owner
    if is_running; then
        pg pg_ctl stop -D "$DATA_DIR" -m fast -w >&2
    else
        log "not running"
    fi
}

cmd_url() {
    locate_dirs
    if is_running; then
        url_for "$(running_port)"
    else
        url_for "$(preferred_port)"
    fi
}

cmd_status() {
    locate_dirs
    if is_running; then
        printf 'running: %s (data in %s)\n' "$(url_for "$(running_port)")" "$DATA_DIR"
    elif is_initialised; then
        printf 'stopped (data in %s)\n' "$DATA_DIR"
        return 3
    else
        printf 'not initialised (data would go to %s)\n' "$DATA_DIR"
        return 3
    fi
}

cmd_destroy() {
    cmd_stop
    log "removing $DATA_DIR and $RUN_DIR"
    rm -rf -- "$DATA_DIR" "$RUN_DIR"
    local base
    base=$(dirname "$DATA_DIR")
    if [[ $base != "$REPO_ROOT" ]]; then
        rmdir -- "$base" 2>/dev/null || true
    fi
}

main() {
    local cmd=${1:-}
    [[ $# -le 1 ]] || die "too many arguments; usage: $0 start|stop|url|status|destroy"
    case $cmd in
    start | stop | url | status | destroy) ;;
    *) die "usage: $0 start|stop|url|status|destroy" ;;
    esac
    if [[ -n ${RETRO_PG_BINDIR:-} ]] && ! has_server_binaries "$RETRO_PG_BINDIR"; then
        die "RETRO_PG_BINDIR=$RETRO_PG_BINDIR lacks initdb, pg_ctl or postgres"
    fi
    BINDIR=${RETRO_PG_BINDIR:-}
    [[ -n $BINDIR ]] || BINDIR=$(find_bindir) || {
        [[ $cmd == start ]] || die "PostgreSQL server binaries not found"
        install_server
        BINDIR=$(find_bindir) || die "PostgreSQL server binaries still not found"
    }
    [[ -x $BINDIR/psql && -x $BINDIR/pg_isready ]] ||
        die "psql or pg_isready missing from $BINDIR"
    "cmd_$cmd"
}

if [[ ${BASH_SOURCE[0]} == "$0" ]]; then
    main "$@"
fi
