"""Chaos with the scaler (issue 16 §5, ``bench/bench_chaos.py --scaler``; needs Docker).

The scaler (``python scaler.py --json`` in its loop) runs a town's workers as containers of the
agent-worker image built from this checkout, against a townhall under gunicorn and the project's
managed Redis over TCP (``tests/scaler_stack.py``). Tasks come in bursts, so the scaler scales
up and, between bursts, drains the surplus (workers never leave by themselves here:
``idle_timeout_secs = 0``). Meanwhile a killer SIGKILLs, at random every 2–5 s, the scaler
process, townhall (its gunicorn master and workers) or a running worker container, and a
supervisor starts the scaler and townhall again; new worker containers are the scaler's job.

What is watched, from Docker's event stream for the town's label:

- every SIGTERM Docker delivers to a worker container is a drain (or a restart) by the scaler;
  the container's own log (fetched the moment it dies, before the scaler removes it) says
  whether its worker was busy then (``draining``: a task was running → a **violation**;
  ``task_given_back``: a task taken in the instant before the signal, the documented race);
- every container destroyed without having died first was removed while running (a violation).

And, as in the process variant: every task completes, none lost, duplicate runs (the fake CLI's
start records) no more than the containers killed. Containers, volumes and the image are
removed by label and tag at the end.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path

import docker
import docker.errors

from bench.chaos_town import Chaos
from tests.scaler_stack import SCALER, ScalerTown, TcpRedis
from tinytown.scaler.containers import LABEL_AGENT_ID

IMAGE = f"tinytown-agent-worker:chaos-{os.getpid()}"
BURST_GAP_SECS = (6.0, 12.0)  # between bursts: long enough for the scaler to drain
DRAIN_PASSES = 2
DRAIN_COOLDOWN_SECS = 5
INTERVAL_SECS = 1
SUPERVISE_EVERY_SECS = 0.5
STOP_SECS = 30


class ScalerChaos:
    """One run's threads and processes around a started ``ScalerTown``, and its count."""

    def __init__(self, chaos: Chaos, client, root: Path, town: ScalerTown):
        self.chaos, self.client, self.root, self.town = chaos, client, root, town
        self.rng = random.Random(chaos.seed)
        self.runs = self.town.worker_dir / "runs.jsonl"
        self.logs = root / "containers"
        self.logs.mkdir()
        self.stopping = threading.Event()
        self.lock = threading.Lock()
        self.events: list[dict] = []
        self.kills: Counter = Counter()
        self.scaler: subprocess.Popen | None = None
        self.scaler_starts = 0
        self.ids: list[str] = []
        self.threads: list[threading.Thread] = []
        self.stream = None

    # -- processes --------------------------------------------------------------------------

    def start_scaler(self) -> None:
        settings = self.town.cli_args(
            interval_secs=INTERVAL_SECS,
            keep_exited=0,
            min_workers=0,
            max_workers=self.chaos.workers,
            scale_down_after_passes=DRAIN_PASSES,
            scale_down_cooldown_secs=DRAIN_COOLDOWN_SECS,
            # SIGKILLed containers look like a crash loop to the scaler, which would hold starts
            crash_loop_after_exits=0,
        )
        with (
            open(self.root / "passes.jsonl", "a") as out,
            open(self.root / "scaler.log", "a") as log,
        ):
            self.scaler = subprocess.Popen(
                [sys.executable, str(SCALER), "--json", *settings],
                stdout=out,
                stderr=log,
                stdin=subprocess.DEVNULL,
                env={k: v for k, v in os.environ.items() if not k.startswith("TINYTOWN_")},
            )
        self.scaler_starts += 1

    def kill_townhall(self) -> bool:
        """SIGKILL the gunicorn master and its workers, by PID, as a dying container would.
        False when it is down already."""
        proc = self.town.townhall.proc
        if proc is None or proc.poll() is not None:
            return False
        children = Path(f"/proc/{proc.pid}/task/{proc.pid}/children").read_text().split()
        for pid in [proc.pid, *map(int, children)]:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        proc.wait()
        return True

    def running_workers(self) -> list:
        return [c for c in self.town.containers(self.client) if c.status == "running"]

    # -- threads ----------------------------------------------------------------------------

    def _kill(self) -> None:
        low, high = self.chaos.kill_every_secs
        while not self.stopping.wait(self.rng.uniform(low, high)):
            target = self.rng.choice(("scaler", "townhall", "worker", "worker"))
            with self.lock:
                if self._kill_one(target):
                    self.kills[target] += 1

    def _kill_one(self, target: str) -> bool:
        """SIGKILL the scaler, townhall or a running worker container; False if none ran."""
        if target == "townhall":
            return self.kill_townhall()
        if target == "scaler":
            if self.scaler is None or self.scaler.poll() is not None:
                return False
            self.scaler.kill()
            self.scaler.wait()
            return True
        running = self.running_workers()
        if not running:
            return False
        try:
            self.rng.choice(running).kill(signal="SIGKILL")
        except docker.errors.APIError:  # it exited meanwhile
            return False
        return True

    def _supervise(self) -> None:
        while not self.stopping.wait(SUPERVISE_EVERY_SECS):
            with self.lock:
                if self.scaler is None or self.scaler.poll() is not None:
                    self.start_scaler()
                th = self.town.townhall
                if th.proc is None or th.proc.poll() is not None:
                    try:
                        th.start()
                    except RuntimeError:  # its old workers still hold the port: next time
                        pass

    def _watch_docker(self) -> None:
        label = f"tinytown.town={self.town.name}"
        self.stream = self.client.events(decode=True, filters={"type": "container", "label": label})
        try:
            for event in self.stream:
                self._note(event)
        except Exception:  # the stream closed under the loop at the end
            pass

    def _note(self, event: dict) -> None:
        attrs = event.get("Actor", {}).get("Attributes", {})
        row = {
            "t": event.get("timeNano", 0) / 1e9,
            "action": event.get("Action") or event.get("status"),
            "container": event.get("id", "")[:12],
            "agent": attrs.get(LABEL_AGENT_ID),
            "signal": attrs.get("signal"),
            "exit": attrs.get("exitCode"),
        }
        self.events.append(row)
        if row["action"] == "die":
            self._keep_log(event.get("id", ""), row["agent"])

    def _keep_log(self, container_id: str, agent: str | None) -> None:
        try:
            text = self.client.containers.get(container_id).logs().decode(errors="replace")
        except Exception as err:  # removed already: the scaler won the race
            text = f"(no log: {err})"
        (self.logs / f"{agent or container_id}.log").write_text(text)

    def _submit(self) -> None:
        town, burst = self.town.town, max(1, self.chaos.backlog)
        while len(self.ids) < self.chaos.tasks and not self.stopping.is_set():
            for _ in range(min(burst, self.chaos.tasks - len(self.ids))):
                desc = f"[record /workspace/runs.jsonl] [sleep {self.chaos.task_secs}]"
                self.ids.append(town.tasks.add(desc).id)
            self.stopping.wait(self.rng.uniform(*BURST_GAP_SECS))

    # -- the run ----------------------------------------------------------------------------

    def run(self) -> float | None:
        for target in (self._watch_docker, self._supervise, self._kill, self._submit):
            self.threads.append(threading.Thread(target=target, daemon=True))
        self.threads[0].start()
        while self.stream is None:  # the first event must not be missed
            time.sleep(0.05)
        for thread in self.threads[1:]:
            thread.start()
        started = time.monotonic()
        deadline = started + self.chaos.timeout_secs
        while time.monotonic() < deadline:
            if len(self.ids) == self.chaos.tasks:
                tasks = self.town.town.tasks.many(self.ids)
                if all(t is not None and t.terminal for t in tasks):
                    return round(time.monotonic() - started, 2)
            time.sleep(0.5)
        return None

    def stop_chaos(self) -> None:
        """The threads, the scaler (SIGTERM: it finishes its pass) and the event stream; what
        the clean-up does after this is not watched."""
        self.stopping.set()
        if self.stream is not None:
            self.stream.close()
        for thread in self.threads:
            thread.join(timeout=10)
        if self.scaler is not None and self.scaler.poll() is None:
            self.scaler.send_signal(signal.SIGTERM)
            try:
                self.scaler.wait(timeout=STOP_SECS)
            except subprocess.TimeoutExpired:
                self.scaler.kill()
                self.scaler.wait()

    # -- the count --------------------------------------------------------------------------

    def tally(self, wall_secs: float | None) -> dict:
        tasks = self.town.town.tasks.many(self.ids)
        states = Counter(t.state if t else "missing" for t in tasks)
        lost = [i for i, t in zip(self.ids, tasks) if t is None or not t.terminal]
        failed = [i for i, t in zip(self.ids, tasks) if t is not None and t.state == "failed"]
        records = (
            [json.loads(x) for x in self.runs.read_text().splitlines()]
            if self.runs.exists()
            else []
        )
        starts = Counter(r["task"] for r in records if r["event"] == "start")
        duplicates = sum(n - 1 for n in starts.values())
        died = set()
        busy, raced, unknown, removed_running, sigterms = [], [], [], [], 0
        for e in self.events:
            if e["action"] == "die":
                died.add(e["container"])
            elif e["action"] == "destroy" and e["container"] not in died:
                removed_running.append(e["container"])
            elif e["action"] == "kill" and e["signal"] == "15":
                sigterms += 1
                log = self.logs / f"{e['agent']}.log"
                text = log.read_text() if log.exists() else ""
                if "event=draining " in text:
                    busy.append(e["agent"])
                elif "event=task_given_back " in text:
                    raced.append(e["agent"])
                elif "event=exit " not in text:  # removed before its log was read
                    unknown.append(e["agent"])
        actions = Counter()
        for line in (self.root / "passes.jsonl").read_text().splitlines():
            try:
                for action in json.loads(line).get("actions", []):
                    actions[f"{action['action']}{'' if action.get('ok') else '_failed'}"] += 1
            except (ValueError, KeyError):
                pass  # a line cut short by a SIGKILL
        completed = states["completed"]
        summary = {
            "variant": "scaler",
            "tasks": self.chaos.tasks,
            "completed": completed,
            "lost": len(lost),
            "failed": len(failed),
            "kills": dict(self.kills),
            "duplicate_runs": duplicates,
            "wall_secs": wall_secs,
            "throughput_per_sec": round(completed / wall_secs, 1) if wall_secs else None,
            "scaler_actions": dict(actions),
            "scaler_starts": self.scaler_starts,
            "sigterms_to_workers": sigterms,
            "drained_while_busy": busy,
            "drained_in_the_claim_race": raced,
            "drained_log_missing": unknown,
            "removed_while_running": removed_running,
            "containers_started": sum(1 for e in self.events if e["action"] == "start"),
            "states": dict(states),
        }
        problems = []
        if wall_secs is None:
            problems.append(f"timed out: {dict(states)}")
        if lost or failed:
            problems.append(f"{len(lost)} task(s) lost, {len(failed)} failed")
        if duplicates > self.kills["worker"]:
            problems.append(f"{duplicates} duplicate runs > {self.kills['worker']} worker kills")
        if busy:
            problems.append(f"{len(busy)} busy worker(s) drained: {busy}")
        if removed_running:
            problems.append(f"{len(removed_running)} running container(s) removed")
        summary["problems"] = problems
        return summary


