#!/bin/bash
# Runs one monitoring component as the user prometheus:
#   entrypoint.sh COMPONENT [FLAGS...]
# COMPONENT is prometheus, alertmanager, node-exporter, postgres-exporter, redis-exporter,
# nginx-exporter or blackbox-exporter; FLAGS go to its binary and must include its
# web.listen-address (-web.listen-address=:PORT or --web.listen-address=:PORT), the one address
# the healthcheck probes.
# Prometheus discovers the swarm's tasks through a manager's Docker socket, mounted at
# /var/run/docker.sock; it reads it with the socket's group, whatever gid the host gave it.
set -euo pipefail
component=${1:?usage: entrypoint.sh COMPONENT [FLAGS...]}
shift
case $component in
  prometheus) binary=/usr/bin/prometheus ;;
  alertmanager) binary=/usr/bin/prometheus-alertmanager ;;
  node-exporter | postgres-exporter | redis-exporter | nginx-exporter | blackbox-exporter)
    binary=/usr/bin/prometheus-$component ;;
  *) echo "entrypoint: unknown component '$component'" >&2; exit 64 ;;
esac

port=""
for flag in "$@"; do
  case $flag in
    -web.listen-address=* | --web.listen-address=*) port=${flag##*:} ;;
  esac
done
if [ -z "$port" ]; then
  echo "entrypoint: $component needs a web.listen-address flag (the healthcheck probes it)" >&2
  exit 64
fi
echo "$port" > /tmp/healthcheck-port

groups=prometheus
[ -S /var/run/docker.sock ] && groups=$groups,$(stat -c %g /var/run/docker.sock)
exec setpriv --reuid=prometheus --regid=prometheus --groups="$groups" "$binary" "$@"
