"""Retry/accounting logic of the load test against a real HTTP server on 127.0.0.1.

The server answers a scripted list of statuses (409 + Retry-After, then 201, ...);
the purchase function talks to it over real HTTP with urllib. Only the sleep between
tries is recorded instead of slept, so the tests do not wait out Retry-After.
"""
import datetime
import http.server
import os
import ssl
import subprocess
import sys
import threading
import urllib.error
import urllib.request

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
LOADTEST_PARENT = os.path.join(REPO_ROOT, 'roles', 'loadtest', 'files')
sys.path.insert(0, LOADTEST_PARENT)

from loadtest import core  # noqa: E402  pylint: disable=wrong-import-position


class ScriptedShop(http.server.ThreadingHTTPServer):
    """Answers POSTs with the next (status, retry_after) of its script; 201 once it runs out."""

    def __init__(self, script):
        super().__init__(("127.0.0.1", 0), ScriptedHandler)
        self.script = list(script)
        self.requests = 0
        self.lock = threading.Lock()


class ScriptedHandler(http.server.BaseHTTPRequestHandler):
    def log_message(self, *args):  # keep pytest output clean
        pass

    def _answer(self):
        with self.server.lock:
            self.server.requests += 1
            status, retry_after = self.server.script.pop(0) if self.server.script else (201, None)
        body = b'{"code": "ABC12"}' if status == 201 else b'{"detail": "busy"}'
        self.send_response(status)
        if retry_after is not None:
            self.send_header("Retry-After", retry_after)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_POST(self):  # noqa: N802  (http.server's naming)
        self.rfile.read(int(self.headers.get("Content-Length", 0)))
        self._answer()

    def do_GET(self):  # noqa: N802
        self._answer()


def serve(server):
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()


@pytest.fixture
def shop(request):
    yield from serve(ScriptedShop(request.param))


