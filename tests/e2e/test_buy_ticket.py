"""End to end: buy a ticket from the deployed stack the way a browser without JavaScript does.

Runs against a stack deployed by playbooks/app.yml (nginx on this host's ports 80/443, the demo
event created by the pretix_bootstrap module). Nothing is deployed or removed here; the stack is
shared. Settings (environment variables):

  BOXOFFICE_E2E_URL          shop base URL (default https://localhost: pretix only answers to the
                             host name of its [pretix] url, so 127.0.0.1 would get a 400)
  BOXOFFICE_E2E_EVENT        organiser/event path (default demo/concert)
  BOXOFFICE_SECRETS_DIR      vault files of the secrets role (default ~/.config/boxoffice/secrets/local)
  BOXOFFICE_VAULT_PASSWORD   vault password file (default $ANSIBLE_VAULT_PASSWORD_FILE, else
                             ~/.config/boxoffice/vault-password)
  BOXOFFICE_E2E_DB_HOST      PostgreSQL endpoint on boxoffice_db (default pgpool)
  BOXOFFICE_E2E_PSQL_SERVICE Swarm service whose image provides psql (default pg-0)
  BOXOFFICE_E2E_DB_SECRET    secrets-role name of pretix's database password (default pg_pretix_password)

Run: pytest tests/e2e -v
"""

import html.parser
import os
import re
import subprocess
import time
import urllib.parse
import uuid

import docker
import pytest
import requests
import urllib3

BASE_URL = os.environ.get('BOXOFFICE_E2E_URL', 'https://localhost').rstrip('/')
EVENT_PATH = os.environ.get('BOXOFFICE_E2E_EVENT', 'demo/concert').strip('/')
SECRETS_DIR = os.path.expanduser(os.environ.get('BOXOFFICE_SECRETS_DIR', '~/.config/boxoffice/secrets/local'))
VAULT_PASSWORD_FILE = os.path.expanduser(os.environ.get(
    'BOXOFFICE_VAULT_PASSWORD', os.environ.get('ANSIBLE_VAULT_PASSWORD_FILE', '~/.config/boxoffice/vault-password')))
DB_HOST = os.environ.get('BOXOFFICE_E2E_DB_HOST', 'pgpool')
PSQL_SERVICE = os.environ.get('BOXOFFICE_E2E_PSQL_SERVICE', 'pg-0')
DB_SECRET = os.environ.get('BOXOFFICE_E2E_DB_SECRET', 'pg_pretix_password')
ASYNC_WAIT_SECONDS = 120

# The nginx role's self-signed certificate (SAN localhost, 127.0.0.1); with BOXOFFICE_E2E_CA
# unset and no such file, the certificate is not verified.
TLS_CA = os.path.expanduser(os.environ.get('BOXOFFICE_E2E_CA', '~/.config/boxoffice/tls/local/cert.pem'))


class FormParser(html.parser.HTMLParser):
    """Collects every <form> with its action, method and fields as a browser would submit them."""

    def __init__(self):
        super().__init__()
        self.forms = []
        self._select = None
        self._textarea = None

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if tag == 'form':
            self.forms.append({'action': a.get('action', ''), 'method': a.get('method', 'get').lower(),
                               'fields': [], 'radios': {}, 'checkboxes': [], 'selects': {}})
            return
        if not self.forms or 'name' not in a:
            return
        form = self.forms[-1]
        if tag == 'input':
            kind = a.get('type', 'text').lower()
            if kind == 'radio':
                form['radios'].setdefault(a['name'], []).append((a.get('value', 'on'), 'checked' in a))
            elif kind == 'checkbox':
                form['checkboxes'].append((a['name'], a.get('value', 'on'), 'checked' in a,
                                           'required' in a))
            elif kind not in ('submit', 'button', 'file', 'image', 'reset'):
                form['fields'].append([a['name'], a.get('value', ''), kind, 'required' in a])
        elif tag == 'select':
            self._select = a['name']
            form['selects'][a['name']] = []
        elif tag == 'option' and self._select:
            form['selects'][self._select].append((a.get('value', ''), 'selected' in a))
        elif tag == 'textarea':
            form['fields'].append([a['name'], '', 'textarea', 'required' in a])

    def handle_endtag(self, tag):
        if tag == 'select':
            self._select = None


def parse_forms(page):
    parser = FormParser()
    parser.feed(page)
    return parser.forms


