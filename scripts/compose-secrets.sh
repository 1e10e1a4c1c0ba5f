#!/usr/bin/env bash
# The secrets docker-compose.yml mounts, with random passwords: one file per connection URL, named as
# the variable it sets (ORDERFLOW_AMQP_URL_ORDER, ...; the workers read /run/secrets through
# ORDERFLOW_SECRETS_DIR), RabbitMQ's Erlang cookie and administrator password, MongoDB's keyfile and
# root password, and Grafana's administrator password.
# Usage: scripts/compose-secrets.sh [DIR]          (DIR: deploy/compose/secrets, where compose looks)
#
# A file that exists is kept: RabbitMQ and MongoDB take their administrators' passwords, and the
# Erlang cookie and keyfile, into their volumes when first started. To change them all, remove the
# volumes too (`docker compose down --volumes`), then the files, and run this again.
set -euo pipefail
cd "$(dirname "$0")/.."

dir="${1:-deploy/compose/secrets}"
umask 077
mkdir -p "$dir"
# The files themselves are readable by all (the containers read them as their own, unrelated users:
# Compose bind-mounts a file secret as it is), so this directory is what keeps them private.
chmod 700 "$dir"

ROLES="upstream order inventory payment notification reporting subscriber operator"
WORKERS="order inventory payment notification reporting"
AMQP_NODES="rabbitmq-1:5672 rabbitmq-2:5672 rabbitmq-3:5672"
MONGO_MEMBERS="mongo-1:27017,mongo-2:27017,mongo-3:27017"
REPLICA_SET="rs0"

created=0 kept=0

password() {  # 32 random bytes as hex: nothing to escape in a URL or a configuration file
    od -An -N32 -tx1 /dev/urandom | tr -d ' \n'
}

upper() {
    printf '%s' "$1" | tr '[:lower:]' '[:upper:]'
}

amqp_url() {  # amqp_url USER PASSWORD: the three nodes, comma-separated, tried in turn
    local urls="" node
    for node in $AMQP_NODES; do
        urls="${urls:+$urls,}amqp://$1:$2@$node/%2F"
    done
    printf '%s' "$urls"
}

mongo_url() {  # mongo_url USER PASSWORD: every member, users kept in the admin database
    printf 'mongodb://%s:%s@%s/?replicaSet=%s&authSource=admin' "$1" "$2" "$MONGO_MEMBERS" "$REPLICA_SET"
}

# put NAME MODE COMMAND...: the command's output as DIR/NAME, unless that file exists.
put() {
    local mode="$2" path="$dir/$1"
    shift 2
    if [ -e "$path" ]; then
        kept=$((kept + 1))
        return
    fi
    "$@" >"$path.tmp"
    chmod "$mode" "$path.tmp"
    mv "$path.tmp" "$path"
    created=$((created + 1))
}

for role in $ROLES; do
    put "ORDERFLOW_AMQP_URL_$(upper "$role")" 644 amqp_url "$role" "$(password)"
done
for worker in $WORKERS; do
    put "ORDERFLOW_MONGO_URL_$(upper "$worker")" 644 mongo_url "$worker" "$(password)"
done
# The operator's store user (orderflow backup, restore, migrate, reports): every Orderflow database.
put ORDERFLOW_MONGO_URL 644 mongo_url operator "$(password)"

put rabbitmq_admin_password 644 password
put mongo_root_password 644 password
put grafana_admin_password 644 password
# Only root in the container reads these two; it copies them to where, and as whom, the server wants.
put rabbitmq_erlang_cookie 400 password
# 756 random bytes as base64 (1008 characters): MongoDB's recipe for a keyfile, within its 1024.
put mongo_keyfile 400 sh -c 'head -c 756 /dev/urandom | base64'

echo "compose secrets in $dir: $created created, $kept kept"
