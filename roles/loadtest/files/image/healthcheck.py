"""Container healthcheck for locust master, standalone and worker processes.

A master (or standalone) is healthy when its web UI answers; a worker has no
web UI and is only useful while it can reach its master, so check that.
Reads locust's own environment configuration (LOCUST_*).
"""
import os
import socket
import sys
import urllib.request


def truthy(name):
    return os.environ.get(name, "").lower() in ("1", "true", "yes")


def main():
    if truthy("LOCUST_MODE_WORKER"):
        host = os.environ.get("LOCUST_MASTER_NODE_HOST", "127.0.0.1")
        port = int(os.environ.get("LOCUST_MASTER_NODE_PORT", "5557"))
        with socket.create_connection((host, port), timeout=4):
            return 0
    if truthy("LOCUST_HEADLESS"):
        # A headless run has no web UI; the process being alive is all there is.
        return 0
    port = os.environ.get("LOCUST_WEB_PORT", "8089")
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=4) as response:
        return 0 if response.status == 200 else 1


if __name__ == "__main__":
    try:
        sys.exit(main())
    except OSError as exc:
        print(f"unhealthy: {exc}", file=sys.stderr)
        sys.exit(1)
