"""Load-test logic that does not depend on Locust: retries, arrival rates, forms, verdicts.

The Locust glue (locustfile.py) only wires these into user classes, so everything
here is unit-tested against a real local HTTP server.
"""
import csv
import email.utils
import html.parser
import io
import math
import time

# pretix answers 409 + Retry-After when a quota lock could not be taken in time
# (LockTimeoutException) or an idempotent request is still running.
RETRYABLE_STATUS = 409
DEFAULT_RETRY_AFTER = 5.0
MAX_RETRY_AFTER = 30.0

PROFILES = {"0.5x": 0.5, "1x": 1.0, "2x": 2.0, "10x": 10.0}
PURCHASE_REQUEST_TYPE = "PURCHASE"
# Fired when a purchase begins: a purchase that never ends within the run (the shop is too slow)
# is counted as lost, not silently dropped.
PURCHASE_STARTED_REQUEST_TYPE = "PURCHASE STARTED"


class PurchaseFailed(Exception):
    """One step of a purchase failed for good (after any retries it was entitled to)."""


class RetryableConflict(Exception):
    """The shop asked us to come back later (HTTP 409 with Retry-After)."""

    def __init__(self, retry_after, message=""):
        super().__init__(message or f"409, retry after {retry_after}s")
        self.retry_after = retry_after


def parse_retry_after(value, now=None):
    """Seconds to wait from a Retry-After header (delta-seconds or HTTP-date), capped."""
    if value is None or str(value).strip() == "":
        return DEFAULT_RETRY_AFTER
    value = str(value).strip()
    try:
        seconds = float(value)
    except ValueError:
        try:
            when = email.utils.parsedate_to_datetime(value).timestamp()
        except (TypeError, ValueError):
            return DEFAULT_RETRY_AFTER
        seconds = when - (time.time() if now is None else now)
    return min(max(seconds, 0.0), MAX_RETRY_AFTER)


def raise_for_conflict(status, headers):
    """Turn a 409 answer into RetryableConflict; anything else passes through."""
    if status == RETRYABLE_STATUS:
        raise RetryableConflict(parse_retry_after(headers.get("Retry-After")))


class PurchaseResult:
    def __init__(self, success, tries, elapsed, error=None):
        self.success = success
        self.tries = tries
        self.elapsed = elapsed
        self.error = error


def attempt_purchase(purchase, max_tries=3, sleep=time.sleep, clock=time.monotonic):
    """Run ``purchase()`` up to ``max_tries`` times, honouring Retry-After between tries.

    Only RetryableConflict is retried; any other exception ends the attempt. The
    caller reports exactly one outcome per call, so a purchase that needed three
    tries counts once, and a lost one is lost once.
    """
    if max_tries < 1:
        raise ValueError("max_tries must be at least 1")
    start = clock()
    error = None
    for tries in range(1, max_tries + 1):
        try:
            purchase()
        except RetryableConflict as exc:
            error = exc
            if tries < max_tries:
                sleep(exc.retry_after)
            continue
        except Exception as exc:  # pylint: disable=broad-except  # every failure is a lost sale
            return PurchaseResult(False, tries, clock() - start, exc)
        return PurchaseResult(True, tries, clock() - start)
    return PurchaseResult(False, max_tries, clock() - start, error)


def arrival_plan(rate_per_minute, pacing_seconds):
    """Users and their pacing that produce ``rate_per_minute`` purchase arrivals.

    Each user starts one purchase every ``pacing`` seconds (Locust's constant_pacing),
    so users = rate/60 * pacing, rounded up, and the pacing is stretched to keep the
    rate exact. Users are spawned over one pacing period so arrivals are even from
    the start.
    """
    if rate_per_minute <= 0 or pacing_seconds <= 0:
        raise ValueError("rate and pacing must be positive")
    users = max(1, math.ceil(rate_per_minute / 60.0 * pacing_seconds))
    pacing = users * 60.0 / rate_per_minute
    return {"users": users, "pacing": pacing, "spawn_rate": users / pacing}


class FormParser(html.parser.HTMLParser):
    """Collects every <form>: its action, method and the values a browser would submit."""

    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.forms = []
        self._form = None
        self._select = None
        self._textarea = None

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag == "form":
            self._form = {"action": attrs.get("action", ""), "method": attrs.get("method", "get").lower(),
                          "fields": {}, "choices": {}, "required": set()}
            self.forms.append(self._form)
            return
        if self._form is None:
            return
        name = attrs.get("name")
        if name and "required" in attrs:
            self._form["required"].add(name)
        if tag == "input" and name:
            kind = attrs.get("type", "text").lower()
            if kind in ("checkbox", "radio"):
                self._form["choices"].setdefault(name, []).append(attrs.get("value", "on"))
                if "checked" in attrs:
                    self._form["fields"][name] = attrs.get("value", "on")
            elif kind not in ("submit", "button", "image", "file"):
                self._form["fields"][name] = attrs.get("value", "")
        elif tag == "select" and name:
            self._select = name
            self._form["fields"].setdefault(name, "")
        elif tag == "option" and self._select:
            value = attrs.get("value", "")
            self._form["choices"].setdefault(self._select, []).append(value)
            if "selected" in attrs:
                self._form["fields"][self._select] = value
        elif tag == "textarea" and name:
            self._textarea = name
            self._form["fields"][name] = ""

    def handle_data(self, data):
        if self._form is not None and self._textarea:
            self._form["fields"][self._textarea] += data

    def handle_endtag(self, tag):
        if tag == "form":
            self._form = None
        elif tag == "select":
            self._select = None
        elif tag == "textarea":
            self._textarea = None


