#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright (c) boxoffice.pretix engineers
# Apache License 2.0 (see https://www.apache.org/licenses/LICENSE-2.0)

from __future__ import annotations

DOCUMENTATION = r'''
---
module: pretix_bootstrap
short_description: Replace pretix's default admin password and create a demo organiser, event, product, quota and API token
version_added: 0.1.0
author:
  - boxoffice.pretix engineers (!UNKNOWN)
description:
  - Runs a Django snippet inside a running, healthy container of a pretix web service on the
    Docker host the module runs against (found through the Docker SDK by the Swarm service label),
    so it uses pretix's own models, configuration and database connection.
  - Sets the password of O(admin_email) (pretix creates C(admin@localhost) with password C(admin)
    on its first migration) to O(admin_password) when the account is created or still has that
    initial password, so a password changed in the control panel is kept (see O(update_password)).
  - When O(organizer) is given, makes sure the organiser, a team with every permission that the
    admin belongs to, and optionally one API token named O(api_token_name) with the value
    O(api_token) exist; when O(event)
    is given as well, makes sure the event exists, is live, accepts the manual payment method,
    asks for attendee names, and sells O(product) from a quota of O(quota_size).
  - Everything is compared first and only written when different, so a second run reports
    C(changed=false). Nothing that already exists is deleted.
  - In check mode the same snippet runs inside a database transaction that is rolled back.
extends_documentation_fragment:
  - boxoffice.pretix.swarm
  - boxoffice.pretix.swarm.attributes
attributes:
  check_mode:
    support: full
    details:
      - The snippet runs and its database transaction is rolled back; RV(changes) lists what would change.
  diff_mode:
    support: none
    details:
      - What changed is listed in RV(changes); the values are passwords and tokens.
  idempotent:
    support: full
options:
  service:
    description:
      - Swarm service whose running task container is used (must run on this Docker host).
      - On a manager only containers of the service's current image qualify; a worker cannot read
        the service, so there the newest healthy task container is used.
    type: str
    default: pretix-web
  wait_timeout:
    description:
      - Seconds to wait for a healthy container of O(service) on the Docker host.
      - The snippet itself may run for as long as O(timeout), the Docker API timeout, allows
        between two pieces of its output.
    type: int
    default: 300
  admin_email:
    description: E-mail (login) of the pretix administrator.
    type: str
    default: admin@localhost
  admin_password:
    description: Password the administrator must have. Never logged.
    type: str
    required: true
  update_password:
    description:
      - V(on_create) sets O(admin_password) only when the account is created or still has pretix's
        initial password C(admin); V(always) also replaces a password changed in the control panel.
    type: str
    choices: [always, on_create]
    default: on_create
  organizer:
    description: Organiser to create; omit to only set the admin password.
    type: dict
    suboptions:
      slug:
        description: Short name used in URLs (letters, digits, dashes).
        type: str
        required: true
      name:
        description: Display name.
        type: str
        required: true
  event:
    description: Event of O(organizer) to create. Requires O(organizer).
    type: dict
    suboptions:
      slug:
        description: Short name used in URLs.
        type: str
        required: true
      name:
        description: Display name.
        type: str
        required: true
      currency:
        description: Three-letter currency code.
        type: str
        default: EUR
      date_from:
        description: Start as an ISO 8601 date-time; only used when the event is created. Defaults to one year from now.
        type: str
  product:
    description: Admission product sold in O(event).
    type: dict
    default: {}
    suboptions:
      name:
        description: Display name; also the key by which an existing product is found.
        type: str
        default: Admission
      price:
        description: Price in the event's currency.
        type: str
        default: "10.00"
  quota_size:
    description: Size of the quota the product is sold from.
    type: int
    default: 10000
  api_token:
    description:
      - Value of the API token named O(api_token_name) of the organiser's team (for example kept by
        the boxoffice.pretix.secrets role). Never logged.
      - The token is found by its name. It is created when the team has none of that name, and its
        value is set to O(api_token) when it differs, so there is one token per name and never a
        new one per run. More than one active token of that name is reported as a warning.
    type: str
  api_token_name:
    description: Name of the API token; use one name per purpose.
    type: str
    default: boxoffice
  update_check:
    description: Whether pretix may contact pretix.eu to check for updates (off for air-gapped sites).
    type: bool
    default: false
'''

