#!/opt/pretix/venv/bin/python
"""Container healthcheck for every pretix process type (see entrypoint.sh)."""
import configparser
import os
import socket
import sys
import time
import urllib.parse
import urllib.request


def site_host():
    """Host header pretix accepts: the one of [pretix] url (others get a 400)."""
    config = configparser.RawConfigParser()
    config.read(os.environ.get("PRETIX_CONFIG_FILE", "/etc/pretix/pretix.cfg"))
    url = os.environ.get("PRETIX_PRETIX_URL") or config.get("pretix", "url", fallback="http://localhost")
    return urllib.parse.urlsplit(url).netloc


def web_health():
    """Unhealthy when gunicorn refuses connections or pretix answers /healthcheck/ with an
    error (it touches the database and the cache, so pgpool or redis-proxy being unreachable
    shows). No answer within the timeout means this probe waits behind buyers in gunicorn's
    queue: that task is busy, not broken. Swarm killing it would drop every purchase in flight
    and pile its buyers onto the other tasks, turning a rush into an outage. A worker that
    really hangs is gunicorn's job: it kills any worker silent for longer than --timeout."""
    try:
        connection = socket.create_connection(("127.0.0.1", 8000), timeout=2)
    except OSError as exc:
        print(f"gunicorn does not accept connections: {exc}", file=sys.stderr)
        return 1
    connection.close()
    request = urllib.request.Request("http://127.0.0.1:8000/healthcheck/", headers={"Host": site_host()})
    try:
        with urllib.request.urlopen(request, timeout=7) as response:
            return 0 if response.status == 200 else 1
    except TimeoutError:
        print("busy: gunicorn accepted the probe but did not answer within 7 s", file=sys.stderr)
        return 0


def main():
    try:
        with open("/tmp/pretix-mode") as f:
            mode = f.read().strip()
    except OSError:
        return 1
    if mode == "web":
        return web_health()
    if mode == "cron":
        interval = int(os.environ["PRETIX_CRON_INTERVAL"])
        try:
            with open("/tmp/pretix-cron-heartbeat") as f:
                last = int(f.read().strip())
        except OSError:
            # No successful run yet: the start period covers the first one.
            return 1
        return 0 if time.time() - last < 3 * interval + 300 else 1
    if mode == "worker":
        return worker_health()
    # One-shot modes: the process being alive is what Swarm needs.
    return 0


def worker_health():
    """Unhealthy when the consumer's heartbeat (boxoffice_worker_settings) is older than the
    bound: a broker failover pauses it for seconds, a dead consumer for good."""
    bound = 90
    try:
        age = time.time() - os.stat("/tmp/pretix-worker-heartbeat").st_mtime
    except OSError:
        print("no consumer heartbeat yet", file=sys.stderr)
        return 1
    if age > bound:
        print(f"the consumer's last heartbeat is {age:.0f} s old (bound {bound} s)", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except Exception as exc:  # any error is "unhealthy", with the reason in the log
        print(exc, file=sys.stderr)
        sys.exit(1)
