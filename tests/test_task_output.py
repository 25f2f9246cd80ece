"""A task's output from anywhere, in the store and over REST: chunks whose ids are byte offsets,
the byte bound (trimmed output reads as ``truncated``), the end entry and the expiry, when a
reader may stop (``finished``), the bounded long-poll, and the route's 400/404s and scope. The
worker's side, with real workers: ``tests/test_task_output_worker.py``."""

from __future__ import annotations

import os
import threading
import time

import pytest

from tinytown.api.longpoll import WAIT_HEADER, WAITERS
from tinytown.core import defaults
from tinytown.store.output import TaskOutput, page_of
from tinytown.worker.output_stream import OutputStream, complete_utf8

from .api_support import anon, app, client, keyed_app, keyed_town, keyring  # noqa: F401
from .worker_support import poll

PROMPT_SECS = 1.0  # what "answers at once" means here, on two shared CPUs


def log_url(task_id: str, **query) -> str:
    params = "&".join(f"{k}={v}" for k, v in query.items())
    return f"/v1/tasks/{task_id}/log" + (f"?{params}" if params else "")


def texts(body: dict) -> str:
    return "".join(c["text"] for c in body["chunks"])


# --- the store -----------------------------------------------------------------------------------


def test_chunk_ids_are_where_their_text_ends_in_bytes(town):
    task = town.tasks.add("write things")
    ids = town.output.append(task.id, ["hello\n", "wörld\n"])
    assert ids == ["6-0", "13-0"]  # ö is two bytes
    page = town.output.page(task.id)
    assert page.chunks == [("6-0", "hello\n"), ("13-0", "wörld\n")]
    assert (page.next_after, page.truncated, page.finished) == ("13-0", False, False)
    assert town.output.page(task.id, "6-0").chunks == [("13-0", "wörld\n")]
    assert town.output.page(task.id, "$").chunks == []
    assert town.output.page(task.id, "$").next_after == "13-0"


def test_past_the_byte_bound_older_chunks_are_trimmed_and_read_as_truncated(town):
    task = town.tasks.add("talk a lot")
    small = TaskOutput(town.redis, town.keys, max_bytes=100)
    for i in range(30):
        small.append(task.id, [f"line {i:04d}\n"])  # 10 bytes each: 300 in all
    entries = town.redis.xrange(town.keys.task_output(task.id))
    kept = sum(len(f["text"].encode()) for _, f in entries)
    assert 100 <= kept <= 100 + 10  # the bound, plus at most one chunk
    page = town.output.page(task.id)
    assert page.truncated and page.chunks[-1][1] == "line 0029\n"
    assert page.chunks[0][0] == entries[0][0]
    follower = town.output.page(task.id, page.chunks[-2][0])  # kept up: nothing missed
    assert follower.chunks == [page.chunks[-1]] and not follower.truncated


def test_bytes_lost_before_a_chunk_read_as_a_gap_from_before_it(town):
    task = town.tasks.add("flaky")
    town.output.append(task.id, ["a\n"])
    town.output.append(task.id, ["[output lost: 50 bytes]\nb\n"], lost_bytes=50)
    assert town.output.page(task.id).truncated
    assert town.output.page(task.id, "2-0").truncated  # read on from a: b follows a gap
    last = town.output.page(task.id).chunks[-1][0]
    assert not town.output.page(task.id, last).truncated


def test_every_write_sets_the_expiry_and_finishing_marks_the_end(town):
    task = town.tasks.add("done soon")
    key = town.keys.task_output(task.id)
    town.output.append(task.id, ["out\n"])
    assert 0 < town.redis.ttl(key) <= defaults.TASK_OUTPUT_TTL_SECS
    town.redis.persist(key)
    end = town.output.finish(task.id)
    assert end == "4-1"  # the newest offset, the next sequence number: never a chunk
    assert 0 < town.redis.ttl(key) <= defaults.TASK_OUTPUT_TTL_SECS
    assert town.output.page(task.id).chunks == [("4-0", "out\n")]
    assert town.output.append(task.id, ["more\n"]) == ["9-0"]  # ids go on after an end


def test_an_unknown_task_has_no_page(town):
    assert town.output.page("00000000-0000-4000-8000-000000000000") is None


def test_a_task_that_never_ran_and_was_cancelled_is_finished_with_no_output(town):
    task = town.tasks.add("never mind")
    assert not town.output.page(task.id).finished
    town.tasks.cancel(task.id, "not needed")
    page = town.output.page(task.id)
    assert page.finished and page.chunks == [] and page.next_after == "0-0"


# --- when a reader may stop (pure) ------------------------------------------------------------------