EXAMPLES = r'''
- name: Replace the default admin password and create the demo shop
  boxoffice.pretix.pretix_bootstrap:
    admin_password: "{{ secrets_values.pretix_admin_password }}"
    organizer:
      slug: demo
      name: Demo organiser
    event:
      slug: concert
      name: Demo concert
    product:
      name: Admission
      price: "25.00"
    quota_size: 10000
    api_token: "{{ secrets_values.pretix_api_token }}"
    api_token_name: boxoffice
'''

RETURN = r'''
changes:
  description: What was (or, in check mode, would be) created or changed.
  returned: always
  type: list
  elements: str
  sample: ["admin password", "organizer demo", "event demo/concert", "quota Admission"]
container:
  description: Name of the container the snippet ran in.
  returned: always
  type: str
  sample: pretix-web.1.kq4s9bz0mv2tq6d0l3qzj8x0m
api_tokens_named:
  description: Active API tokens of the team named O(api_token_name) afterwards (1 unless duplicates were made earlier).
  returned: when O(api_token) is given
  type: int
  sample: 1
event_url:
  description: Public path of the event's shop, relative to pretix's URL.
  returned: when O(event) is given
  type: str
  sample: /demo/concert/
'''

import json
import time

from ansible_collections.boxoffice.pretix.plugins.module_utils.swarm_services import (
    DockerException,
    NotFound,
    SwarmError,
    get_client,
    swarm_module,
)

RESULT_MARKER = 'BOXOFFICE-BOOTSTRAP-RESULT:'