def parse_forms(text):
    parser = FormParser()
    parser.feed(text)
    return parser.forms


def find_form(forms, action_part):
    for form in forms:
        if action_part in form["action"]:
            return form
    raise PurchaseFailed(f"no form posting to *{action_part}* on the page")


def find_form_with_field(forms, field):
    for form in forms:
        if form["method"] == "post" and (field in form["fields"] or field in form["choices"]):
            return form
    raise PurchaseFailed(f"no form with a *{field}* field on the page")


def find_self_post_form(forms, path_part):
    """The form that posts back to the current page (no action, or an action naming the step)."""
    for form in forms:
        if form["method"] == "post" and (form["action"] in ("", "#") or path_part in form["action"]):
            return form
    raise PurchaseFailed(f"no form posting to the {path_part} step")


def fill_questions(form, buyer_email, given_name="Load", family_name="Tester"):
    """The checkout questions a buyer answers: e-mail (and its repetition), names,
    required checkboxes (terms). Everything else keeps the page's defaults."""
    data = dict(form["fields"])
    for name in data:
        if name == "email" or name.endswith("email_repeat") or name.endswith("-email"):
            data[name] = buyer_email
        elif "name_parts_0" in name:
            data[name] = f"{given_name} {family_name}"
        elif "name_parts" in name and data[name] == "":
            data[name] = given_name if name.endswith("_1") else family_name
    for name in form["required"]:
        if name in form["choices"] and not data.get(name):
            data[name] = form["choices"][name][0]
    return data


def static_assets(text):
    """Stylesheets and scripts a browser loads with the page (same-site /static/ paths)."""
    class Assets(html.parser.HTMLParser):
        def __init__(self):
            super().__init__()
            self.urls = []

        def handle_starttag(self, tag, attrs):
            attrs = dict(attrs)
            url = attrs.get("src") if tag == "script" else attrs.get("href") if tag == "link" else None
            if url and "/static/" in url and url not in self.urls:
                self.urls.append(url)

    parser = Assets()
    parser.feed(text)
    return parser.urls


def read_stats(text):
    return list(csv.DictReader(io.StringIO(text)))


def _number(value):
    try:
        return float(value)
    except (TypeError, ValueError):
        return 0.0


def verdict(stats_csv, duration_s, target_rate, slo_success_ratio, slo_p95_ms):
    """Pass/fail for one run from <prefix>_final_stats.csv (Locust's stats when it quit).

    Success ratio: successful purchases / purchases started. A purchase ends in one PURCHASE
    row entry whatever its retries; one started but not ended when the run stopped counts as
    lost (unfinished). Latency: the p95 of every HTTP request name must stay within the SLO
    (the PURCHASE row spans retries and is reported only).
    """
    rows = read_stats(stats_csv)

    def count(request_type, column):
        return sum(int(_number(r[column])) for r in rows if r.get("Type") == request_type)

    purchases = [r for r in rows if r.get("Type") == PURCHASE_REQUEST_TYPE]
    http_rows = [r for r in rows if r.get("Type") not in (PURCHASE_REQUEST_TYPE, PURCHASE_STARTED_REQUEST_TYPE, "")
                 and r.get("Name") != "Aggregated"]
    ended = count(PURCHASE_REQUEST_TYPE, "Request Count")
    failures = count(PURCHASE_REQUEST_TYPE, "Failure Count")
    attempts = max(count(PURCHASE_STARTED_REQUEST_TYPE, "Request Count"), ended)
    ok = ended - failures
    ratio = ok / attempts if attempts else 0.0
    worst = max(http_rows, key=lambda r: _number(r.get("95%")), default=None)
    p95 = _number(worst.get("95%")) if worst else 0.0
    breaches = []
    if attempts == 0:
        breaches.append("no purchase was started")
    if ratio < slo_success_ratio:
        breaches.append(f"success ratio {ratio:.4f} < {slo_success_ratio}")
    if p95 > slo_p95_ms:
        breaches.append(f"p95 of {worst['Type']} {worst['Name']} = {p95:.0f} ms > {slo_p95_ms} ms")
    return {
        "passed": not breaches,
        "breaches": breaches,
        "attempts": attempts,
        "purchases": ok,
        "lost": attempts - ok,
        "unfinished": attempts - ended,
        "success_ratio": round(ratio, 4),
        "purchases_per_min": round(ok * 60.0 / duration_s, 1) if duration_s else 0.0,
        "offered_per_min": target_rate,
        "worst_request_p95_ms": p95,
        "worst_request": f"{worst['Type']} {worst['Name']}" if worst else None,
        "purchase_p50_ms": max((_number(r.get("50%")) for r in purchases), default=0.0),
        "purchase_p95_ms": max((_number(r.get("95%")) for r in purchases), default=0.0),
    }
