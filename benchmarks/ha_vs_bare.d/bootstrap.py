# Run inside a pretix container (python -m pretix shell -c "$(cat bootstrap.py)"): an
# organiser, an event with one product, its quota and manual payment, and an API token of the
# organiser, printed last. Environment: BENCH_ORGANIZER and BENCH_EVENT (slugs; an existing
# event is reused as it is), BENCH_QUOTA (quota size).
import datetime
import os

from django.utils.timezone import now
from django_scopes import scopes_disabled

from pretix.base.models import Event, Organizer, Team

organizer_slug = os.environ.get("BENCH_ORGANIZER", "bench")
event_slug = os.environ.get("BENCH_EVENT", "bench")
with scopes_disabled():
    organizer, _ = Organizer.objects.get_or_create(slug=organizer_slug, defaults={"name": organizer_slug})
    event = Event.objects.filter(organizer=organizer, slug=event_slug).first()
    if event is None:
        event = Event.objects.create(organizer=organizer, slug=event_slug, name=event_slug, currency="EUR",
                                     date_from=now() + datetime.timedelta(days=30), live=True)
        event.set_defaults()
        # The manual payment provider only offers itself when its plugin is active.
        event.plugins = ",".join([p for p in (event.plugins or "").split(",") if p] + ["pretix.plugins.manualpayment"])
        event.save()
        event.settings.set("payment_manual__enabled", True)
        item = event.items.create(name="Ticket", default_price=10, admission=True, active=True)
        quota = event.quotas.create(name="Tickets", size=int(os.environ.get("BENCH_QUOTA", "1000000")))
        quota.items.add(item)
    team, _ = Team.objects.get_or_create(organizer=organizer, name="loadtest", defaults={
        "all_events": True, "all_event_permissions": True, "all_organizer_permissions": True})
    token = team.tokens.filter(active=True).first() or team.tokens.create(name="loadtest")
    print("TOKEN=" + token.token)