def form_data(form, fill):
    """The submission of a form: defaults, then `fill(name, kind)` for empty text fields."""
    data = {}
    for name, value, kind, _required in form['fields']:
        data[name] = value or fill(name, kind) or ''
    for name, options in form['radios'].items():
        chosen = [v for v, checked in options if checked]
        data[name] = chosen[0] if chosen else fill(name, 'radio') or options[0][0]
    for name, value, checked, required in form['checkboxes']:
        if checked or required:
            data[name] = value
    for name, options in form['selects'].items():
        chosen = [v for v, selected in options if selected]
        data[name] = chosen[0] if chosen else (options[0][0] if options else '')
    return data


def post_form(session, page_url, form, data):
    """Submit like a browser (Referer set, CSRF token from the form) and follow pretix's async waits."""
    url = urllib.parse.urljoin(page_url, form['action'] or page_url)
    response = session.post(url, data=data, headers={'Referer': page_url}, timeout=60)
    return follow_async(session, response)


def follow_async(session, response):
    """pretix runs cart and order changes as Celery tasks; without JavaScript the browser reloads
    the waiting page (?async_id=...) until the task is done and pretix redirects onwards."""
    deadline = time.time() + ASYNC_WAIT_SECONDS
    while 'async_id=' in response.url and time.time() < deadline:
        time.sleep(1)
        response = session.get(response.url, timeout=60)
    assert 'async_id=' not in response.url, 'pretix task did not finish: %s' % response.url
    return response


def find_form(forms, predicate, what):
    matching = [f for f in forms if predicate(f)]
    assert matching, 'no %s form on the page (forms: %s)' % (
        what, [(f['action'], [x[0] for x in f['fields']]) for f in forms])
    return matching[0]


def field_names(form):
    return [f[0] for f in form['fields']] + list(form['radios']) + [c[0] for c in form['checkboxes']]


def read_vault(name):
    """Decrypt <SECRETS_DIR>/<name>.vault with the controller's vault password (secrets role)."""
    path = os.path.join(SECRETS_DIR, name + '.vault')
    if not os.path.exists(path):
        pytest.fail('%s missing: deploy the stack first (ansible-playbook playbooks/app.yml).' % path)
    venv_bin = os.path.dirname(os.path.realpath(__import__('sys').executable))
    vault = os.path.join(venv_bin, 'ansible-vault')
    out = subprocess.run([vault if os.path.exists(vault) else 'ansible-vault', 'view',
                          '--vault-password-file', VAULT_PASSWORD_FILE, path],
                         check=True, capture_output=True, text=True)
    return out.stdout.strip()


@pytest.fixture(scope='module')
def session():
    s = requests.Session()
    # No proxy from the environment (traffic stays on loopback), and the environment's CA
    # bundle must not replace the stack's own certificate.
    s.trust_env = False
    s.verify = TLS_CA if os.path.exists(TLS_CA) else False
    if not s.verify:
        urllib3.disable_warnings(urllib3.exceptions.InsecureRequestWarning)
    s.headers['User-Agent'] = 'boxoffice-e2e (like a browser without JavaScript)'
    try:
        s.get(BASE_URL + '/healthcheck/', timeout=10)
    except requests.ConnectionError as exc:
        pytest.fail('The shop at %s is not reachable (%s): deploy it with playbooks/app.yml.' % (BASE_URL, exc))
    yield s
    s.close()


def test_http_redirects_to_https(session):
    http_url = 'http://' + urllib.parse.urlsplit(BASE_URL).netloc + '/'
    response = session.get(http_url, allow_redirects=False, timeout=10)
    assert response.status_code == 301
    assert response.headers['Location'].startswith('https://')


def test_healthcheck_through_nginx(session):
    response = session.get(BASE_URL + '/healthcheck/', timeout=30)
    assert response.status_code == 200, response.text[:500]
    assert response.url.startswith('https://')


def test_static_files_from_nginx_with_long_cache(session):
    page = session.get('%s/%s/' % (BASE_URL, EVENT_PATH), timeout=30).text
    assets = re.findall(r'(?:src|href)="(/static/[^"]+\.(?:js|css))"', page)
    assert assets, 'the event page references no static files'
    response = session.get(BASE_URL + assets[0], timeout=30)
    assert response.status_code == 200
    assert 'max-age=31536000' in response.headers.get('Cache-Control', ''), response.headers
    # Served by nginx from the image, not proxied to gunicorn (which would add Django headers).
    assert 'X-Frame-Options' not in response.headers


def test_protected_media_is_denied(session):
    response = session.get(BASE_URL + '/media/invoices/anything.pdf', timeout=30)
    assert response.status_code == 404


