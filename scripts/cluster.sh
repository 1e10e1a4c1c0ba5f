#!/usr/bin/env bash
# A RabbitMQ cluster of three nodes on this machine (Debian's rabbitmq-server), for running Orderflow
# on several nodes and for tests/faults/test_cluster.py. Each node has a name, AMQP, distribution
# and management ports and data and log directories of its own; they share the Erlang cookie of the
# `rabbitmq` user (which rabbitmqctl uses too), take Orderflow's broker settings
# (deploy/rabbitmq/rabbitmq.conf) and the management plugin only, and find each other through
# classic peer discovery. Orderflow's definitions and role users are then loaded into node 1, with
# each role's URL naming the three nodes, in $ORDERFLOW_CLUSTER_DIR/rabbitmq-users.env.
#
# Usage: scripts/cluster.sh start | stop [--clean] | status
#   start          start the nodes that are not running, in parallel (none running: a no-op), and
#                  wait until they form one cluster
#   stop           stop every node (the data stays, and `start` brings the same cluster back);
#                  --clean also removes the cluster's directory
#   status         each node, and the URLs to give Orderflow
# Environment: ORDERFLOW_CLUSTER_DIR (.services/cluster), ORDERFLOW_CLUSTER_NAME (orderflow-cluster:
# nodes orderflow-cluster-1@<host> ...), and the ports of node 1, each next node taking the next one:
# ORDERFLOW_CLUSTER_AMQP_PORT (5681), ORDERFLOW_CLUSTER_DIST_PORT (25681),
# ORDERFLOW_CLUSTER_MANAGEMENT_PORT (15681).
set -euo pipefail

cd "$(dirname "$0")/.."
ROOT="$PWD"
DIR="${ORDERFLOW_CLUSTER_DIR:-$ROOT/.services/cluster}"
NAME="${ORDERFLOW_CLUSTER_NAME:-orderflow-cluster}"
AMQP_PORT="${ORDERFLOW_CLUSTER_AMQP_PORT:-5681}"
DIST_PORT="${ORDERFLOW_CLUSTER_DIST_PORT:-25681}"
MANAGEMENT_PORT="${ORDERFLOW_CLUSTER_MANAGEMENT_PORT:-15681}"
NODES=(1 2 3)
HOST="$(hostname -s)"
LOCALHOST=127.0.0.1
export PATH="$PATH:/usr/sbin"

say() { printf 'cluster: %s\n' "$*"; }
fail() { printf 'cluster: error: %s\n' "$*" >&2; exit 1; }

reachable() { timeout 1 bash -c ">/dev/tcp/$LOCALHOST/$1" 2>/dev/null; }

# Debian's rabbitmq-server and rabbitmqctl run as root switch to the `rabbitmq` user (keeping the
# environment), whose home holds the Erlang cookie every node and rabbitmqctl share.
as_root() { if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi; }

node_name() { echo "$NAME-$1@$HOST"; }
node_dir() { echo "$DIR/$1"; }
amqp_port() { echo $((AMQP_PORT + $1 - 1)); }
management_port() { echo $((MANAGEMENT_PORT + $1 - 1)); }

amqp_urls() {  # the administrator's URLs of every node, as ORDERFLOW_AMQP_URL takes them
    local i urls=()
    for i in "${NODES[@]}"; do urls+=("amqp://guest:guest@$LOCALHOST:$(amqp_port "$i")/%2F"); done
    (IFS=,; echo "${urls[*]}")
}

pid_of() {  # the node's Erlang VM, if it runs
    local pid
    pid="$(cat "$(node_dir "$1")/rabbitmq.pid" 2>/dev/null || true)"
    [ -n "$pid" ] && ps -p "$pid" >/dev/null && echo "$pid"
}

running() { pid_of "$1" >/dev/null || reachable "$(amqp_port "$1")"; }

configure() {  # node number: its configuration, data and log directories
    local dir i
    dir="$(node_dir "$1")"
    mkdir -p "$dir/mnesia" "$dir/log" "$dir/conf.d"
    {
        cat "$ROOT/deploy/rabbitmq/rabbitmq.conf"
        echo
        echo "# Written by scripts/cluster.sh for node $(node_name "$1")."
        echo "management.tcp.ip = $LOCALHOST"
        echo "management.tcp.port = $(management_port "$1")"
        echo "cluster_formation.peer_discovery_backend = classic_config"
        for i in "${NODES[@]}"; do
            echo "cluster_formation.classic_config.nodes.$i = $(node_name "$i")"
        done
    } >"$dir/rabbitmq.conf"
    echo "[rabbitmq_management]." >"$dir/enabled_plugins"
    if [ "$(id -un)" = rabbitmq ]; then
        test -w "$dir/mnesia"
    else
        as_root chown -R rabbitmq:rabbitmq "$dir" && as_root su rabbitmq -s /bin/sh -c "test -w '$dir/mnesia'"
    fi || fail "the rabbitmq user cannot write $dir; set ORDERFLOW_CLUSTER_DIR to a directory it can reach"
}

