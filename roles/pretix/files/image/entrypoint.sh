#!/bin/sh
# One image, several process types; the mode is recorded so that the single
# image-level HEALTHCHECK knows what to probe.
set -eu

mode="${1:-web}"
[ "$#" -gt 0 ] && shift
echo "$mode" > /tmp/pretix-mode

# Celery accepts the Redis password only inside its URL. The URL is composed
# here from the secret file so that the password never appears in the service
# definition (docker inspect), only in this process's environment.
if [ -n "${BOXOFFICE_REDIS_PASSWORD_FILE:-}" ]; then
  redis_password=$(cat "$BOXOFFICE_REDIS_PASSWORD_FILE")
  if [ -n "${BOXOFFICE_CELERY_BROKER:-}" ]; then
    export PRETIX_CELERY_BROKER="redis://:${redis_password}@${BOXOFFICE_CELERY_BROKER#redis://}"
  fi
  if [ -n "${BOXOFFICE_CELERY_BACKEND:-}" ]; then
    export PRETIX_CELERY_BACKEND="redis://:${redis_password}@${BOXOFFICE_CELERY_BACKEND#redis://}"
  fi
  unset redis_password
fi

# boxoffice's own modules: the worker's settings and the cron loop.
export PYTHONPATH="/opt/boxoffice/python${PYTHONPATH:+:$PYTHONPATH}"

case "$mode" in
  web)
    exec gunicorn pretix.wsgi \
      --name pretix \
      --bind "0.0.0.0:8000" \
      --workers "${PRETIX_WEB_WORKERS:-2}" \
      --timeout "${PRETIX_WEB_TIMEOUT:-60}" \
      --max-requests "${PRETIX_WEB_MAX_REQUESTS:-1200}" \
      --max-requests-jitter 50 \
      --forwarded-allow-ips '*' \
      --access-logfile - \
      "$@"
    ;;
  worker)
    # pretix's settings plus database connections kept across tasks (see the module).
    export DJANGO_SETTINGS_MODULE=boxoffice_worker_settings
    # A pool process that has grown past the bound (KiB) is replaced after its task: left to
    # grow, it reaches the task's memory limit and the kernel kills it in the middle of an order.
    exec celery -A pretix.celery_app worker \
      --loglevel INFO \
      --concurrency "${PRETIX_WORKER_CONCURRENCY:-2}" \
      --max-memory-per-child "${PRETIX_WORKER_MAX_MEMORY_PER_CHILD:-409600}" \
      --queues "${PRETIX_WORKER_QUEUES:-default,checkout,mail,background,notifications}" \
      --hostname "pretix@%h" \
      "$@"
    ;;
  cron)
    exec python -m boxoffice_cron
    ;;
  migrate)
    exec python -m pretix migrate --noinput "$@"
    ;;
  shell|manage)
    exec python -m pretix "$@"
    ;;
  *)
    exec "$mode" "$@"
    ;;
esac
