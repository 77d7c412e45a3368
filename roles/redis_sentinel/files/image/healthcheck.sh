#!/bin/bash
# Healthy = the local server or sentinel answers an authenticated PING.
port=6379; [ "${REDIS_MODE:-server}" = sentinel ] && port=26379
REDISCLI_AUTH=$(cat /run/secrets/redis_password) redis-cli -p "$port" --no-auth-warning ping | grep -q PONG