launch() {  # node number: start it in the background, detached from this shell
    local dir
    dir="$(node_dir "$1")"
    as_root env \
        RABBITMQ_NODENAME="$(node_name "$1")" \
        RABBITMQ_NODE_IP_ADDRESS="$LOCALHOST" \
        RABBITMQ_NODE_PORT="$(amqp_port "$1")" \
        RABBITMQ_DIST_PORT=$((DIST_PORT + $1 - 1)) \
        RABBITMQ_MNESIA_BASE="$dir/mnesia" \
        RABBITMQ_LOG_BASE="$dir/log" \
        RABBITMQ_PID_FILE="$dir/rabbitmq.pid" \
        RABBITMQ_CONFIG_FILE="$dir/rabbitmq.conf" \
        RABBITMQ_CONFIG_FILES="$dir/conf.d" \
        RABBITMQ_ADVANCED_CONFIG_FILE="$dir/advanced.config" \
        RABBITMQ_ENABLED_PLUGINS_FILE="$dir/enabled_plugins" \
        setsid nohup rabbitmq-server >>"$dir/server.log" 2>&1 </dev/null &
    LAUNCHERS[$1]=$!
}

declare -A LAUNCHERS=() RELAUNCHES=()

boot() {  # node numbers: wait until each accepts connections
    local pending=("$@") left i deadline=$((SECONDS + 180))
    while [ ${#pending[@]} -gt 0 ]; do
        left=()
        for i in "${pending[@]}"; do
            reachable "$(amqp_port "$i")" && continue
            if ! ps -p "${LAUNCHERS[$i]}" >/dev/null; then
                # RabbitMQ 3.10 nodes booting together may each find the other's feature flags not
                # loaded yet, and one exits; started again, it finds the others up.
                RELAUNCHES[$i]=$((${RELAUNCHES[$i]:-0} + 1))
                [ "${RELAUNCHES[$i]}" -le 3 ] || fail "node $(node_name "$i") keeps exiting; see $(node_dir "$i")/log"
                say "node $(node_name "$i") exited while booting; starting it again"
                launch "$i"
            fi
            left+=("$i")
        done
        pending=("${left[@]}")
        ((SECONDS < deadline)) || fail "node(s) ${pending[*]} did not boot within 180 s; see $DIR/*/log"
        sleep 0.2
    done
}

clustered() {  # wait until node 1 counts every node in its cluster, and its management API answers
    as_root rabbitmqctl -q -n "$(node_name 1)" await_online_nodes "${#NODES[@]}" --timeout 120 >/dev/null ||
        fail "the nodes did not form one cluster within 120 s; logs in $DIR/*/log"
    local deadline=$((SECONDS + 60))
    until reachable "$(management_port 1)"; do
        ((SECONDS < deadline)) || fail "node 1's management API did not start; see $(node_dir 1)/log"
        sleep 0.2
    done
}

setup_definitions() {
    local orderflow="$ROOT/.venv/bin/orderflow"
    [ -x "$orderflow" ] || fail "run \`make setup\` first: the broker's users are set up by orderflow itself"
    # A clean environment: the caller's ORDERFLOW_* variables name another broker.
    env -i PATH="$PATH" HOME="$HOME" ORDERFLOW_AMQP_URL="$(amqp_urls)" ORDERFLOW_QUEUE_TYPE=quorum \
        "$orderflow" broker setup --management-url "http://guest:guest@$LOCALHOST:$(management_port 1)" \
        --env-file "$DIR/rabbitmq-users.env" | sed 's/^/cluster: /'
}

start() {
    command -v rabbitmq-server >/dev/null || fail "no rabbitmq-server (Debian's package): run \`make services\` first"
    local started=() i begun
    begun="${EPOCHREALTIME/./}"
    mkdir -p "$DIR"
    for i in "${NODES[@]}"; do
        if running "$i"; then continue; fi
        configure "$i"
        launch "$i"
        started+=("$i")
    done
    if [ ${#started[@]} -eq 0 ]; then
        say "all ${#NODES[@]} nodes already run"
        return
    fi
    say "starting node(s) ${started[*]} of $NAME"
    boot "${started[@]}"
    clustered
    setup_definitions
    local tenths=$(((${EPOCHREALTIME/./} - begun) / 100000))
    say "${#NODES[@]} nodes up and clustered in $((tenths / 10)).$((tenths % 10)) s"
    status
}

stop() {
    local i pid pids=()
    for i in "${NODES[@]}"; do
        # SIGTERM is a graceful stop, like `rabbitmqctl stop`, without the CLI's start-up.
        if pid="$(pid_of "$i")"; then
            as_root kill -TERM "$pid"
            pids+=("$pid")
        elif reachable "$(amqp_port "$i")"; then
            as_root rabbitmqctl -n "$(node_name "$i")" stop >/dev/null
        fi
    done
    for pid in "${pids[@]}"; do
        while ps -p "$pid" >/dev/null; do sleep 0.1; done
    done
    [ ${#pids[@]} -eq 0 ] || say "stopped ${#pids[@]} node(s)"
    if [ "${1:-}" = "--clean" ]; then
        rm -rf "$DIR"
        say "removed $DIR"
    fi
}

status() {
    local i
    for i in "${NODES[@]}"; do
        if running "$i"; then
            say "$(node_name "$i"): up, amqp://$LOCALHOST:$(amqp_port "$i"), management http://$LOCALHOST:$(management_port "$i")"
        else
            say "$(node_name "$i"): down"
        fi
    done
    say "ORDERFLOW_AMQP_URL=$(amqp_urls)"
    [ ! -f "$DIR/rabbitmq-users.env" ] || say "each role's URLs: $DIR/rabbitmq-users.env"
}

case "${1:-}" in
    start) start ;;
    stop) stop "${2:-}" ;;
    status) status ;;
    *) fail "usage: $0 start | stop [--clean] | status" ;;
esac
