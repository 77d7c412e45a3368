#!/bin/sh
# ganesha wants a system D-Bus for its admin interface; it serves without one,
# but logs an error per second, so a private bus is started.
set -eu
chown "${NFS_DATA_UID:-15371}:${NFS_DATA_UID:-15371}" /export
dbus-daemon --system --fork --nopidfile 2>/dev/null || true
exec ganesha.nfsd -F -L /dev/stdout -f /etc/ganesha/ganesha.conf
