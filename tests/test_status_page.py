"""The status page (GET /): what it shows, its auth (header, or a page session opened by the
login form: tests/test_page_sessions.py), and how it renders in a real headless Chromium through a real gunicorn."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import uuid
from html.parser import HTMLParser

import pytest
import requests

from tinytown.api import create_app
from tinytown.config import load_config
from tinytown.core.chart import Sample, chart_svg
from tinytown.core.liveness import Beat
from tinytown.missions.start import start_mission
from tinytown.store import Town

from .api_support import keyed_app, keyed_tables, keyed_town, keyring  # noqa: F401 - fixtures
from .conftest import free_port, write_town
from .townhall_support import Townhall

HOUR_MS = 3600 * 1000


def populate(town: Town) -> dict:
    """Two live agents (one working), a stopped one, a mission half done, a failed task and
    six hours of samples."""
    alice = town.agents.register("alice", "claude")
    bob = town.agents.register("bob", "claude")
    old = town.agents.register("old-timer", "claude")
    town.agents.set_state(old.id, "kill")
    ghost = town.agents.register("ghost", "claude")  # working, but its heartbeat stopped long ago
    town.agents.update(ghost.id, "work", beat=Beat(5, age_ms=3_600_000))
    town.agents.set_state(alice.id, "ready")
    busy = town.tasks.add("Refactor the exporter")
    town.agents.update(bob.id, "work", set_fields={"current_task": busy.id})
    mission, _ = start_mission(
        town,
        items=[{"key": "a", "title": "First"}, {"key": "b", "title": "Second"}],
        title="release 1.2",
    )
    item = town.missions.work_items(mission.id)[0]
    town.missions.update_work_item(mission.id, item["id"], status="done", artifacts=None)
    broken = town.tasks.add("Break the build")
    town.tasks.fail(broken.id, "exit 3: tests failed\ntraceback …")
    now_ms = town.samples.now_ms()
    for k in range(12):
        town.samples.record(k % 4, 1, 2, at_ms=now_ms - (6 * HOUR_MS) + k * HOUR_MS // 2)
    return {"alice": alice, "bob": bob, "mission": mission, "broken": broken}


class Text(HTMLParser):
    def __init__(self):
        super().__init__()
        self.parts: list[str] = []

    def handle_data(self, data):
        self.parts.append(data)


def text_of(html: str) -> str:
    parser = Text()
    parser.feed(html)
    return " ".join(" ".join(parser.parts).split())


def test_the_page_needs_town_read_by_header_or_login_cookie(keyed_app, keyed_town, keyring):
    populate(keyed_town)
    client = keyed_app.test_client()
    resp = client.get("/")
    assert resp.status_code == 302 and resp.headers["Location"].endswith("/login")
    form = client.get("/login")
    assert form.status_code == 200 and 'name="key"' in form.get_data(as_text=True)

    bad = client.post("/login", data={"key": "not-a-key"})
    assert bad.status_code == 401 and "not valid" in bad.get_data(as_text=True)
    assert "Set-Cookie" not in bad.headers

    read_key = keyring["read"][0]
    ok = client.post("/login", data={"key": read_key})
    assert ok.status_code == 303 and ok.headers["Location"].endswith("/")
    cookie = ok.headers["Set-Cookie"]
    # Lax: a ping's link opened from a chat site finds the page (POSTs from other sites are
    # refused by their Origin, below)
    assert "HttpOnly" in cookie and "SameSite=Lax" in cookie and "Secure" not in cookie
    page = client.get("/")
    assert page.status_code == 200 and page.mimetype == "text/html"
    assert "alice" in text_of(page.get_data(as_text=True))

    out = client.post("/logout")
    assert out.status_code == 303 and "tinytown_session=;" in out.headers["Set-Cookie"]
    assert client.get("/").status_code == 302

    header = keyed_app.test_client().get("/", headers={"Authorization": f"Bearer {read_key}"})
    assert header.status_code == 200


def test_a_key_without_town_read_cannot_log_in(keyed_app, keyring):
    resp = keyed_app.test_client().post("/login", data={"key": keyring["write"][0]})
    assert resp.status_code == 401 and "lacks the town.read scope" in resp.get_data(as_text=True)


def test_the_page_shows_agents_queue_missions_failures_events_and_the_chart(
    keyed_app, keyed_town, keyring
):
    made = populate(keyed_town)
    client = keyed_app.test_client()
    html = client.get("/", headers={"X-API-Key": keyring["read"][0]}).get_data(as_text=True)
    text = text_of(html)
    assert '<meta http-equiv="refresh" content="10">' in html
    assert re.search(r"alice\s+Idle", text) and re.search(
        r"bob\s+Working\s+Refactor the exporter", text
    )
    assert "old-timer" not in text and "1 stopped agent(s) not shown" in text
    assert re.search(r"ghost\s+Working \(dead\)", text) and re.search(r"Dead agents\s*1", text)
    assert re.search(r"Queued\s*1\b", text)  # the busy task (no dispatcher here: items wait)
    assert "release 1.2" in text and "1/2 done" in text and 'aria-valuenow="50"' in html
    assert "Break the build" in text and "exit 3: tests failed" in text
    assert "traceback" not in text  # the first line of a reason only
    assert "task_failed" in text  # recent events
    broken = made["broken"].id  # an event about a task links to its page, as the task's rows do
    events = html[html.index('<table id="events">') :]
    assert re.search(rf'<a href="/tasks/{broken}">task {broken[:8]} \w+ -&gt; failed', events)
    assert html.count("<polyline") == 2 and "no samples yet" not in html


def test_every_page_forbids_scripts_frames_and_foreign_forms(keyed_app, keyed_town, keyring):
    made = populate(keyed_town)
    client = keyed_app.test_client()
    key = {"X-API-Key": keyring["read"][0]}
    for path, headers in (
        ("/", key),
        (f"/tasks/{made['broken'].id}", key),
        ("/tasks/no-such-task", key),
        ("/login", {}),
    ):
        resp = client.get(path, headers=headers)
        assert resp.status_code in (200, 404) and resp.mimetype == "text/html", path
        policy = resp.headers["Content-Security-Policy"]
        assert "default-src 'none'" in policy and "frame-ancestors 'none'" in policy, path
        assert "script-src" not in policy  # (none: default-src 'none' forbids every script)
        assert resp.headers["X-Frame-Options"] == "DENY", path
        assert resp.headers["X-Content-Type-Options"] == "nosniff", path


def test_the_chart_draws_both_lines_within_its_box_and_says_when_empty():
    now = 10 * HOUR_MS
    samples = [Sample(now - k * HOUR_MS // 4, k, 1, 3) for k in range(24)]
    svg = chart_svg(samples, now_ms=now, hours=6, width=600, height=160)
    coords = [tuple(map(float, p.split(","))) for p in re.findall(r"[\d.]+,[\d.]+", svg)]
    assert svg.count("<polyline") == 2 and coords
    assert all(0 <= x <= 600 and 0 <= y <= 160 for x, y in coords)
    assert ">23<" in svg  # the scale's top: the largest value shown
    assert "no samples yet" in chart_svg([], now_ms=now)
    assert "<polyline" not in chart_svg([Sample(now - 7 * HOUR_MS, 1, 1, 1)], now_ms=now)


def test_the_chart_holds_each_value_until_the_next_sample_and_until_now():
    """Townhall skips the samples of quiet intervals: a value holds, it does not slope."""
    now = 10 * HOUR_MS
    svg = chart_svg(
        [Sample(now - 4 * HOUR_MS, 2, 0, 1), Sample(now - 2 * HOUR_MS, 6, 0, 1)],
        now_ms=now,
        hours=6,
        width=634,
        height=160,
    )
    queue = re.search(r'<polyline points="([^"]+)"[^>]*><title>tasks queued', svg).group(1)
    points = [tuple(map(float, p.split(","))) for p in queue.split()]
    (x1, y1), (x2, y2), (x3, y3), (x4, y4) = points  # start, step across, step up, on to now
    assert x2 == x3 and y2 == y1 and y3 < y1  # 2 held until the next sample, then 6
    assert y4 == y3 and x4 == 634 - 8  # 6 held until now, the right edge (margin 8)


def chromium() -> str | None:
    return shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.fixture
def browser():
    path = chromium()
    if path is None:
        if os.environ.get("TINYTOWN_REQUIRE_CHROMIUM") == "1":
            pytest.fail("TINYTOWN_REQUIRE_CHROMIUM=1 but no chromium on PATH", pytrace=False)
        pytest.skip("no chromium on PATH (apt-get install chromium; .ci/run does)")
    return path


def run_chromium(path: str, tmp_path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [
            path,
            "--headless",
            "--no-sandbox",  # CI runs as root
            "--disable-gpu",
            "--disable-dev-shm-usage",
            f"--user-data-dir={tmp_path / 'chromium-profile'}",
            "--window-size=412,1600",  # a phone's width
            *args,
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_the_page_renders_in_headless_chromium_on_a_phone_sized_screen(
    tmp_path, redis_url, browser
):
    port = free_port()
    root = write_town(tmp_path, redis_url, tables=f"[townhall]\nrest_port = {port}\nworkers = 1\n")
    town = Town.connect(load_config(root, env={}))
    made = populate(town)
    townhall = Townhall(root, port)
    url = f"{townhall.url}/"
    shot = tmp_path / "status-page.png"
    try:
        townhall.wait_serving()
        assert requests.get(url, timeout=10).status_code == 200
        dom = run_chromium(browser, tmp_path, "--dump-dom", url)
        assert dom.returncode == 0, dom.stderr[-2000:]
        taken = run_chromium(browser, tmp_path, f"--screenshot={shot}", url)
        assert taken.returncode == 0, taken.stderr[-2000:]
        mission_url = f"{townhall.url}/missions/{made['mission'].id}"
        mission_dom = run_chromium(browser, tmp_path, "--dump-dom", mission_url)
        assert mission_dom.returncode == 0, mission_dom.stderr[-2000:]
    finally:
        townhall.stop()
        town.close()
    rendered = dom.stdout
    assert "alice" in rendered and "bob" in rendered  # (ghost: recovered by the keeper here)
    assert 'aria-valuenow="50"' in rendered and "1/2 done" in rendered
    assert rendered.count("<polyline") == 2
    assert shot.exists() and shot.stat().st_size > 5_000
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "release 1.2" in mission_dom.stdout and "First" in mission_dom.stdout
    assert 'id="items"' in mission_dom.stdout and "1/2 done" in mission_dom.stdout
    print(f"status page screenshot: {shot}")


def test_a_tasks_page_shows_its_output_and_cost(keyed_app, keyed_town, keyring):
    task = keyed_town.tasks.add("Write the exporter")
    keyed_town.output.append(task.id, ["step 1: parse\n", "step 2: <write> & done\n"])
    client = keyed_app.test_client()
    headers = {"X-API-Key": keyring["read"][0]}
    html = client.get(f"/tasks/{task.id}", headers=headers).get_data(as_text=True)
    assert "Write the exporter" in html and '<meta http-equiv="refresh"' in html  # live
    assert "step 1: parse" in html and "step 2: &lt;write&gt; &amp; done" in html  # escaped
    keyed_town.tasks.fail(task.id, "exit 2")
    done = client.get(f"/tasks/{task.id}", headers=headers).get_data(as_text=True)
    assert '<meta http-equiv="refresh"' not in done and "Failed" in done
    assert client.get(f"/tasks/{task.id}").status_code == 302  # no key
    assert client.get("/tasks/not-a-task", headers=headers).status_code == 404


def test_a_missions_page_shows_its_items_tasks_agents_and_log(keyed_app, keyed_town, keyring):
    from tinytown.missions.dispatcher import Dispatcher

    mission, _ = start_mission(
        keyed_town,
        items=[
            {"key": "api", "title": "Build the <b>API</b>"},
            {"key": "docs", "title": "Write the docs", "depends_on": ["api"]},
        ],
        title='ship "1.2" <script>alert(1)</script>',
    )
    assert Dispatcher(keyed_town).step(mission.id)  # the first item gets its task
    api = next(i for i in keyed_town.missions.work_items(mission.id) if i["key"] == "api")
    assert api["task_id"]
    worker = keyed_town.agents.register("builder", "claude")
    keyed_town.tasks.assign(api["task_id"], worker.id)
    keyed_town.missions.log(mission.id, "asked for help: the <build> is red")
    client = keyed_app.test_client()
    headers = {"X-API-Key": keyring["read"][0]}

    home = client.get("/", headers=headers).get_data(as_text=True)
    assert f'<a href="/missions/{mission.id}">' in home  # the town links to the mission

    resp = client.get(f"/missions/{mission.id}", headers=headers)
    html, text = resp.get_data(as_text=True), text_of(resp.get_data(as_text=True))
    assert resp.status_code == 200 and resp.mimetype == "text/html"
    assert "<script>" not in html and "&lt;script&gt;" in html  # the title is escaped
    assert '<meta http-equiv="refresh" content="10">' in html  # live: it reloads
    assert re.search(r"api\s+Build the <b>API</b>", text) and "&lt;b&gt;API" in html
    items = html[html.index('<table id="items">') :]
    assert f'<a class="mono" href="/tasks/{api["task_id"]}">{api["task_id"][:8]}</a>' in items
    assert re.search(r"docs\s+Write the docs\s+pending", text)
    assert "0/2 done" in text and 'aria-valuenow="0"' in html
    assert "asked for help: the <build> is red" in text  # the log, escaped in the HTML
    assert "&lt;build&gt;" in html
    assert resp.headers["X-Frame-Options"] == "DENY"

    task = client.get(f"/tasks/{api['task_id']}", headers=headers).get_data(as_text=True)
    assert f'href="/missions/{mission.id}"' in task  # and a mission's task links back

    keyed_town.missions.stop(mission.id, force=True)  # failed: nothing left to reload for
    ended = client.get(f"/missions/{mission.id}", headers=headers).get_data(as_text=True)
    assert '<meta http-equiv="refresh"' not in ended and "failed" in text_of(ended)

    assert client.get(f"/missions/{mission.id}").status_code == 302  # no key: log in first
    for missing in (str(uuid.uuid4()), mission.id[:8], "not-a-mission", "x" * 300):
        gone = client.get(f"/missions/{missing}", headers=headers)
        assert gone.status_code == 404 and "Not found" in gone.get_data(as_text=True), missing


def prefixed_app(tmp_path, redis_url, keyring):
    """An api_key town whose people reach it at https://town.example.com/tt (a proxy strips
    the prefix)."""
    root = tmp_path / "prefixed"
    root.mkdir()
    tables = keyed_tables(keyring, "\n[townhall]\npublic_url = 'https://town.example.com/tt/'\n")
    write_town(root, redis_url, tables=tables)
    town = Town.connect(load_config(root, env={}))
    return town, create_app(town.config, town=town)


def test_a_link_from_a_ping_leads_through_the_log_in_to_its_page(keyed_app, keyed_town, keyring):
    mission, _ = start_mission(keyed_town, items=[{"key": "a", "title": "First"}], title="m")
    client = keyed_app.test_client()
    page = f"/missions/{mission.id}"
    asked = client.get(page)
    assert asked.status_code == 302 and asked.headers["Location"] == f"/login?next={page}"
    form = client.get(f"/login?next={page}").get_data(as_text=True)
    assert f'name="next" value="{page}"' in form
    done = client.post("/login", data={"key": keyring["read"][0], "next": page})
    assert done.status_code == 303 and done.headers["Location"] == page
    assert "First" in text_of(client.get(page).get_data(as_text=True))
    # only the pages themselves: never another site, another route or a path trick
    for elsewhere in ("//evil.example", "https://evil.example/", "/v1/keys", "/\\evil", "/x"):
        back = client.post("/login", data={"key": keyring["read"][0], "next": elsewhere})
        assert back.headers["Location"] == "/", elsewhere
        assert 'value="/"' in client.get(f"/login?next={elsewhere}").get_data(as_text=True)


def test_forms_posted_from_another_site_are_refused(keyed_app, keyring):
    """Logging a visitor in with the attacker's key, or out, from a page on another site."""
    client = keyed_app.test_client()
    key = {"key": keyring["read"][0]}
    for headers in (
        {"Origin": "https://evil.example"},
        {"Origin": "null"},
        {"Sec-Fetch-Site": "cross-site"},
        {"Origin": "http://localhost", "Sec-Fetch-Site": "same-site"},
    ):
        for path, data in (("/login", key), ("/logout", {})):
            resp = client.post(path, data=data, headers=headers)
            assert resp.status_code == 403, (path, headers)
            assert "Set-Cookie" not in resp.headers and "another site" in resp.get_data(True)
    same = {"Origin": "http://localhost", "Sec-Fetch-Site": "same-origin"}
    assert client.post("/login", data=key, headers=same).status_code == 303
    assert client.post("/login", data=key).status_code == 303  # (curl: no Origin)


