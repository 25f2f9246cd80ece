"""Workers on Cloud Run: execute the worker job from townhall's scaling signal.

A Cloud Run job runs containers only when something executes it, and nothing in Cloud Run reads
``/api/scaling``; this does. Each pass reads the signal (the Docker scaler's
:class:`~tinytown.scaler.townhall.Townhall`), counts the worker job's *unfinished* tasks — those of
executions not yet done, whether their worker is still starting, idle or busy — and when the
signal's ``desired_agents`` (clamped to ``--max-workers``) is more than that, runs the job once
with the difference as its task count. One task is one worker, which exits 0 after its idle
timeout; nothing here ever stops one. Counting Cloud Run's tasks rather than townhall's agents
is what keeps a worker that has not registered yet from being started twice.

    python -P -m tinytown.scaler.cloudrun --once       # one pass (Cloud Scheduler, every minute)
    python -P -m tinytown.scaler.cloudrun --for-secs 540   # passes for 9 minutes, long-polling

deploy/cloudrun/scaler-job.yaml runs it as a Cloud Run job; docs/deploy.md shows the schedule.
It calls the Cloud Run Admin API (v2) with the job's service account, whose token comes from the
metadata server; that account needs ``run.jobs.runWithOverrides`` and ``run.executions.list`` on
the worker job (``roles/run.developer`` there). Nothing destructive is done on a failed read: a
signal or an execution list that cannot be read starts nothing.

Exit codes (:class:`~tinytown.scaler.errors.ExitStatus`): 0 the pass ran, 2 bad command line, 3
bad configuration, 4 townhall unavailable, 5 the Cloud Run API failed (in this module that is what
``DOCKER_UNAVAILABLE`` means: the engine that runs workers).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from tinytown.scaler.defaults import RUN_API_MAX_BYTES
from tinytown.scaler.errors import ExitStatus, TownhallError
from tinytown.scaler.http_answer import AnswerError, call, watched_session
from tinytown.scaler.log import log
from tinytown.scaler.model import Config
from tinytown.scaler.townhall import Townhall
from tinytown.scaler.wire import Signal

RUN_API = "https://run.googleapis.com"
METADATA = "http://metadata.google.internal"
# the metadata server's path that hands out a token (bandit reads the name as a password)
TOKEN_PATH = "/computeMetadata/v1/instance/service-accounts/default/token"  # nosec B105
HTTP_TIMEOUT_SECS = 10.0
MAX_WORKERS = 10
SIGNAL_WAIT_SECS = 25  # the longest long-poll townhall serves
# Passes at least this far apart, even if townhall answers a long-poll at once (an older one, a
# busy one): the execution list is read every pass.
MIN_PASS_INTERVAL_SECS = 2.0
FOR_SECS_MAX = 86_400  # a scheduled job's whole run (Cloud Run jobs stop at 24 h anyway)
EXECUTIONS_PAGE_SIZE = 100
EXECUTIONS_MAX_PAGES = 20  # more unfinished history than this is refused, not guessed at
ENV = {  # flag -> environment variable
    "job": "TINYTOWN_CLOUDRUN_JOB",
    "url": "TINYTOWN_CLOUDRUN_TOWNHALL_URL",
    "api_key": "TINYTOWN_CLOUDRUN_API_KEY",
    "max_workers": "TINYTOWN_CLOUDRUN_MAX_WORKERS",
}
RUN_API_ENV = "TINYTOWN_CLOUDRUN_API"  # another endpoint for the Admin API (tests, private access)
METADATA_ENV = "TINYTOWN_CLOUDRUN_METADATA"  # another metadata server (tests)


class RunApiError(Exception):
    """The Cloud Run Admin API or the metadata server failed; the message says which call."""


# --- pure: what to start -----------------------------------------------------------------------


def unfinished_tasks(executions: Iterable[Mapping[str, Any]]) -> int:
    """Tasks of executions that have not completed: not yet succeeded, failed or cancelled."""
    total = 0
    for execution in executions:
        if execution.get("completionTime"):
            continue
        done = sum(
            int(execution.get(k) or 0) for k in ("succeededCount", "failedCount", "cancelledCount")
        )
        total += max(0, int(execution.get("taskCount") or 0) - done)
    return total


def workers_to_start(signal: Signal, unfinished: int, max_workers: int) -> int:
    """Workers the signal wants that no unfinished task provides: ``desired_agents`` (pending plus
    in-flight tasks) clamped to ``max_workers``, less the unfinished tasks."""
    return max(0, min(signal.desired_agents, max_workers) - unfinished)


# --- the Cloud Run Admin API -------------------------------------------------------------------


class RunJobs:
    """The worker job through the Cloud Run Admin API v2, as the job's service account."""

    def __init__(self, job: str, environ: Mapping[str, str]):
        self.job = job
        self.api = environ.get(RUN_API_ENV, RUN_API).rstrip("/")
        self.metadata = environ.get(METADATA_ENV, METADATA).rstrip("/")
        self.session = watched_session()

    def _call(self, method: str, url: str, what: str, **kwargs: Any) -> dict:
        try:
            answer = call(
                self.session,
                method,
                url,
                deadline_secs=HTTP_TIMEOUT_SECS,
                max_bytes=RUN_API_MAX_BYTES,
                timeout=HTTP_TIMEOUT_SECS,
                **kwargs,
            )
        except AnswerError as err:
            raise RunApiError(f"{what}: {method} {url} {err}") from None
        if answer.status != 200:
            hint = (
                " (the job's service account needs run.jobs.runWithOverrides and "
                "run.executions.list on the worker job, e.g. roles/run.developer)"
                if answer.status == 403
                else ""
            )
            raise RunApiError(
                f"{what}: {method} {url} answered {answer.status}{hint}: {answer.text[:300]!r}"
            )
        try:
            body = answer.json()
        except ValueError:
            raise RunApiError(f"{what}: {method} {url} answered 200 without JSON") from None
        if not isinstance(body, dict):
            raise RunApiError(f"{what}: {method} {url} answered 200 with JSON that is no object")
        return body

    def _token(self) -> str:
        body = self._call(
            "GET",
            self.metadata + TOKEN_PATH,
            "access token from the metadata server",
            headers={"Metadata-Flavor": "Google"},
        )
        if not isinstance(body.get("access_token"), str):
            raise RunApiError("the metadata server's token answer holds no access_token")
        return body["access_token"]

    def executions(self) -> list[dict]:
        """Every execution of the job (paged; refused beyond EXECUTIONS_MAX_PAGES pages)."""
        headers = {"Authorization": f"Bearer {self._token()}"}
        found: list[dict] = []
        token = None
        for _ in range(EXECUTIONS_MAX_PAGES):
            params = {"pageSize": EXECUTIONS_PAGE_SIZE, **({"pageToken": token} if token else {})}
            page = self._call(
                "GET",
                f"{self.api}/v2/{self.job}/executions",
                "list executions",
                headers=headers,
                params=params,
            )
            found += page.get("executions") or []
            token = page.get("nextPageToken")
            if not token:
                return found
        raise RunApiError(
            f"list executions: {self.job} has more than "
            f"{EXECUTIONS_MAX_PAGES * EXECUTIONS_PAGE_SIZE} executions; delete old ones "
            "(gcloud run jobs executions delete) so that the unfinished ones can be counted"
        )

    def run(self, tasks: int) -> str:
        """Execute the job with ``tasks`` tasks; returns the long-running operation's name."""
        headers = {"Authorization": f"Bearer {self._token()}"}
        body = self._call(
            "POST",
            f"{self.api}/v2/{self.job}:run",
            "run the worker job",
            headers=headers,
            json={"overrides": {"taskCount": tasks}},
        )
        return str(body.get("name", ""))