@pytest.fixture
def tls_shop(tmp_path):
    """A ScriptedShop that answers 201 over HTTPS with a self-signed certificate, as nginx does."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now)
            .not_valid_after(now + datetime.timedelta(days=1)).sign(key, hashes.SHA256()))
    (tmp_path / "cert.pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    (tmp_path / "key.pem").write_bytes(key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(tmp_path / "cert.pem", tmp_path / "key.pem")
    server = ScriptedShop([])
    server.socket = context.wrap_socket(server.socket, server_side=True)
    yield from serve(server)


def buy_from(server):
    """One purchase over real HTTP, the way the Locust users judge answers."""
    def purchase():
        url = f"http://127.0.0.1:{server.server_address[1]}/api/v1/orders/"
        request = urllib.request.Request(url, data=b"{}", method="POST")
        try:
            with urllib.request.urlopen(request, timeout=5) as response:
                status, headers = response.status, response.headers
        except urllib.error.HTTPError as exc:
            status, headers = exc.code, exc.headers
        core.raise_for_conflict(status, headers)
        if status != 201:
            raise core.PurchaseFailed(f"HTTP {status}")
    return purchase


class Sleeps(list):
    def __call__(self, seconds):
        self.append(seconds)


@pytest.mark.parametrize("shop", [[(409, "2"), (409, "1")]], indirect=True)
def test_conflicts_then_success_count_as_one_purchase(shop):
    sleeps = Sleeps()
    result = core.attempt_purchase(buy_from(shop), max_tries=3, sleep=sleeps)
    assert result.success and result.error is None
    assert result.tries == 3
    assert shop.requests == 3
    assert sleeps == [2.0, 1.0]  # each Retry-After honoured before the next try


@pytest.mark.parametrize("shop", [[(409, "1"), (409, "1"), (409, "1"), (409, "1")]], indirect=True)
def test_purchase_lost_only_when_every_try_failed(shop):
    sleeps = Sleeps()
    result = core.attempt_purchase(buy_from(shop), max_tries=3, sleep=sleeps)
    assert not result.success
    assert isinstance(result.error, core.RetryableConflict)
    assert result.tries == 3
    assert shop.requests == 3  # bounded: the fourth 409 is never asked for
    assert sleeps == [1.0, 1.0]  # no pointless wait after the last try


@pytest.mark.parametrize("shop", [[(400, None)]], indirect=True)
def test_other_errors_are_not_retried(shop):
    sleeps = Sleeps()
    result = core.attempt_purchase(buy_from(shop), max_tries=3, sleep=sleeps)
    assert not result.success and isinstance(result.error, core.PurchaseFailed)
    assert result.tries == 1 and shop.requests == 1 and sleeps == []


@pytest.mark.parametrize("value, seconds", [
    ("5", 5.0), ("0", 0.0), ("", core.DEFAULT_RETRY_AFTER), (None, core.DEFAULT_RETRY_AFTER),
    ("junk", core.DEFAULT_RETRY_AFTER), ("3600", core.MAX_RETRY_AFTER), ("-4", 0.0),
    ("Thu, 01 Jan 1970 00:00:10 GMT", 7.0),
])
def test_retry_after_parsing(value, seconds):
    assert core.parse_retry_after(value, now=3.0) == seconds


@pytest.mark.parametrize("rate, pacing, users", [(800, 10, 134), (400, 10, 67), (8000, 10, 1334), (1, 10, 1)])
def test_arrival_plan_keeps_the_rate_exact(rate, pacing, users):
    plan = core.arrival_plan(rate, pacing)
    assert plan["users"] == users
    assert plan["users"] * 60.0 / plan["pacing"] == pytest.approx(rate)
    assert plan["spawn_rate"] == pytest.approx(rate / 60.0)


STATS_HEADER = "Type,Name,Request Count,Failure Count,50%,95%\n"


def test_verdict_passes_and_fails_on_each_slo():
    good = STATS_HEADER + ("PURCHASE STARTED,api,1000,0,0,0\nPURCHASE,api,1000,5,400,900\n"
                           "POST,api order create,1010,15,300,800\n,Aggregated,3010,20,0,850\n")
    result = core.verdict(good, 60, 800, 0.99, 2000)
    assert result["passed"] and result["purchases"] == 995 and result["purchases_per_min"] == 995.0
    assert (result["purchase_p50_ms"], result["purchase_p95_ms"], result["unfinished"]) == (400, 900, 0)
    assert result["worst_request"] == "POST api order create"
    lossy = core.verdict(good, 60, 800, 0.999, 2000)
    assert not lossy["passed"] and "success ratio" in lossy["breaches"][0]
    slow = core.verdict(good, 60, 800, 0.99, 500)
    assert not slow["passed"] and "p95" in slow["breaches"][0]
    empty = core.verdict(STATS_HEADER, 60, 800, 0.99, 2000)
    assert not empty["passed"] and "no purchase" in empty["breaches"][0]


def test_purchases_unfinished_when_the_run_ends_count_as_lost():
    stuck = STATS_HEADER + "PURCHASE STARTED,web,67,0,0,0\nGET,event page,67,0,3900,8000\n"
    result = core.verdict(stuck, 60, 400, 0.99, 10000)
    assert (result["attempts"], result["purchases"], result["lost"], result["unfinished"]) == (67, 0, 67, 67)
    assert not result["passed"] and "success ratio 0.0000" in result["breaches"][0]
    some = core.verdict(stuck.replace("\nGET", "\nPURCHASE,web,60,0,20000,30000\nGET"), 60, 400, 0.5, 10000)
    assert (some["purchases"], some["lost"], some["unfinished"], some["success_ratio"]) == (60, 7, 7, 0.8955)
    assert some["passed"] and some["worst_request"] == "GET event page"


CHECKOUT_PAGE = """
<form method="post" action="/demo/demo/cart/add"><input type="hidden" name="csrfmiddlewaretoken" value="tok">
<input type="number" name="item_7" value="0"><input type="checkbox" name="item_8" value="1"></form>
<form method="post"><input type="hidden" name="csrfmiddlewaretoken" value="tok2">
<input type="email" name="email" required><input name="email_repeat">
<input name="1-attendee_name_parts_0"><select name="country"><option value="DE" selected>DE</option></select>
<input type="checkbox" name="confirm_texts" value="yes" required><textarea name="comment">hi</textarea>
<input type="submit" name="go"></form>
<link rel="stylesheet" href="/static/CACHE/css/main.css"><script src="/static/jquery.js"></script>
<script src="https://cdn.example.org/x.js"></script>
"""


def test_forms_and_questions_like_a_browser():
    forms = core.parse_forms(CHECKOUT_PAGE)
    cart = core.find_form(forms, "cart/add")
    assert cart["fields"] == {"csrfmiddlewaretoken": "tok", "item_7": "0"}
    assert cart["choices"] == {"item_8": ["1"]}
    questions = core.fill_questions(forms[1], "b@example.org")
    assert questions["email"] == questions["email_repeat"] == "b@example.org"
    assert questions["1-attendee_name_parts_0"] == "Load Tester"
    assert questions["country"] == "DE" and questions["comment"] == "hi"
    assert questions["confirm_texts"] == "yes" and questions["csrfmiddlewaretoken"] == "tok2"
    assert "go" not in questions
    assert core.static_assets(CHECKOUT_PAGE) == ["/static/CACHE/css/main.css", "/static/jquery.js"]
    assert core.find_form_with_field(forms, "email") is forms[1]
    assert core.find_form_with_field(forms, "item_8") is forms[0]
    assert core.find_self_post_form(forms, "/checkout/questions/") is forms[1]
    with pytest.raises(core.PurchaseFailed):
        core.find_form(forms, "checkout/confirm")
    with pytest.raises(core.PurchaseFailed):
        core.find_form_with_field(forms, "payment")


def run_api_buyer(url, tmp_path):
    """The real Locust ApiBuyer, one user at 60 purchases/min for 4 s: its final stats by (type, name)."""
    env = dict(os.environ, LOADTEST_ITEM="7", LOADTEST_API_TOKEN="t", LOADTEST_RATE="60",
               LOADTEST_USERS="1", LOADTEST_MAX_TRIES="3")
    subprocess.run(
        [sys.executable, "-m", "locust", "-f", os.path.join(LOADTEST_PARENT, "loadtest", "locustfile.py"),
         "--headless", "-u", "1", "-r", "1", "--run-time", "4s", "--stop-timeout", "10",
         "--host", url, "--csv", str(tmp_path / "run"),
         "--exit-code-on-error", "0", "--only-summary", "ApiBuyer"],
        env=env, check=True, capture_output=True, timeout=120, cwd=tmp_path)
    return {(r["Type"], r["Name"]): r for r in core.read_stats((tmp_path / "run_final_stats.csv").read_text())}


@pytest.mark.parametrize("shop", [[(409, "0"), (409, "0"), (409, "0")]], indirect=True)
def test_locust_reports_one_purchase_event_per_attempt(shop, tmp_path):
    """The real Locust ApiBuyer against the scripted shop for a few seconds.

    The first attempt meets 409 three times (lost, once, after 3 tries); every later
    attempt gets 201 at once. Whatever the number of attempts N the run fits in:
    N PURCHASE events, exactly 1 of them failed, and N + 2 HTTP requests in the stats.
    """
    rows = run_api_buyer(f"http://127.0.0.1:{shop.server_address[1]}", tmp_path)
    purchase = rows[(core.PURCHASE_REQUEST_TYPE, "api")]
    attempts = int(purchase["Request Count"])
    # The stop timeout lets a purchase in flight when the run ends finish, and it is counted.
    assert rows[(core.PURCHASE_STARTED_REQUEST_TYPE, "api")]["Request Count"] == purchase["Request Count"]
    posts = int(rows[("POST", "api order create")]["Request Count"])
    assert attempts >= 1
    assert purchase["Failure Count"] == "1"
    assert posts == attempts + 2
    assert shop.requests == posts


def test_locust_buys_over_https_from_a_self_signed_shop(tls_shop, tmp_path):
    """Users share one TLS context that does not verify (UnverifiedTLSAdapter): purchases go through."""
    rows = run_api_buyer(f"https://localhost:{tls_shop.server_address[1]}", tmp_path)
    purchase = rows[(core.PURCHASE_REQUEST_TYPE, "api")]
    assert int(purchase["Request Count"]) >= 1
    assert purchase["Failure Count"] == "0"
    assert tls_shop.requests == int(rows[("POST", "api order create")]["Request Count"])
