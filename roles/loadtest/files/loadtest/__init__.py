"""boxoffice.pretix load test: Locust user classes (locustfile.py) and their logic (core.py)."""