# --- passes ------------------------------------------------------------------------------------


def one_pass(jobs: RunJobs, signal: Signal, max_workers: int) -> int:
    """Start what the signal wants beyond the unfinished tasks; returns how many were started."""
    unfinished = unfinished_tasks(jobs.executions())
    start = workers_to_start(signal, unfinished, max_workers)
    if start:
        operation = jobs.run(start)
        log(
            "info",
            "execution_started",
            job=jobs.job,
            tasks=start,
            desired=signal.desired_agents,
            unfinished=unfinished,
            operation=operation,
        )
    else:
        log("debug", "pass_done", desired=signal.desired_agents, unfinished=unfinished)
    return start


def run(args: argparse.Namespace, environ: Mapping[str, str]) -> ExitStatus:
    townhall = Townhall(
        Config(url=args.url, api_key=args.api_key or None, http_timeout_secs=HTTP_TIMEOUT_SECS)
    )
    jobs = RunJobs(args.job, environ)
    deadline = time.monotonic() + (0 if args.once else args.for_secs)
    signal = None
    while True:
        began = time.monotonic()
        try:
            if signal is None:
                signal = townhall.scaling_signal()
            one_pass(jobs, signal, args.max_workers)
        except TownhallError as err:
            log("error", "signal_unavailable", error=str(err), action="nothing started")
            if args.once:
                return ExitStatus.TOWNHALL_UNAVAILABLE
        except RunApiError as err:
            log("error", "run_api_failed", error=str(err), action="nothing started")
            if args.once:
                return ExitStatus.DOCKER_UNAVAILABLE
        left = deadline - time.monotonic()
        if left < 1:
            return ExitStatus.SUCCESS
        signal = _next_signal(townhall, signal, min(SIGNAL_WAIT_SECS, int(left)))
        time.sleep(max(0.0, MIN_PASS_INTERVAL_SECS - (time.monotonic() - began)))