def test_pages_are_kept_in_no_cache_and_logging_out_clears_it(keyed_app, keyed_town, keyring):
    made = populate(keyed_town)
    client = keyed_app.test_client()
    key = {"X-API-Key": keyring["read"][0]}
    for path in ("/", f"/tasks/{made['broken'].id}", f"/missions/{made['mission'].id}", "/login"):
        assert client.get(path, headers=key).headers["Cache-Control"] == "no-store", path
    assert client.post("/logout").headers["Clear-Site-Data"] == '"cache"'


def test_behind_a_proxy_links_keep_the_public_urls_path_and_the_cookie_is_secure(
    tmp_path, redis_url, keyring
):
    town, app = prefixed_app(tmp_path, redis_url, keyring)
    made = populate(town)
    client = app.test_client()
    mission = made["mission"].id
    assert client.get("/").headers["Location"] == "/tt/login"
    assert client.get(f"/missions/{mission}").headers["Location"] == (
        f"/tt/login?next=/missions/{mission}"
    )
    assert 'action="/tt/login"' in client.get("/login").get_data(as_text=True)
    proxied = {"Origin": "https://town.example.com"}  # the page's origin, as the browser saw it
    done = client.post(
        "/login", data={"key": keyring["read"][0], "next": f"/missions/{mission}"}, headers=proxied
    )
    assert done.status_code == 303 and done.headers["Location"] == f"/tt/missions/{mission}"
    cookie = done.headers["Set-Cookie"]  # TLS ends at the proxy: the cookie is still Secure
    assert "Secure" in cookie and "Path=/tt" in cookie
    html = client.get("/", headers={"X-API-Key": keyring["read"][0]}).get_data(as_text=True)
    assert f'href="/tt/missions/{mission}"' in html and 'action="/tt/logout"' in html
    assert 'href="/missions/' not in html and 'href="/tasks/' not in html
    assert client.post("/logout", headers=proxied).headers["Location"] == "/tt/login"
    town.close()