def run_scaler_chaos(chaos: Chaos) -> dict:
    """One scaler chaos run; ``{"skipped": why, "problems": []}`` when no Docker engine answers."""
    from tests.docker_support import build_image

    try:
        client = docker.from_env(timeout=60)
        client.ping()
    except docker.errors.DockerException as err:
        return {
            "variant": "scaler",
            "skipped": f"no Docker engine answered ({err})",
            "problems": [],
        }
    build_image("agent-worker", IMAGE)
    root = Path(tempfile.mkdtemp(prefix="ttcs-", dir="/tmp"))
    redis = TcpRedis(root / "redis").start()
    # Workers never leave by themselves here: scale-down is the scaler's drains.
    town = ScalerTown(root / "town", redis.url, IMAGE, {"idle_timeout_secs": 0})
    run = ScalerChaos(chaos, client, root, town)
    try:
        town.start()
        wall_secs = run.run()
        run.stop_chaos()
        summary = run.tally(wall_secs)
    finally:
        run.stop_chaos()
        town.stop(client)  # containers and volumes by label, then townhall
        redis.stop()
        try:
            client.images.remove(IMAGE, force=True)
        except docker.errors.NotFound:
            pass
    if chaos.keep_dir or summary["problems"]:
        summary["work_dir"] = str(root)
    else:
        shutil.rmtree(root, ignore_errors=True)
    return summary