def test_buy_ticket(session):
    event_url = '%s/%s/' % (BASE_URL, EVENT_PATH)
    page = session.get(event_url, timeout=30)
    assert page.status_code == 200, page.text[:500]
    assert any('csrftoken' in c.name for c in session.cookies), 'pretix set no CSRF cookie'

    # 1. Add one ticket of the first product to the cart.
    forms = parse_forms(page.text)
    cart_form = find_form(forms, lambda f: any(n.startswith('item_') for n in field_names(f)), 'add-to-cart')
    data = form_data(cart_form, lambda name, kind: None)
    item_field = next(n for n in data if n.startswith('item_'))
    data[item_field] = '1'
    response = post_form(session, page.url, cart_form, data)
    assert response.status_code == 200, response.text[:500]

    # 2. Checkout; pretix redirects to its first unfinished step (questions).
    response = session.get(event_url + 'checkout/start', timeout=30)
    assert response.status_code == 200 and '/checkout/questions/' in response.url, response.url
    email = 'e2e-%s@example.org' % uuid.uuid4().hex[:12]

    def fill(name, kind):
        if 'email' in name:
            return email
        if 'name_parts_0' in name or name.endswith('given_name'):
            return 'Erika'
        if 'name_parts' in name or 'name' in name:
            return 'Mustermann'
        return None

    questions = find_form(parse_forms(response.text), lambda f: f['method'] == 'post'
                          and any('email' in n for n in field_names(f)), 'questions')
    response = post_form(session, response.url, questions, form_data(questions, fill))
    assert '/checkout/payment/' in response.url, 'questions not accepted: %s' % response.url

    # 3. Payment: manual.
    payment = find_form(parse_forms(response.text), lambda f: 'payment' in f['radios'], 'payment')
    assert 'manual' in [v for v, _ in payment['radios']['payment']], payment['radios']
    data = form_data(payment, lambda name, kind: None)
    data['payment'] = 'manual'
    response = post_form(session, response.url, payment, data)
    assert '/checkout/confirm/' in response.url, 'payment not accepted: %s' % response.url

    # 4. Confirm; pretix places the order in a Celery task and redirects to the order page.
    confirm = find_form(parse_forms(response.text), lambda f: f['method'] == 'post'
                        and 'cart/' not in f['action'] and 'csrfmiddlewaretoken' in field_names(f), 'confirm')
    response = post_form(session, response.url, confirm, form_data(confirm, lambda n, k: None))
    match = re.search(r'/order/([A-Z0-9]+)/([a-z0-9]+)/', response.url)
    assert match, 'no order page after confirming: %s' % response.url
    code = match.group(1)

    # 5. The order exists in the REST API (token from the bootstrap) ...
    organizer, event = EVENT_PATH.split('/')
    api = session.get('%s/api/v1/organizers/%s/events/%s/orders/%s/' % (BASE_URL, organizer, event, code),
                      headers={'Authorization': 'Token ' + read_vault('pretix_api_token')}, timeout=30)
    assert api.status_code == 200, api.text[:500]
    order = api.json()
    assert order['email'] == email
    assert order['payment_provider'] == 'manual'
    assert order['status'] == 'n'  # pending until the organiser marks it paid
    assert len(order['positions']) == 1

    # 6. ... and in PostgreSQL, read through the same endpoint pretix uses.
    assert psql("SELECT email FROM pretixbase_order WHERE code = '%s'" % code) == email


def psql(query):
    client = docker.from_env()
    try:
        image = client.services.get(PSQL_SERVICE).attrs['Spec']['TaskTemplate']['ContainerSpec']['Image']
    except docker.errors.NotFound:
        pytest.fail('No Swarm service %s to take a psql image from (set BOXOFFICE_E2E_PSQL_SERVICE).'
                    % PSQL_SERVICE)
    name = 'bxtest-e2e-psql-%s' % uuid.uuid4().hex[:8]
    try:
        output = client.containers.run(
            image, ['psql', '-h', DB_HOST, '-U', 'pretix', '-d', 'pretix', '-tAc', query],
            entrypoint=[], name=name, network='boxoffice_db', remove=False, user='nobody',
            environment={'PGPASSWORD': read_vault(DB_SECRET), 'PGCONNECT_TIMEOUT': '10'})
    finally:
        try:
            client.containers.get(name).remove(force=True)
        except docker.errors.NotFound:
            pass
    return output.decode().strip()
