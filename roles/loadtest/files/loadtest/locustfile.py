"""Locust user classes for a pretix shop: ``WebBuyer`` (browser checkout) and ``ApiBuyer``.

Configured by environment (the loadtest role sets it on master and workers):
LOADTEST_ORGANIZER, LOADTEST_EVENT, LOADTEST_ITEM (product id; empty: the first one
offered), LOADTEST_API_TOKEN (ApiBuyer), LOADTEST_RATE (purchases/min, all users
together), LOADTEST_USERS (the user count the master spawns), LOADTEST_MAX_TRIES,
LOADTEST_STATIC_ASSETS (0: WebBuyer skips the page's stylesheets and scripts),
LOADTEST_RUN_SECONDS (on a master: the run's length, see stop_workers_gracefully).
Every purchase attempt reports one PURCHASE STARTED event when it begins and one PURCHASE
event, success or failure, whatever its retries, when it ends; the HTTP requests it made appear
in the stats under their own names. With --csv PREFIX, PREFIX_final_stats.csv holds the stats
as they stand when Locust quits (see write_final_stats).
"""
import csv
import os
import re
import ssl
import sys
import time
import urllib.parse
import uuid

import gevent
import locust.runners
import requests.adapters
import urllib3
from locust import HttpUser, constant_pacing, events, task
from locust.runners import MasterRunner, WorkerRunner
from locust.stats import PERCENTILES_TO_REPORT, StatsCSV

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from loadtest import core  # noqa: E402  pylint: disable=wrong-import-position

# A load node that the shop under test saturates (one machine) misses Locust's 3 s heartbeat;
# the master then calls the worker missing and moves its users, killing their purchases in
# flight and counting users twice. A minute tells a starved worker from a dead one.
locust.runners.HEARTBEAT_LIVENESS = 60

# The default target is nginx's self-signed certificate on loopback.
urllib3.disable_warnings(urllib3.exceptions.InsecureRequestWarning)
# Certificates are not verified, so every user can share one TLS context. Otherwise urllib3 builds
# a context per connection pool and loads the system's CA store into it: 50 ms of CPU for each
# user's first HTTPS request (measured in the locust image, against 5 ms with this context), which
# on a machine shared with the shop was taken from the shop while the users spawned.
UNVERIFIED_TLS = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
UNVERIFIED_TLS.check_hostname = False
UNVERIFIED_TLS.verify_mode = ssl.CERT_NONE


class UnverifiedTLSAdapter(requests.adapters.HTTPAdapter):
    def init_poolmanager(self, *args, **kwargs):
        super().init_poolmanager(*args, ssl_context=UNVERIFIED_TLS, **kwargs)


ORGANIZER = os.environ.get("LOADTEST_ORGANIZER", "demo")
EVENT = os.environ.get("LOADTEST_EVENT", "demo")
ITEM = os.environ.get("LOADTEST_ITEM", "")
TOKEN = os.environ.get("LOADTEST_API_TOKEN", "")
MAX_TRIES = int(os.environ.get("LOADTEST_MAX_TRIES", "3"))
RATE = float(os.environ.get("LOADTEST_RATE", "800"))
USERS = int(os.environ.get("LOADTEST_USERS", "1"))
RUN_SECONDS = float(os.environ.get("LOADTEST_RUN_SECONDS", "0"))
STATIC_ASSETS = os.environ.get("LOADTEST_STATIC_ASSETS", "1") != "0"
ASYNC_POLLS = 240
ASYNC_POLL_INTERVAL = 0.25


@events.test_start.add_listener
def stop_workers_gracefully(environment, **_kwargs):
    """A master that reaches --run-time quits at once: its workers' purchases in flight are cut
    off and their last reports lost. Stopping first lets every user finish its purchase within
    --stop-timeout (see report_last_purchases). --run-time stays as the outer limit."""
    if RUN_SECONDS and isinstance(environment.runner, MasterRunner):
        def stop_then_quit():
            environment.runner.stop()
            environment.runner.quit()
        gevent.spawn_later(RUN_SECONDS, stop_then_quit)


@events.test_stop.add_listener
def report_last_purchases(environment, **_kwargs):
    """Once a worker says it stopped, the master discards its reports: what ended since its last
    periodic report (every 3 s) would be lost. Locust 2.47 has no public call for this report."""
    if isinstance(environment.runner, WorkerRunner):
        environment.runner._send_stats()  # pylint: disable=protected-access


@events.quitting.add_listener
def write_final_stats(environment, **_kwargs):
    """Locust rewrites PREFIX_stats.csv once a second while it runs and not after the last users
    ended: purchases that finish during --stop-timeout would be missing there. The verdict reads
    this file, written once everything (workers' last reports included) has arrived."""
    prefix = getattr(environment.parsed_options, "csv_prefix", None)
    if prefix and not isinstance(environment.runner, WorkerRunner):
        with open(f"{prefix}_final_stats.csv", "w", newline="", encoding="utf-8") as handle:
            StatsCSV(environment, PERCENTILES_TO_REPORT).requests_csv(csv.writer(handle))


