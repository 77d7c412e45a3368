#!/bin/sh
# Runs the autoscaler (/opt/boxoffice/autoscaler.py, a Swarm config) as the user autoscaler, with
# the group of the Docker socket mounted at /var/run/docker.sock, whatever gid the host gave it.
# Arguments go to the program (a config path; by default $AUTOSCALER_CONFIG).
set -eu
groups=autoscaler
if [ -S /var/run/docker.sock ]; then
  groups=$groups,$(stat -c %g /var/run/docker.sock)
fi
exec setpriv --reuid=autoscaler --regid=autoscaler --groups="$groups" \
  /usr/bin/python3 /opt/boxoffice/autoscaler.py "$@"