TASK = "11111111-1111-4111-8111-111111111111"
NOW_MS = 1_000_000
CHUNK = ["5-0", {"text": "out\n\n"}]
END = ["5-1", {"end": "1"}]


def snapshot(
    state="completed", current_task="", alive_until=0, entries=(CHUNK,), newest=None, after="0-0"
):
    entries = [list(e) for e in entries]
    newest = newest or (entries[-1][0] if entries else "0-0")
    return [state, current_task, str(alive_until), NOW_MS, after, newest, entries]


@pytest.mark.parametrize(
    "reply, finished",
    [
        (snapshot(), True),  # final, nobody writes
        (snapshot(state="running"), False),
        # the CLI reported its result itself and runs on: its worker still writes
        (snapshot(current_task=TASK, alive_until=NOW_MS + 1), False),
        (snapshot(current_task=TASK, alive_until=NOW_MS + 1, entries=(CHUNK, END)), True),
        (snapshot(current_task=TASK, alive_until=NOW_MS - 1), True),  # its worker died
        (snapshot(current_task="another", alive_until=NOW_MS + 1), True),
        (snapshot(entries=(CHUNK,), newest="9-0"), False),  # more after this page
    ],
)
def test_finished_means_a_final_state_and_nobody_left_to_write(reply, finished):
    assert page_of(TASK, reply, limit=1).finished is finished


def test_the_end_entry_is_not_a_chunk_but_moves_the_cursor():
    page = page_of(TASK, snapshot(entries=(CHUNK, END)), limit=10)
    assert page.chunks == [("5-0", "out\n\n")] and page.next_after == "5-1"


@pytest.mark.parametrize(
    "data, whole",
    [
        (b"plain", 5),
        ("é".encode(), 2),
        ("é".encode()[:1], 0),
        (b"ab" + "€".encode()[:2], 2),
        (b"ab" + "😀".encode()[:3], 2),
        (b"ab" + "😀".encode(), 6),
        (b"\xff\xfe", 2),  # not UTF-8 at all: decoded as U+FFFD, never held back
        (b"\x80\x80\x80\x80", 4),
        (b"", 0),
    ],
)
def test_a_character_cut_at_the_end_of_a_read_waits_for_the_next(data, whole):
    assert complete_utf8(data) == whole


# --- GET /v1/tasks/{task_id}/log ------------------------------------------------------------------


def test_the_route_pages_the_output_with_next_after(client, town):
    task = town.tasks.add("speak")
    town.output.append(task.id, ["one\n", "two\n", "three\n"])
    first = client.get(log_url(task.id, limit=2)).get_json()
    assert first == {
        "task_id": task.id,
        "chunks": [{"id": "4-0", "text": "one\n"}, {"id": "8-0", "text": "two\n"}],
        "next_after": "8-0",
        "finished": False,
        "truncated": False,
    }
    rest = client.get(log_url(task.id, after=first["next_after"])).get_json()
    assert texts(rest) == "three\n" and rest["next_after"] == "14-0"
    assert client.get(log_url(task.id, after="$")).get_json()["chunks"] == []


def test_a_long_poll_answers_within_a_second_of_new_output(client, town):
    task = town.tasks.add("slow")
    timer = threading.Timer(0.5, town.output.append, args=(task.id, ["late\n"]))
    timer.start()
    started = time.monotonic()
    body = client.get(log_url(task.id, wait=10)).get_json()
    timer.join()
    assert texts(body) == "late\n" and not body["finished"]
    assert time.monotonic() - started < 0.5 + PROMPT_SECS


def test_a_task_reaching_its_final_state_ends_a_wait_at_once(client, town):
    task = town.tasks.add("about to end")
    town.output.append(task.id, ["all of it\n"])

    def end():
        town.tasks.cancel(task.id, "enough")
        town.output.finish(task.id)

    timer = threading.Timer(0.5, end)
    timer.start()
    started = time.monotonic()
    body = client.get(log_url(task.id, after="$", wait=10)).get_json()
    timer.join()
    assert body["finished"] and body["chunks"] == []
    assert time.monotonic() - started < 0.5 + PROMPT_SECS


def test_a_finished_task_is_answered_at_once_whatever_the_wait(client, town):
    task = town.tasks.add("over")
    town.tasks.cancel(task.id, "over")
    started = time.monotonic()
    body = client.get(log_url(task.id, wait=10)).get_json()
    assert body["finished"] and time.monotonic() - started < PROMPT_SECS


