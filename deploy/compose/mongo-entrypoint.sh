#!/usr/bin/env bash
# Runs as root before the image's own entrypoint (which then drops to the mongodb user).
# mongod reads a keyfile only if no one but its owner may read it, and as the mongodb user it must
# be that owner; a Compose file secret is a bind mount of the host's file, whose owner and mode
# Compose cannot set. So the keyfile is copied into place.
set -euo pipefail

install -o mongodb -g mongodb -m 0400 /run/secrets/mongo_keyfile /etc/mongo-keyfile

exec docker-entrypoint.sh "$@"
