#!/usr/bin/env bash
# Runs as root before the image's own entrypoint (which then drops to the rabbitmq user).
# A Compose file secret is a bind mount of the host's file, whose owner and mode Compose cannot set,
# and Erlang reads a cookie only if it belongs to the node's user and no one else may read it: so
# the cookie is copied into place. The administrator's password goes into a configuration file
# rather than the environment, where `docker inspect` would show it (and the image refuses
# RABBITMQ_DEFAULT_PASS_FILE).
set -euo pipefail

install -o rabbitmq -g rabbitmq -m 0400 /run/secrets/rabbitmq_erlang_cookie /var/lib/rabbitmq/.erlang.cookie

admin_conf=/etc/rabbitmq/conf.d/90-orderflow-admin.conf
rm -f "$admin_conf"
(
    umask 077
    printf 'default_user = admin\ndefault_pass = %s\n' "$(cat /run/secrets/rabbitmq_admin_password)" >"$admin_conf"
)
chown rabbitmq:rabbitmq "$admin_conf"

exec docker-entrypoint.sh "$@"
