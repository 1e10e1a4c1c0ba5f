#!/usr/bin/env bash
# Start, idempotently, the services Orderflow needs that are not already reachable:
# RabbitMQ (Debian's rabbitmq-server) and a MongoDB wire-protocol store (FerretDB on SQLite).
# Usage: scripts/services.sh [start|stop|status|stop-store|stop-broker|ferretdb-binary]
# (ferretdb-binary: build the store if need be and print its path, for tests that run one of their own)
set -euo pipefail

cd "$(dirname "$0")/.."
STATE_DIR="${ORDERFLOW_SERVICES_DIR:-$PWD/.services}"
# What outlives a checkout on this machine: the store's build, the broker users' passwords.
CACHE_DIR="${ORDERFLOW_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/orderflow}"
FERRETDB_VERSION="v1.24.2"
AMQP_HOST=127.0.0.1 AMQP_PORT=5672
MONGO_HOST=127.0.0.1 MONGO_PORT=27017
FERRETDB_DEBUG_ADDR="${ORDERFLOW_FERRETDB_DEBUG_ADDR:-127.0.0.1:8089}"

say() { printf 'services: %s\n' "$*"; }
fail() { printf 'services: error: %s\n' "$*" >&2; exit 1; }

reachable() { timeout 1 bash -c ">/dev/tcp/$1/$2" 2>/dev/null; }

wait_for() {  # name host port seconds
    local deadline=$((SECONDS + $4))
    until reachable "$2" "$3"; do
        ((SECONDS < deadline)) || return 1
        sleep 0.5
    done
}

as_root() { if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi; }

enable_rabbitmq_plugins() {
    # Queue depth and consumers per queue, for Prometheus, on :15692/metrics/per-object; and the
    # management API on :15672, through which the role users and their permissions are loaded.
    if command -v rabbitmq-plugins >/dev/null || [ -x /usr/sbin/rabbitmq-plugins ]; then
        PATH="$PATH:/usr/sbin" as_root rabbitmq-plugins enable --quiet rabbitmq_prometheus rabbitmq_management >/dev/null ||
            say "warning: could not enable the rabbitmq_prometheus and rabbitmq_management plugins"
    fi
}

# Orderflow's exchanges, queues, one broker user per role and their permissions
# (deploy/rabbitmq/definitions.json), each user with a password of its own: generated once, kept in
# .services/rabbitmq-users.env as the roles' URLs (ORDERFLOW_AMQP_URL_ORDER, ...).
USERS_ENV="$STATE_DIR/rabbitmq-users.env"

# The broker is this machine's, so its users' passwords are too: every checkout here reads and
# keeps the same ones (a copy in the cache), rather than each giving the users new ones.
SHARED_USERS_ENV="$CACHE_DIR/rabbitmq-users.env"

load_rabbitmq_definitions() {
    local orderflow="$PWD/.venv/bin/orderflow"
    [ -x "$orderflow" ] || fail "run \`make setup\` first: the broker's users are set up by orderflow itself"
    wait_for "RabbitMQ management API" $AMQP_HOST 15672 60 || fail "RabbitMQ's management API did not start on :15672"
    mkdir -p "$STATE_DIR" "$CACHE_DIR"
    if [ ! -f "$USERS_ENV" ] && [ -f "$SHARED_USERS_ENV" ]; then
        install -m 0600 "$SHARED_USERS_ENV" "$USERS_ENV"
    fi
    ORDERFLOW_AMQP_URL="amqp://guest:guest@$AMQP_HOST:$AMQP_PORT/%2F" "$orderflow" broker setup \
        --definitions "$PWD/deploy/rabbitmq/definitions.json" --env-file "$USERS_ENV" |
        sed 's/^/services: /'
    install -m 0600 "$USERS_ENV" "$SHARED_USERS_ENV"
}

# Orderflow's broker settings (max_message_size): installed where RabbitMQ reads extra configuration
# files at start, and applied at once to a broker already running here.
RABBITMQ_CONF="$PWD/deploy/rabbitmq/rabbitmq.conf"
RABBITMQ_CONF_D="${ORDERFLOW_RABBITMQ_CONF_D:-/etc/rabbitmq/conf.d}"