def _next_signal(townhall: Townhall, last: Signal | None, wait_secs: int) -> Signal | None:
    """The signal once it changes (or after ``wait_secs``); None, after a pause, if unreadable."""
    if last is not None and last.version and wait_secs > 0:
        try:
            return townhall.scaling_signal(wait_secs, last.version)
        except TownhallError as err:
            log("warning", "signal_wait_failed", error=str(err))
    time.sleep(max(1, min(wait_secs, 10)))
    return None


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m tinytown.scaler.cloudrun",
        description="Execute a Cloud Run job of Tinytown workers from townhall's /api/scaling.",
        epilog="exit codes: 0 success, 2 bad command line, 3 bad configuration, 4 townhall "
        "unavailable, 5 the Cloud Run API failed (with --once). See docs/deploy.md.",
    )
    parser.add_argument(
        "--job",
        help=f"the worker job: projects/PROJECT/locations/REGION/jobs/JOB [env {ENV['job']}]",
    )
    parser.add_argument("--url", help=f"townhall's base URL [env {ENV['url']}]")
    parser.add_argument(
        "--api-key",
        help=f"API key for townhall (scope town.read), if /api/scaling is behind auth "
        f"[env {ENV['api_key']}]",
    )
    parser.add_argument(
        "--max-workers",
        type=int,
        help=f"most unfinished worker tasks at once [env {ENV['max_workers']}; "
        f"default {MAX_WORKERS}]",
    )
    mode = parser.add_mutually_exclusive_group(required=True)
    mode.add_argument("--once", action="store_true", help="one pass, then exit")
    mode.add_argument(
        "--for-secs",
        type=float,
        metavar="SECS",
        help="pass again each time the signal changes, for this long, then exit 0",
    )
    return parser


def main(argv: Sequence[str] | None = None, environ: Mapping[str, str] | None = None) -> int:
    environ = os.environ if environ is None else environ
    parser = build_parser()
    args = parser.parse_args(argv)
    for key, name in ENV.items():
        if getattr(args, key) is None and environ.get(name):
            setattr(args, key, environ[name])
    problems = []
    if not args.job or not args.job.startswith("projects/") or "/jobs/" not in args.job:
        problems.append(
            f"--job={args.job!r} ({ENV['job']}): "
            "expected projects/PROJECT/locations/REGION/jobs/JOB"
        )
    if not args.url or not args.url.startswith(("http://", "https://")):
        problems.append(f"--url={args.url!r} ({ENV['url']}): expected townhall's http(s) URL")
    try:
        args.max_workers = MAX_WORKERS if args.max_workers is None else int(args.max_workers)
        if args.max_workers < 0:
            raise ValueError
    except ValueError:
        problems.append(f"--max-workers={args.max_workers!r}: expected a whole number >= 0")
    if args.for_secs is not None and not 0 <= args.for_secs <= FOR_SECS_MAX:
        problems.append(f"--for-secs={args.for_secs!r}: expected 0 to {FOR_SECS_MAX} seconds")
    if problems:
        print(f"{parser.prog}: configuration error: " + "; ".join(problems), file=sys.stderr)
        return ExitStatus.CONFIG_ERROR
    try:
        return run(args, environ)
    except KeyboardInterrupt:
        return ExitStatus.INTERRUPTED


if __name__ == "__main__":
    sys.exit(main())