# Executed by pretix's own Python inside the container. Parameters arrive in the
# environment of the exec (not on the command line, where `ps` would show the password).
SNIPPET = r'''
import datetime, decimal, json, os
import django
django.setup()
from django.db import transaction
from django.utils.timezone import now
from django_scopes import scopes_disabled
from pretix.base.models import Event, Item, Organizer, Quota, Team, User
from pretix.base.models.organizer import TeamAPIToken
from pretix.base.settings import GlobalSettingsObject

p = json.loads(os.environ["BOOTSTRAP_PARAMS"])
changes = []
result = {}


def ensure_attrs(obj, label, **wanted):
    diff = {k: v for k, v in wanted.items() if getattr(obj, k) != v}
    if diff:
        for k, v in diff.items():
            setattr(obj, k, v)
        obj.save()
        changes.append("%s: %s" % (label, ", ".join(sorted(diff))))


def ensure_settings(obj, label, **wanted):
    diff = [k for k, v in wanted.items() if obj.settings.get(k, as_type=type(v)) != v]
    for k in diff:
        obj.settings.set(k, wanted[k])
    if diff:
        changes.append("%s settings: %s" % (label, ", ".join(sorted(diff))))


with scopes_disabled(), transaction.atomic():
    user = User.objects.filter(email__iexact=p["admin_email"]).first()
    if user is None:
        user = User.objects.create_user(p["admin_email"], p["admin_password"], is_staff=True)
        changes.append("admin %s created" % p["admin_email"])
    elif (p["update_password"] == "always" or user.check_password("admin")) \
            and not user.check_password(p["admin_password"]):
        user.set_password(p["admin_password"])
        user.save()
        changes.append("admin password")

    global_settings = GlobalSettingsObject()
    ensure_settings(global_settings, "global", update_check_perform=p["update_check"])

    org_p = p.get("organizer")
    if org_p:
        org = Organizer.objects.filter(slug=org_p["slug"]).first()
        if org is None:
            org = Organizer.objects.create(slug=org_p["slug"], name=org_p["name"])
            changes.append("organizer %s" % org.slug)
        ensure_attrs(org, "organizer", name=org_p["name"])

        team = Team.objects.filter(organizer=org, name="Administrators").first()
        if team is None:
            team = Team.objects.create(organizer=org, name="Administrators")
            changes.append("team Administrators")
        ensure_attrs(team, "team", all_events=True, all_event_permissions=True,
                     all_organizer_permissions=True)
        if not team.members.filter(pk=user.pk).exists():
            team.members.add(user)
            changes.append("team member %s" % user.email)

        if p.get("api_token"):
            named = list(TeamAPIToken.objects.filter(team=team, name=p["api_token_name"], active=True)
                         .order_by("pk"))
            if not named:
                named.append(TeamAPIToken.objects.create(team=team, name=p["api_token_name"],
                                                         token=p["api_token"]))
                changes.append("api token %s" % p["api_token_name"])
            elif not any(t.token == p["api_token"] for t in named):
                ensure_attrs(named[0], "api token %s" % p["api_token_name"], token=p["api_token"])
            result["api_tokens_named"] = len(named)

        ev_p = p.get("event")
        if ev_p:
            event = Event.objects.filter(organizer=org, slug=ev_p["slug"]).first()
            if event is None:
                date_from = (datetime.datetime.fromisoformat(ev_p["date_from"]) if ev_p.get("date_from")
                             else now() + datetime.timedelta(days=365))
                if date_from.tzinfo is None:
                    date_from = date_from.replace(tzinfo=datetime.timezone.utc)
                event = Event.objects.create(organizer=org, slug=ev_p["slug"], name=ev_p["name"],
                                             currency=ev_p["currency"], date_from=date_from)
                event.set_defaults()
                changes.append("event %s/%s" % (org.slug, event.slug))
            # The manual payment provider only offers itself when its plugin is active.
            plugins = [x for x in (event.plugins or "").split(",") if x]
            if "pretix.plugins.manualpayment" not in plugins:
                ensure_attrs(event, "event", plugins=",".join(plugins + ["pretix.plugins.manualpayment"]))
            ensure_settings(event, "event", payment_manual__enabled=True,
                            attendee_names_asked=True, attendee_names_required=True)

            prod_p = p["product"]
            price = decimal.Decimal(prod_p["price"])
            item = Item.objects.filter(event=event, internal_name=prod_p["name"]).first()
            if item is None:
                item = Item.objects.create(event=event, name=prod_p["name"], internal_name=prod_p["name"],
                                           default_price=price, admission=True, active=True)
                changes.append("product %s" % prod_p["name"])
            ensure_attrs(item, "product", default_price=price, active=True)

            quota = Quota.objects.filter(event=event, name=prod_p["name"]).first()
            if quota is None:
                quota = Quota.objects.create(event=event, name=prod_p["name"], size=p["quota_size"])
                changes.append("quota %s" % prod_p["name"])
            ensure_attrs(quota, "quota", size=p["quota_size"])
            if not quota.items.filter(pk=item.pk).exists():
                quota.items.add(item)
                changes.append("quota %s items" % prod_p["name"])

            # Going live is last: pretix refuses to sell from an event without quotas.
            ensure_attrs(event, "event", live=True)
            result["event_url"] = "/%s/%s/" % (org.slug, event.slug)

    if p["check_mode"]:
        transaction.set_rollback(True)

result["changes"] = changes
print("''' + RESULT_MARKER + r'''" + json.dumps(result))
'''


