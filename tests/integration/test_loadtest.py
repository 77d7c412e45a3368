"""loadtest.yml end to end: validation before anything starts, a real run, a sell-out check.

Bad input and unreachable/missing shops run in seconds against loopback (a stdlib HTTP
server plays a shop without the event). The real runs start a bare pretix of their own
(benchmarks/ha_vs_bare.sh up, prefix bxtest-lt) and are marked slow: pretix's migrate
alone takes 2-7 minutes on a loaded 2-core machine.
"""
import glob
import http.server
import json
import os
import subprocess
import threading

import docker
import pytest

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
PREFIX = "bxtest-lt"


def playbook(*extra, check=False):
    env = dict(os.environ, ANSIBLE_FORCE_COLOR="0", PATH=os.path.join(REPO_ROOT, ".venv", "bin") + ":" + os.environ["PATH"])
    args = ["ansible-playbook", "loadtest.yml", "-e", f"loadtest_name_prefix={PREFIX}", "-e", "loadtest_master_port=15557"]
    for item in extra:
        args += ["-e", item]
    if check:
        args.append("--check")
    return subprocess.run(args, cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=1800)


def load_containers():
    client = docker.from_env()
    try:
        return [c.name for c in client.containers.list(all=True) if c.name.startswith(PREFIX + "-")]
    finally:
        client.close()


class NoEventShop(http.server.BaseHTTPRequestHandler):
    def log_message(self, *args):
        pass

    def do_GET(self):  # noqa: N802
        self.send_response(404)
        self.send_header("Content-Length", "0")
        self.end_headers()


@pytest.fixture
def shop_without_event():
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), NoEventShop)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


@pytest.mark.parametrize("extra, message", [
    (["loadtest_profile=3x"], "Bad load-test settings"),
    (["loadtest_scenario=browser"], "value of loadtest_scenario must be one of: web, api"),
    (["loadtest_mode=soak"], "value of loadtest_mode must be one of"),
    (["loadtest_target_url=https://127.0.0.1/shop"], "Bad load-test settings"),
    (["loadtest_scenario=api"], "loadtest_api_token is empty"),
    (["loadtest_mode=sellout"], "loadtest_api_token is empty"),
    (["loadtest_target_url=http://127.0.0.1:1"], "The shop is unreachable"),
])
def test_bad_input_fails_before_anything_starts(extra, message):
    result = playbook(*extra)
    assert result.returncode != 0
    assert message in result.stdout, result.stdout[-3000:]
    assert load_containers() == []


def test_missing_event_fails_before_anything_starts(shop_without_event):
    result = playbook(f"loadtest_target_url={shop_without_event}", "loadtest_event=nosuchevent")
    assert result.returncode != 0
    assert "no such event" in result.stdout, result.stdout[-3000:]
    assert load_containers() == []


@pytest.fixture(scope="module")
def bare_pretix():
    env = dict(os.environ, BENCH_PREFIX=PREFIX + "-bare", BENCH_PORT="18081")
    script = os.path.join(REPO_ROOT, "benchmarks", "ha_vs_bare.sh")
    try:
        out = subprocess.run([script, "up"], env=env, capture_output=True, text=True, check=True, timeout=1500).stdout
        yield dict(pair.split("=", 1) for pair in out.split("\n")[-2].split())
    finally:
        subprocess.run([script, "down"], env=env, check=False, timeout=300)


def summary_of(reports):
    [path] = glob.glob(os.path.join(reports, "*", "summary.json"))
    with open(path, encoding="utf-8") as handle:
        return json.load(handle)


@pytest.mark.slow
@pytest.mark.parametrize("scenario", ["web", "api"])
def test_profile_run_reports_and_cleans_up(bare_pretix, scenario, tmp_path):
    result = playbook(f"loadtest_target_url={bare_pretix['BARE_URL']}", f"loadtest_organizer={bare_pretix['BARE_ORGANIZER']}",
                      f"loadtest_event={bare_pretix['BARE_EVENT']}", f"loadtest_api_token={bare_pretix['BARE_TOKEN']}",
                      f"loadtest_scenario={scenario}", "loadtest_target_rate=60", "loadtest_profile=0.5x",
                      "loadtest_duration=30", "loadtest_workers=1", "loadtest_fail_on_breach=false",
                      f"loadtest_reports_dir={tmp_path}")
    assert result.returncode == 0, result.stdout[-3000:]
    summary = summary_of(str(tmp_path))
    [run] = summary["runs"]
    assert run["attempts"] >= 5 and run["purchases"] >= 1, run
    assert os.path.exists(os.path.join(os.path.dirname(glob.glob(str(tmp_path / "*" / "summary.json"))[0]),
                                       f"{scenario}-0.5x.html"))
    assert "verdict:" in result.stdout
    assert load_containers() == []


@pytest.mark.slow
def test_sellout_sells_exactly_the_quota(bare_pretix, tmp_path):
    result = playbook(f"loadtest_target_url={bare_pretix['BARE_URL']}", f"loadtest_organizer={bare_pretix['BARE_ORGANIZER']}",
                      f"loadtest_event={bare_pretix['BARE_EVENT']}", f"loadtest_api_token={bare_pretix['BARE_TOKEN']}",
                      "loadtest_mode=sellout", "loadtest_scenario=api", "loadtest_sellout_quota=50",
                      "loadtest_sellout_rate=300", "loadtest_workers=1", f"loadtest_reports_dir={tmp_path}")
    assert result.returncode == 0, result.stdout[-3000:]
    sellout = summary_of(str(tmp_path))["sellout"]
    assert int(sellout["sold"]) == 50
    assert int(sellout["purchases_reported"]) == 50
    assert int(sellout["attempts"]) > 50
    assert load_containers() == []