def test_log_long_polls_share_the_waiting_places_of_the_event_feed(app, client, town):
    task = town.tasks.add("busy town")
    waiters = app.extensions[WAITERS]
    for _ in range(defaults.EVENTS_WAITERS_MAX):
        assert waiters.acquire(blocking=False)
    try:
        started = time.monotonic()
        resp = client.get(log_url(task.id, wait=20))
        assert time.monotonic() - started < PROMPT_SECS
        assert resp.headers[WAIT_HEADER] == "busy" and resp.headers["Retry-After"] == "1"
        assert client.get("/v1/events?wait=20").headers[WAIT_HEADER] == "busy"
    finally:
        for _ in range(defaults.EVENTS_WAITERS_MAX):
            waiters.release()


@pytest.mark.parametrize(
    "query, status, field",
    [
        ("after=abc", 400, "after"),
        ("after=1-2-3", 400, "after"),
        ("after=-1", 400, "after"),
        ("limit=0", 422, "limit"),
        ("limit=1001", 422, "limit"),
        ("wait=26", 422, "wait"),
    ],
)
def test_bad_parameters_are_refused_naming_them(client, town, query, status, field):
    task = town.tasks.add("x")
    resp = client.get(f"/v1/tasks/{task.id}/log?{query}")
    assert resp.status_code == status and resp.mimetype == "application/problem+json"
    body = resp.get_json()
    assert body["field"] == field and f"'{field}'" in body["detail"]


def test_the_largest_chunk_id_is_accepted(client, town):
    task = town.tasks.add("x")
    top = str(2**64 - 1)
    body = client.get(log_url(task.id, after=f"{top}-{top}")).get_json()
    assert body["chunks"] == [] and body["next_after"] == f"{top}-{top}"


def test_an_unknown_task_is_404_and_a_malformed_id_400(client):
    resp = client.get(log_url("00000000-0000-4000-8000-000000000000"))
    assert resp.status_code == 404 and resp.mimetype == "application/problem+json"
    assert client.get(log_url("not-a-task")).status_code == 400


def test_the_log_needs_the_read_scope(anon, keyring, keyed_town):
    task = keyed_town.tasks.add("secret output")
    url = log_url(task.id)
    assert anon.get(url).status_code == 401
    assert anon.as_key(keyring["write"][0]).get(url).status_code == 403
    for key in ("read", "admin"):
        assert anon.as_key(keyring[key][0]).get(url).status_code == 200, key


# --- the worker's stream, in this process -------------------------------------------------------


def test_output_that_could_not_be_sent_is_kept_up_to_the_bound_then_noted_as_lost(town, tmp_path):
    task = town.tasks.add("loud, while Redis refuses")
    key = town.keys.task_output(task.id)
    town.redis.set(key, "not a stream")  # every write fails (WRONGTYPE) until it is gone
    logged = []
    path = tmp_path / "task.log"
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_APPEND)
    stream = OutputStream(
        town.output, task.id, fd, 0, "=== attempt 1\n", lambda e, **f: logged.append((e, f))
    ).start()
    try:
        poll(lambda: logged, timeout=5, message="the first failed write")
        line = b"x" * 99 + b"\n"
        for _ in range(12_000):  # 1.2 MB waits: more than the stream would keep
            os.write(fd, line)
        time.sleep(2 * defaults.TASK_OUTPUT_FLUSH_SECS)
        town.redis.delete(key)  # Redis takes writes again
        stream.stop(wait_secs=10)
    finally:
        os.close(fd)
    assert [e for e, _ in logged] == ["task_output_failed", "task_output_resumed"]
    assert "WRONGTYPE" in logged[0][1]["detail"]
    text = "".join(f["text"] for _, f in town.redis.xrange(key))
    lost = 12_000 * 100 - defaults.TASK_OUTPUT_MAX_BYTES
    assert text.startswith(f"=== attempt 1\n[output lost: {lost} bytes]\n")
    assert text.count("[output lost") == 1 and text.endswith("x" * 99 + "\n")
    assert len(text.encode()) <= defaults.TASK_OUTPUT_MAX_BYTES + 100
    assert town.output.page(task.id).truncated
    assert path.stat().st_size == 12_000 * 100  # the file itself is untouched


def test_a_reader_starting_after_the_end_entry_is_finished_at_once():
    reply = snapshot(
        current_task=TASK, alive_until=NOW_MS + 1, entries=(), newest="5-1", after="5-1"
    )
    page = page_of(TASK, reply, limit=10)
    assert page.finished and page.chunks == []


def test_deleting_a_task_deletes_its_output(town):
    task = town.tasks.add("short-lived")
    town.output.append(task.id, ["some output\n"])
    assert town.redis.exists(town.keys.task_output(task.id))
    town.tasks.delete(task.id)
    assert not town.redis.exists(town.keys.task_output(task.id))