def find_container(client, service, deadline):
    """Return a healthy running task container of the service's current spec on this host.

    During a start-first rolling update the old task is still healthy for a while and is then
    killed; running the snippet there would die with it, so only containers of the image the
    service currently asks for qualify, newest first.
    """
    filters = {'label': 'com.docker.swarm.service.name=%s' % service, 'status': 'running'}
    # A worker cannot read service specs; there any healthy task container qualifies (the pretix
    # role has waited for its rollout to finish before the bootstrap runs).
    on_manager = client.info().get('Swarm', {}).get('ControlAvailable', False)
    wanted = None
    while True:
        containers = client.containers.list(filters=filters)
        if on_manager:
            try:
                wanted = client.services.get(service).attrs['Spec']['TaskTemplate']['ContainerSpec']['Image']
            except NotFound:
                wanted = None
            containers = [c for c in containers if c.attrs['Config']['Image'] == wanted]
        candidates = sorted(
            (c for c in containers
             if c.attrs.get('State', {}).get('Health', {}).get('Status') in (None, 'healthy')),
            key=lambda c: c.attrs['Created'], reverse=True)
        if candidates:
            return candidates[0]
        if time.time() > deadline:
            raise RuntimeError(
                'No healthy running container of service %s (image %s) on this Docker host after '
                'waiting (found %d running). Is the service deployed and are its tasks scheduled '
                'on this node?' % (service, wanted, len(containers)))
        time.sleep(3)


def main():
    module = swarm_module(
        dict(
            service=dict(type='str', default='pretix-web'),
            wait_timeout=dict(type='int', default=300),
            admin_email=dict(type='str', default='admin@localhost'),
            admin_password=dict(type='str', required=True, no_log=True),
            update_password=dict(type='str', default='on_create', choices=['always', 'on_create']),
            organizer=dict(type='dict', options=dict(
                slug=dict(type='str', required=True),
                name=dict(type='str', required=True),
            )),
            event=dict(type='dict', options=dict(
                slug=dict(type='str', required=True),
                name=dict(type='str', required=True),
                currency=dict(type='str', default='EUR'),
                date_from=dict(type='str'),
            )),
            product=dict(type='dict', default={}, options=dict(
                name=dict(type='str', default='Admission'),
                price=dict(type='str', default='10.00'),
            )),
            quota_size=dict(type='int', default=10000),
            api_token=dict(type='str', no_log=True),
            api_token_name=dict(type='str', default='boxoffice'),
            update_check=dict(type='bool', default=False),
        ),
        wait_options=False,
        required_by=dict(event=['organizer'], api_token=['organizer']),
    )

    p = module.params
    if len(p['admin_password']) < 8:
        module.fail_json(msg='admin_password must have at least 8 characters.')
    if p['quota_size'] < 1:
        module.fail_json(msg='quota_size must be at least 1 (got %d).' % p['quota_size'])
    if p['api_token'] is not None and not 16 <= len(p['api_token']) <= 64:
        module.fail_json(msg='api_token must have 16 to 64 characters (pretix stores at most 64).')

    params = dict(
        admin_email=p['admin_email'], admin_password=p['admin_password'],
        update_password=p['update_password'],
        organizer=p['organizer'], event=p['event'], product=p['product'],
        quota_size=p['quota_size'], api_token=p['api_token'], api_token_name=p['api_token_name'],
        update_check=p['update_check'],
        check_mode=module.check_mode,
    )
    try:
        client = get_client(p)
        container = find_container(client, p['service'], time.time() + p['wait_timeout'])
        exit_code, output = container.exec_run(
            ['python', '-c', SNIPPET], environment={'BOOTSTRAP_PARAMS': json.dumps(params)})
    except (DockerException, RuntimeError, SwarmError) as exc:
        module.fail_json(msg=str(exc))

    text = output.decode('utf-8', 'replace')
    lines = [line for line in text.splitlines() if line.startswith(RESULT_MARKER)]
    if exit_code != 0 or not lines:
        module.fail_json(msg='The bootstrap snippet failed in container %s (exit code %s).'
                         % (container.name, exit_code), output=text[-4000:])
    result = json.loads(lines[-1][len(RESULT_MARKER):])
    if result.get('api_tokens_named', 1) > 1:
        module.warn('The team of organiser %s has %d active API tokens named %s; the others than the '
                    'one with the stored value are left alone: deactivate them in the control panel.'
                    % (p['organizer']['slug'], result['api_tokens_named'], p['api_token_name']))
    module.exit_json(changed=bool(result['changes']), container=container.name, **result)


if __name__ == '__main__':
    main()
