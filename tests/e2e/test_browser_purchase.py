"""End to end in a real browser: Debian's chromium, driven by Playwright, buys a ticket through nginx.

test_buy_ticket.py buys the way a browser without JavaScript does; this test runs pretix's own
JavaScript (the cart's and the order's asynchronous tasks, the checkout forms) behind the edge's
TLS settings and security headers, so that a header or cipher change which breaks the shop's
scripts fails CI. Every console error, uncaught page error and Content-Security-Policy violation
(reported by the page, or a request blocked by CSP) fails the test.

The browser is /usr/bin/chromium (Debian's package `chromium`, installed by scripts/bootstrap.sh;
`playwright install` is never run). It trusts the stack's self-signed certificate (TLS_CA of
test_buy_ticket.py) through an NSS database of its own in a throwaway HOME (certutil, from
libnss3-tools), so TLS is verified as a customer's browser verifies it; only when that
certificate file does not exist are certificate errors ignored, as test_buy_ticket.py does.

Settings are test_buy_ticket.py's (BOXOFFICE_E2E_URL, BOXOFFICE_E2E_EVENT, BOXOFFICE_E2E_CA, ...),
and BOXOFFICE_E2E_CHROMIUM (default /usr/bin/chromium). The order page's full-page screenshot is
written to reports/browser-order.png (reports/browser-failure.png when the purchase fails).

Run: pytest tests/e2e/test_browser_purchase.py -v
"""

import json
import os
import re
import shutil
import subprocess
import uuid

import pytest
from playwright.sync_api import sync_playwright

import test_buy_ticket as shop
from test_buy_ticket import session  # noqa: F401  pylint: disable=unused-import

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
REPORTS = os.path.join(REPO_ROOT, 'reports')
CHROMIUM = os.environ.get('BOXOFFICE_E2E_CHROMIUM', '/usr/bin/chromium')
CHROMIUM_ARGS = ['--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
                 '--disable-background-networking', '--disable-component-update', '--disable-sync',
                 # The shop is on loopback: no proxy from the environment (as test_buy_ticket.py).
                 '--no-proxy-server']
TIMEOUT_MS = 30000
# pretix places the order in a Celery task; its page polls until the task is done.
ASYNC_TIMEOUT_MS = shop.ASYNC_WAIT_SECONDS * 1000
NETWORK_CHANGED = 'net::ERR_NETWORK_CHANGED'
PURCHASE_ATTEMPTS = 3

# Reports every CSP violation of every document to the test (the page may not log them all).
CSP_LISTENER = """
document.addEventListener('securitypolicyviolation', (e) => {
  window.boxofficeCspViolation(JSON.stringify({
    document: e.documentURI, directive: e.violatedDirective, blocked: e.blockedURI,
    disposition: e.disposition, source: e.sourceFile, line: e.lineNumber, sample: e.sample}));
});
"""


@pytest.fixture
def browser_home(tmp_path):
    """(HOME, trusted) for chromium: a HOME whose NSS database (~/.pki/nssdb, where chromium on
    Linux reads locally trusted certificates) trusts the stack's certificate; trusted is False
    when there is no certificate file (then certificate errors are ignored)."""
    if not os.path.exists(CHROMIUM):
        pytest.fail('%s is missing: install Debian\'s chromium (apt-get install chromium; '
                    'scripts/bootstrap.sh does this), or set BOXOFFICE_E2E_CHROMIUM.' % CHROMIUM)
    home = tmp_path / 'home'
    nssdb = home / '.pki' / 'nssdb'
    nssdb.mkdir(parents=True)
    if not os.path.exists(shop.TLS_CA):
        return str(home), False
    certutil = shutil.which('certutil')
    if certutil is None:
        pytest.fail('certutil is missing: install libnss3-tools (scripts/bootstrap.sh does this).')
    for args in (['-N', '--empty-password'],
                 # P: trusted as the server's own certificate (self-signed, no CA of its own).
                 ['-A', '-n', 'boxoffice-e2e', '-t', 'P,,', '-i', shop.TLS_CA]):
        subprocess.run([certutil, '-d', 'sql:%s' % nssdb] + args, check=True, capture_output=True, text=True)
    return str(home), True


def fill_questions(page, email):
    """Fill every empty field the questions step requires, the way test_buy_ticket.py fills them."""
    page.fill('input[name="email"]', email)
    if page.locator('input[name="email_repeat"]').count():
        page.fill('input[name="email_repeat"]', email)
    for field in page.locator('form[method="post"] :is(input, textarea)[required]:visible').all():
        name = field.get_attribute('name') or ''
        kind = (field.get_attribute('type') or 'text').lower()
        if kind == 'checkbox':
            field.check()
        elif not field.input_value():
            if 'email' in name:
                field.fill(email)
            elif 'name_parts_0' in name or name.endswith('given_name'):
                field.fill('Erika')
            elif 'name' in name:
                field.fill('Mustermann')
            else:
                field.fill('e2e')
    for select in page.locator('form[method="post"] select[required]:visible').all():
        if not select.input_value():
            select.select_option(index=1)


