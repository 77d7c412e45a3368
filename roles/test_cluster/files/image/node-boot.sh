#!/bin/sh
# The node's boot: what systemd does on a real host. Once the docker_engine role has
# configured the engine (daemon.json exists), every start of the node container starts
# dockerd again, so a node that lost power rejoins its swarm by itself. The first boot leaves
# the engine to the role. The paths are the docker_engine role's defaults.
# /run is a tmpfs on a real host, empty at every boot; here it outlives a killed node, and a
# stale containerd pid file whose number a new process now holds makes dockerd wait for a
# containerd that never answers.
if [ -e /etc/docker/daemon.json ]; then
  rm -rf /run/dockerd.pid /run/docker.pid /run/docker /run/containerd
  start-stop-daemon --start --background --make-pidfile --pidfile /run/dockerd.pid \
    --output /var/log/dockerd.log --exec /usr/sbin/dockerd
fi
# An edge node's floating address (the keepalived role), as systemd would start it.
if [ -e /etc/keepalived/keepalived.conf ]; then
  rm -f /run/keepalived.pid /run/vrrp.pid
  /usr/sbin/keepalived --use-file /etc/keepalived/keepalived.conf --pid /run/keepalived.pid
fi
exec sleep infinity