class Buyer(HttpUser):
    abstract = True
    # Every user starts a purchase every USERS*60/RATE seconds: together they arrive
    # at RATE purchases per minute, independent of how fast the shop answers.
    wait_time = constant_pacing(USERS * 60.0 / RATE)
    scenario = ""

    def on_start(self):
        self.client.verify = False
        self.client.mount("https://", UnverifiedTLSAdapter())

    def checked(self, response, expect=(200,)):
        core.raise_for_conflict(response.status_code, response.headers)
        if response.status_code not in expect:
            raise core.PurchaseFailed(f"{response.request.method} {response.url}: HTTP {response.status_code}")
        return response

    def buy(self):
        raise NotImplementedError

    @task
    def purchase(self):
        self.environment.events.request.fire(
            request_type=core.PURCHASE_STARTED_REQUEST_TYPE, name=self.scenario,
            response_time=0, response_length=0, exception=None, context={})
        result = core.attempt_purchase(self.buy, max_tries=MAX_TRIES)
        self.environment.events.request.fire(
            request_type=core.PURCHASE_REQUEST_TYPE, name=self.scenario,
            response_time=result.elapsed * 1000.0, response_length=result.tries,
            exception=result.error, context={"tries": result.tries})


class WebBuyer(Buyer):
    """A new browser per purchase: event page and its assets, cart, questions, payment, confirm, order."""
    scenario = "web"

    def buy(self):
        self.client.cookies.clear()
        base = f"/{ORGANIZER}/{EVENT}/"
        page = self.checked(self.client.get(base, name="event page"))
        for asset in core.static_assets(page.text) if STATIC_ASSETS else ():
            self.client.get(asset, name="static asset")
        form = core.find_form(core.parse_forms(page.text), "cart/add")
        data = dict(form["fields"])
        items = [n for n in data if re.fullmatch(r"item_\d+", n)] + [n for n in form["choices"] if re.fullmatch(r"item_\d+", n)]
        wanted = f"item_{ITEM}" if ITEM else (items[0] if items else None)
        if wanted not in items:
            raise core.PurchaseFailed(f"product {wanted or '(any)'} is not offered on {base}")
        data[wanted] = "1"
        self.async_post(page, form["action"], data, "cart add")
        step = self.checked(self.client.get(base + "checkout/start", name="checkout start"))
        if "/checkout/questions/" in step.url:
            form = core.find_form_with_field(core.parse_forms(step.text), "email")
            fields = core.fill_questions(form, f"buyer-{uuid.uuid4().hex[:12]}@example.org")
            step = self.post(step, step.url, fields, "checkout questions")
        if "/checkout/payment/" in step.url:
            form = core.find_form_with_field(core.parse_forms(step.text), "payment")
            fields = dict(form["fields"], payment="manual")
            step = self.post(step, step.url, fields, "checkout payment")
        if "/checkout/confirm/" not in step.url:
            raise core.PurchaseFailed(f"checkout did not reach the confirm step (at {step.url})")
        form = core.find_self_post_form(core.parse_forms(step.text), "/checkout/confirm/")
        order_url = self.async_post(step, step.url, core.fill_questions(form, ""), "checkout confirm")
        if "/order/" not in order_url:
            raise core.PurchaseFailed(f"confirm led to {order_url}, not to an order")
        self.checked(self.client.get(order_url, name="order page"))

    def post(self, page, action, data, name, ajax=False):
        url = urllib.parse.urljoin(page.url, action or page.url)
        if ajax:
            data = dict(data, ajax="1")
        # Django checks the Referer of every HTTPS form post against the host.
        return self.checked(self.client.post(url, data=data, name=name, headers={"Referer": page.url}))

    def async_post(self, page, action, data, name):
        """POST a pretix AsyncAction in its AJAX form and wait for the task's verdict."""
        answer = self.post(page, action, data, name, ajax=True).json()
        check = None
        for _ in range(ASYNC_POLLS):
            if answer.get("ready"):
                if not answer.get("success"):
                    raise core.PurchaseFailed(f"{name}: {answer.get('message')}")
                return urllib.parse.urljoin(page.url, answer.get("redirect") or "")
            # Only pretix's first answer carries check_url; the answers to polling it do not.
            if answer.get("check_url"):
                check = urllib.parse.urljoin(page.url, answer["check_url"])
            if check is None:
                raise core.PurchaseFailed(f"{name}: pretix gave no URL to wait on: {answer}")
            time.sleep(ASYNC_POLL_INTERVAL)
            answer = self.checked(self.client.get(check, name=f"{name} (wait)")).json()
        raise core.PurchaseFailed(f"{name}: task not finished after {ASYNC_POLLS * ASYNC_POLL_INTERVAL:.0f}s")


class ApiBuyer(Buyer):
    """An order through pretix's REST API, as the original deployment measured."""
    scenario = "api"

    def on_start(self):
        super().on_start()
        self.client.headers["Authorization"] = f"Token {TOKEN}"
        self.api = f"/api/v1/organizers/{ORGANIZER}/events/{EVENT}/"
        self.item = int(ITEM) if ITEM else None
        if self.item is None:
            items = self.client.get(self.api + "items/?active=true", name="api items").json()["results"]
            self.item = items[0]["id"]

    def buy(self):
        order = {
            "email": f"buyer-{uuid.uuid4().hex[:12]}@example.org",
            "locale": "en",
            "sales_channel": "web",
            "payment_provider": "manual",
            "positions": [{"item": self.item}],
        }
        self.checked(self.client.post(self.api + "orders/", json=order, name="api order create"), expect=(201,))