def buy(page, event_url, email):
    """Event page, cart, questions, payment, confirmation; returns the order page's response URL."""
    response = page.goto(event_url)
    assert response.ok, 'the event page %s answers HTTP %d' % (event_url, response.status)
    quantity = page.locator('input[name^="item_"]').first
    if (quantity.get_attribute('type') or '').lower() == 'checkbox':
        quantity.check()
    else:
        quantity.fill('1')
    quantity.locator('xpath=ancestor::form').locator('button[type="submit"]').first.click()
    # pretix adds to the cart in an asynchronous task (its waiting page polls until it is done) and
    # returns to the event page, which now shows the cart and its checkout button.
    checkout = page.locator('form[action*="/checkout/start"] button[type="submit"]').first
    checkout.wait_for(state='visible', timeout=ASYNC_TIMEOUT_MS)
    checkout.click()
    page.wait_for_url(re.compile(r'/checkout/questions/'))

    fill_questions(page, email)
    page.locator('form[method="post"] button[type="submit"].btn-primary').last.click()
    page.wait_for_url(re.compile(r'/checkout/payment/'))

    page.locator('input[name="payment"][value="manual"]').check(force=True)
    page.locator('form[method="post"] button[type="submit"].btn-primary').last.click()
    page.wait_for_url(re.compile(r'/checkout/confirm/'))

    page.locator('form[method="post"] button[type="submit"].btn-primary').last.click()
    page.wait_for_url(re.compile(r'/order/[A-Z0-9]+/[a-z0-9]+/'), timeout=ASYNC_TIMEOUT_MS)
    page.wait_for_load_state('load')
    return page.url


def attempt_purchase(browser, trusted, event_url, email):
    """One purchase in a fresh browser context. Returns (order URL or None when the flow stopped,
    the order page's text, the problems seen, requests cut by a network change, the failure)."""
    problems, network_changes = [], []

    def on_request_failed(request):
        failure = request.failure or ''
        if NETWORK_CHANGED in failure:
            network_changes.append(request.url)
        elif 'csp' in failure.lower():
            problems.append(('request blocked by CSP', request.url, failure))

    context = browser.new_context(ignore_https_errors=not trusted, locale='en-US',
                                  viewport={'width': 1280, 'height': 900})
    try:
        context.set_default_timeout(TIMEOUT_MS)
        context.expose_binding('boxofficeCspViolation',
                               lambda source, report: problems.append(('csp violation', json.loads(report))))
        context.add_init_script(CSP_LISTENER)
        page = context.new_page()
        page.on('console', lambda msg: msg.type == 'error' and problems.append(
            ('console error', msg.text, msg.location.get('url'))))
        page.on('pageerror', lambda exc: problems.append(('page error', str(exc))))
        page.on('requestfailed', on_request_failed)
        try:
            order_url = buy(page, event_url, email)
        except Exception as exc:  # pylint: disable=broad-exception-caught  # reported by the caller
            page.screenshot(path=os.path.join(REPORTS, 'browser-failure.png'), full_page=True)
            return None, None, problems, network_changes, 'stopped at %s: %s' % (page.url, exc)
        page.screenshot(path=os.path.join(REPORTS, 'browser-order.png'), full_page=True)
        return order_url, page.inner_text('body'), problems, network_changes, None
    finally:
        context.close()


def purchase_in_chromium(home, trusted, event_url):
    """Buy in chromium; returns the buyer's email, the order page's URL and text, and every problem seen.

    Chromium cuts its open connections, even to loopback, with ERR_NETWORK_CHANGED whenever an
    interface of the host comes or goes, which Docker does for every container it starts. An attempt
    that went wrong after such a cut is started again (with a new buyer); anything else fails at once.
    """
    os.makedirs(REPORTS, exist_ok=True)
    cut = []
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS,
                                             env=dict(os.environ, HOME=home))
        try:
            for number in range(1, PURCHASE_ATTEMPTS + 1):
                email = 'e2e-browser-%s@example.org' % uuid.uuid4().hex[:12]
                order_url, text, problems, network_changes, failure = attempt_purchase(
                    browser, trusted, event_url, email)
                if network_changes and (failure or problems) and number < PURCHASE_ATTEMPTS:
                    print('attempt %d cut by a network change (%s): %s; starting again'
                          % (number, network_changes, failure or problems))
                    cut.append(network_changes)
                    continue
                if failure is not None:
                    pytest.fail('The purchase %s\nproblems seen: %s\nrequests cut by network changes: %s\n'
                                'screenshot: reports/browser-failure.png'
                                % (failure, problems, cut + [network_changes]))
                return email, order_url, text, problems
        finally:
            browser.close()
    raise AssertionError('unreachable')


def test_buy_ticket_in_chromium(session, browser_home):  # noqa: F811  pylint: disable=redefined-outer-name
    """One purchase through the edge in chromium, with no console, page or CSP error on the way."""
    home, trusted = browser_home
    email, order_url, text, problems = purchase_in_chromium(home, trusted, '%s/%s/' % (shop.BASE_URL, shop.EVENT_PATH))

    assert not problems, 'pretix\'s JavaScript ran into trouble in chromium: %s' % problems
    code = re.search(r'/order/([A-Z0-9]+)/', order_url).group(1)
    assert code in text, 'the order page does not show the order code %s' % code
    assert re.search(r'order has been (placed|received|processed) successfully', text, re.I), text[:2000]
    # Manual payment: the order waits for the organiser to mark it paid.
    assert re.search(r'pending|await.{0,20}payment', text, re.I), text[:2000]

    # The order exists in pretix's REST API, as in test_buy_ticket.py (which also looks in PostgreSQL:
    # the same order table, so a psql container here would only add seconds).
    organizer, event = shop.EVENT_PATH.split('/')
    api = session.get('%s/api/v1/organizers/%s/events/%s/orders/%s/' % (shop.BASE_URL, organizer, event, code),
                      headers={'Authorization': 'Token ' + shop.read_vault('pretix_api_token')}, timeout=30)
    assert api.status_code == 200, api.text[:500]
    order = api.json()
    assert (order['email'], order['payment_provider'], order['status'], len(order['positions'])) == \
        (email, 'manual', 'n', 1), order