rabbitmq_setting() {  # the value of a key in deploy/rabbitmq/rabbitmq.conf
    sed -n "s/^[[:space:]]*$1[[:space:]]*=[[:space:]]*\([0-9]*\).*/\1/p" "$RABBITMQ_CONF"
}

install_rabbitmq_config() {
    as_root install -D -m 0644 "$RABBITMQ_CONF" "$RABBITMQ_CONF_D/20-orderflow.conf" ||
        say "warning: could not install $RABBITMQ_CONF into $RABBITMQ_CONF_D"
}

apply_rabbitmq_config() {  # to the running broker: new channels get it, no restart needed
    local size
    size="$(rabbitmq_setting max_message_size)"
    PATH="$PATH:/usr/sbin" as_root rabbitmqctl eval \
        "application:set_env(rabbit, max_message_size, $size)." >/dev/null ||
        say "warning: could not set max_message_size on the running RabbitMQ"
}

install_packages() {
    # Debian packages: the broker, and Prometheus with promtool for the monitoring tests.
    local missing=()
    command -v rabbitmq-server >/dev/null || [ -x /usr/sbin/rabbitmq-server ] || missing+=(rabbitmq-server)
    command -v promtool >/dev/null || missing+=(prometheus)
    if [ ${#missing[@]} -gt 0 ]; then
        say "installing ${missing[*]} with apt-get"
        as_root apt-get update -qq
        DEBIAN_FRONTEND=noninteractive as_root apt-get install -y -qq "${missing[@]}" >/dev/null
    fi
}

start_rabbitmq() {
    install_rabbitmq_config
    if reachable $AMQP_HOST $AMQP_PORT; then
        say "RabbitMQ already accepts connections on $AMQP_HOST:$AMQP_PORT"
        enable_rabbitmq_plugins
        apply_rabbitmq_config
        load_rabbitmq_definitions
        return
    fi
    export PATH="$PATH:/usr/sbin"
    say "starting RabbitMQ"
    as_root rabbitmq-server -detached
    wait_for RabbitMQ $AMQP_HOST $AMQP_PORT 120 || fail "RabbitMQ did not accept connections within 120 s (see /var/log/rabbitmq)"
    # The port opens before the broker is fully booted; wait until it answers.
    as_root rabbitmqctl await_startup --timeout 120 >/dev/null || fail "RabbitMQ did not finish booting"
    enable_rabbitmq_plugins
    load_rabbitmq_definitions
    say "RabbitMQ is up on $AMQP_HOST:$AMQP_PORT (metrics on :15692, management on :15672)"
}

# The store is built from the module source with our patch applied (scripts/ferretdb/): its name
# carries the patch's checksum, so a binary built before the patch changed is never used, and a
# running store started from an older binary by this checkout is restarted.
FERRETDB_PATCH="$PWD/scripts/ferretdb/sqlite-backend.patch"
FERRETDB_CACHE="$CACHE_DIR"

ferretdb_build() {
    echo "$FERRETDB_VERSION-orderflow.$(sha256sum "$FERRETDB_PATCH" | cut -c1-12)"
}

ferretdb_binary() {
    echo "$FERRETDB_CACHE/ferretdb-$(ferretdb_build)"
}

build_ferretdb() {
    # A plain `go install ...@version` builds a binary that panics at start-up: FerretDB embeds
    # build/version/version.txt, which its release tooling writes. Build from the module source
    # with that file in place (it names our build, and shows in `buildInfo.ferretdbVersion`).
    command -v go >/dev/null || fail "FerretDB must be built and Go is not installed"
    say "building FerretDB $(ferretdb_build) from the Go module proxy (a minute or two, once)"
    local module_dir work
    module_dir="$(go mod download -json "github.com/FerretDB/FerretDB@$FERRETDB_VERSION" |
        sed -n 's/^[[:space:]]*"Dir": "\(.*\)",$/\1/p')"
    [ -d "$module_dir" ] || fail "could not download the FerretDB module"
    work="$(mktemp -d)"
    cp -r "$module_dir/." "$work"
    chmod -R u+w "$work"
    (cd "$work" && patch -p1 --forward --quiet <"$FERRETDB_PATCH") || fail "could not apply $FERRETDB_PATCH"
    ferretdb_build >"$work/build/version/version.txt"
    mkdir -p "$FERRETDB_CACHE"
    (cd "$work" && go build -o "$(ferretdb_binary).tmp" ./cmd/ferretdb)
    mv "$(ferretdb_binary).tmp" "$(ferretdb_binary)"
    rm -rf "$work"
}

running_ferretdb() {  # the command line of the store this checkout started, if it runs
    local pid
    pid="$(cat "$STATE_DIR/ferretdb.pid" 2>/dev/null || true)"
    [ -n "$pid" ] && tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null
}

warn_if_unpatched() {  # a store started elsewhere: real MongoDB is fine, FerretDB must be our build
    local python="$PWD/.venv/bin/python" version
    [ -x "$python" ] || return 0
    version="$("$python" -c 'import sys, pymongo
info = pymongo.MongoClient(sys.argv[1], serverSelectionTimeoutMS=3000).admin.command("buildInfo")
print(info.get("ferretdbVersion", ""))' "mongodb://$MONGO_HOST:$MONGO_PORT/" 2>/dev/null || true)"
    if [ -n "$version" ] && [ "$version" != "$(ferretdb_build)" ]; then
        say "warning: that store is FerretDB $version, not $(ferretdb_build): lookups by _id scan"
        say "whole collections there (docs/performance.md); stop it to let this script start its own"
    fi
}

start_ferretdb() {
    local binary
    binary="$(ferretdb_binary)"
    [ -x "$binary" ] || build_ferretdb
    if reachable $MONGO_HOST $MONGO_PORT; then
        local running
        running="$(running_ferretdb || true)"
        if [ -n "$running" ] && [ "${running%% *}" != "$binary" ]; then
            say "the store running from this checkout is an older build; restarting it"
            stop_ferretdb
        else
            say "MongoDB-compatible store already accepts connections on $MONGO_HOST:$MONGO_PORT"
            warn_if_unpatched
            return
        fi
    fi
    mkdir -p "$STATE_DIR/ferretdb"
    say "starting FerretDB (SQLite handler, data in $STATE_DIR/ferretdb)"
    nohup "$binary" --handler=sqlite --sqlite-url="file:$STATE_DIR/ferretdb/" \
        --state-dir="$STATE_DIR/ferretdb" \
        --listen-addr="$MONGO_HOST:$MONGO_PORT" --debug-addr="$FERRETDB_DEBUG_ADDR" \
        --telemetry=disable --log-level=warn >"$STATE_DIR/ferretdb.log" 2>&1 &
    echo $! >"$STATE_DIR/ferretdb.pid"
    wait_for FerretDB $MONGO_HOST $MONGO_PORT 60 || fail "FerretDB did not start; see $STATE_DIR/ferretdb.log"
    say "FerretDB $(ferretdb_build) is up on $MONGO_HOST:$MONGO_PORT"
}

stop_ferretdb() {
    local pid
    # Only the store this checkout started: another one keeps its data elsewhere.
    pid="$(cat "$STATE_DIR/ferretdb.pid" 2>/dev/null || true)"
    if [ -n "$pid" ] && kill "$pid" 2>/dev/null; then
        while kill -0 "$pid" 2>/dev/null; do sleep 0.1; done
        say "stopped FerretDB"
    elif reachable $MONGO_HOST $MONGO_PORT; then
        say "the store on $MONGO_HOST:$MONGO_PORT was not started from this checkout; left running"
    fi
    rm -f "$STATE_DIR/ferretdb.pid"
}

stop_rabbitmq() {
    if reachable $AMQP_HOST $AMQP_PORT; then
        PATH="$PATH:/usr/sbin" as_root rabbitmqctl stop >/dev/null && say "stopped RabbitMQ"
    fi
}

status() {
    reachable $AMQP_HOST $AMQP_PORT && say "RabbitMQ: up" || say "RabbitMQ: down"
    reachable $MONGO_HOST $MONGO_PORT && say "store: up" || say "store: down"
}

case "${1:-start}" in
    start) install_packages; start_rabbitmq; start_ferretdb ;;
    stop) stop_ferretdb; stop_rabbitmq ;;
    stop-store) stop_ferretdb ;;
    stop-broker) stop_rabbitmq ;;
    status) status ;;
    ferretdb-binary) [ -x "$(ferretdb_binary)" ] || build_ferretdb >&2; ferretdb_binary ;;
    *) fail "usage: $0 [start|stop|status|stop-store|stop-broker|ferretdb-binary]" ;;
esac
