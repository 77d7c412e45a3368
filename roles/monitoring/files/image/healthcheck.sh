#!/bin/bash
# Healthy = the component answers GET / on its port with a success or a redirect (Prometheus and
# Alertmanager redirect / to their UI). bash's /dev/tcp keeps the image free of an HTTP client.
port=$(cat /tmp/healthcheck-port) || exit 1
exec 3<>"/dev/tcp/127.0.0.1/$port" || exit 1
printf 'GET / HTTP/1.0\r\nHost: localhost\r\n\r\n' >&3
head -n1 <&3 | grep -q '^HTTP/1\.[01] [23]'
