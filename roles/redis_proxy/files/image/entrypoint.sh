#!/bin/bash
# Passwords reach haproxy.cfg as environment variables of the haproxy process only ("${VAR}"
# in the config), read from Docker secrets; the service definition carries none.
#   HAPROXY_CONFIG   configuration file (a Swarm config rendered by the redis_proxy role)
#   HAPROXY_SECRETS  space-separated "VAR=secretfile" pairs, files under /run/secrets
set -euo pipefail
: "${HAPROXY_CONFIG:=/etc/boxoffice/haproxy.cfg}" "${HAPROXY_SECRETS:=}"
for pair in $HAPROXY_SECRETS; do
  var=${pair%%=*} file=/run/secrets/${pair#*=}
  if [ ! -r "$file" ]; then
    echo "entrypoint: secret $file for $var is missing or unreadable" >&2
    exit 1
  fi
  export "$var=$(cat "$file")"
done
haproxy -c -q -f "$HAPROXY_CONFIG"
exec setpriv --reuid=haproxy --regid=haproxy --init-groups haproxy -W -db -f "$HAPROXY_CONFIG"