def test_pages_drop_terminal_escapes_and_bidi_overrides(keyed_app, keyed_town, keyring):
    """Text from outside cannot show reversed, recolour a terminal-styled page or hide itself."""
    task = keyed_town.tasks.add("Fix \u202egnp.exe\u202c the build")
    keyed_town.output.append(task.id, ["\x1b[31mred\x1b[0m line\x07\n\x1b]0;title\x07next\tcol\n"])
    keyed_town.tasks.fail(task.id, "exit 1\n\u2066hidden\u2069 \x1b[2Jcleared")
    client = keyed_app.test_client()
    key = {"X-API-Key": keyring["read"][0]}
    pages = [client.get(p, headers=key).get_data(as_text=True) for p in ("/", f"/tasks/{task.id}")]
    for html in pages:
        assert not any(c in html for c in "\u202e\u202c\u2066\u2069\x1b\x07"), html[:200]
    assert "red line\nnext\tcol" in pages[1] and "hidden cleared" in pages[1]


def test_a_short_id_is_told_what_the_pages_take(keyed_app, keyed_town, keyring):
    mission, _ = start_mission(keyed_town, items=[{"key": "a", "title": "A"}], title="m")
    client = keyed_app.test_client()
    key = {"X-API-Key": keyring["read"][0]}
    short = client.get(f"/missions/{mission.id[:8]}", headers=key)
    assert short.status_code == 404
    words = text_of(short.get_data(as_text=True))
    assert "the full id" in words and f"tt mission status {mission.id[:8]}" in words
    gone = str(uuid.uuid4())
    missing = text_of(client.get(f"/tasks/{gone}", headers=key).get_data(as_text=True))
    assert f"There is no task {gone} in this town" in missing
