"""A running CLI's output, sent from its log file to the task's Redis stream
(:mod:`tinytown.store.output`) so that it can be read from anywhere while the task runs.

Nothing changes for the CLI: it writes to the task's log file as before, and the way to its start
gains nothing. Once it has run for ``TASK_OUTPUT_FLUSH_SECS``, a thread of the worker's reads what
the file gained, then again every ``TASK_OUTPUT_FLUSH_SECS`` — through a descriptor of its own,
from where this attempt's output begins — and sends it in chunks of at most
``TASK_OUTPUT_CHUNK_MAX_BYTES``, one XADD (an append script) each, all of one pass in one round
trip. The header line of the attempt goes first. A CLI that ends sooner never gets the thread:
its output is sent once, by the worker, when it has exited.

Redis being slow, away or refusing the writes never reaches the CLI or the task: the thread keeps
what it could not send in the file (it only moves on after a write succeeded) and tries again
``TASK_OUTPUT_RETRY_SECS`` later; once more than ``TASK_OUTPUT_MAX_BYTES`` waits, it skips to the
newest that much (what the stream would keep anyway) and says so in the output, once per gap:
``[output lost: N bytes]``. A failure is logged once (``task_output_failed``) until a write
succeeds again (``task_output_resumed``). When the CLI has exited, the thread sends the rest,
waited for at most ``TASK_OUTPUT_STOP_WAIT_SECS``.

Bytes that are not UTF-8 are stored as U+FFFD; a character split between two reads is kept
whole.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable

import redis

from tinytown.core import defaults
from tinytown.store.output import TaskOutput


def complete_utf8(data: bytes) -> int:
    """How many leading bytes of ``data`` end on a character boundary: a multi-byte character cut
    off at the end is left for the next read (anything else undecodable is decoded as U+FFFD)."""
    for back in range(1, min(4, len(data)) + 1):
        byte = data[-back]
        if byte & 0xC0 != 0x80:  # the last lead (or ASCII) byte
            need = 2 if byte >> 5 == 0b110 else 3 if byte >> 4 == 0b1110 else 4
            if byte >= 0xC0 and byte >> 3 != 0b11111 and need > back:
                return len(data) - back
            return len(data)
    return len(data)


def lost_note(lost_bytes: int) -> str:
    return f"[output lost: {lost_bytes} bytes]\n"


class OutputStream:
    """One attempt's output, from its log file to the task's stream, by a thread of its own."""

    def __init__(
        self,
        output: TaskOutput,
        task_id: str,
        log_fd: int,
        start: int,
        header: str,
        log: Callable[..., None],
    ):
        self.output, self.task_id, self.log = output, task_id, log
        self.fd = os.dup(log_fd)  # the log's own descriptor is closed when the task ends
        self.pos = start  # the next byte of the file to send
        self.header = header  # sent with the first chunk
        self.lost = 0  # bytes skipped since the last write that succeeded
        self.failing = False
        self.retry_at = 0.0
        self.done = threading.Event()
        self.thread: threading.Thread | None = None  # started once the CLI has run a while
        self.rest: tuple[list[str], int] | None = None  # left by stop(defer=True), to be sent

    def start(self) -> OutputStream:
        """Send what the CLI wrote so far, then every ``TASK_OUTPUT_FLUSH_SECS``, from a thread
        (call when the CLI has run ``TASK_OUTPUT_FLUSH_SECS``; once)."""
        if self.thread is None:
            self.thread = threading.Thread(target=self._run, name="output", daemon=True)
            self.thread.start()
        return self

    def stop(
        self, wait_secs: float = defaults.TASK_OUTPUT_STOP_WAIT_SECS, *, defer: bool = False
    ) -> None:
        """The CLI has exited: send the rest, waiting at most ``wait_secs``. If no thread was
        started, it is sent here (one round trip, bounded by the socket timeout), or with
        ``defer`` left in :attr:`rest` as ``(texts, lost bytes)`` for the worker to send with
        its next writes, ahead of the final state (then :meth:`failed` on an error)."""
        self.done.set()
        if self.thread is not None:
            self.thread.join(wait_secs)
            return
        try:
            if defer:
                texts, _ = self._unsent(final=True)
                self.rest = (texts, self.lost) if texts else None
            else:
                self._send(final=True)
        except OSError as err:  # the file is unreadable: the log keeps the output all the same
            self.failed(err)
        finally:
            os.close(self.fd)

    def finish(self) -> None:
        """The task is in a final state: mark its output complete (readers stop waiting)."""
        try:
            self.output.finish(self.task_id)
        except redis.RedisError as err:
            self.failed(err)

    # -- the thread -------------------------------------------------------------------------

    def _run(self) -> None:
        try:
            while not self.done.is_set():
                if time.monotonic() >= self.retry_at:
                    self._send()
                if self.done.wait(defaults.TASK_OUTPUT_FLUSH_SECS):
                    break
            self._send(final=True)
        except OSError as err:  # the file is unreadable: the log keeps the output all the same
            self.failed(err)
        finally:
            os.close(self.fd)

    def _send(self, final: bool = False) -> None:
        """Send what the file gained since the last write that succeeded."""
        texts, end = self._unsent(final)
        if not texts:
            return
        try:
            self.output.append(self.task_id, texts, lost_bytes=self.lost)
        except redis.RedisError as err:
            self.retry_at = time.monotonic() + defaults.TASK_OUTPUT_RETRY_SECS
            self.failed(err)
            return
        self.pos, self.lost, self.header = end, 0, ""
        if self.failing:
            self.failing = False
            self.log("task_output_resumed", task=self.task_id)

    def _unsent(self, final: bool) -> tuple[list[str], int]:
        """The texts the file gained since the last write that succeeded (the header and a lost
        note first), and the file offset they end at."""
        size = os.fstat(self.fd).st_size
        self.pos = min(self.pos, size)  # (the CLI truncated its log)
        if size - self.pos > defaults.TASK_OUTPUT_MAX_BYTES:  # more than the stream would keep
            self.lost += size - defaults.TASK_OUTPUT_MAX_BYTES - self.pos
            self.pos = size - defaults.TASK_OUTPUT_MAX_BYTES
        texts, end = [], self.pos
        while end < size:
            data = os.pread(self.fd, min(defaults.TASK_OUTPUT_CHUNK_MAX_BYTES, size - end), end)
            if not data:
                break
            whole = len(data) if final and end + len(data) >= size else complete_utf8(data)
            if whole == 0:  # only the start of a character so far
                break
            texts.append(data[:whole].decode("utf-8", errors="replace"))
            end += whole
        if self.lost:
            texts[:1] = [lost_note(self.lost) + "".join(texts[:1])]
        if self.header:
            texts[:1] = [self.header + "".join(texts[:1])]
        return texts, end

    def failed(self, err: Exception) -> None:
        if not self.failing:  # once until a write succeeds
            self.failing = True
            detail = f"{type(err).__name__}: {err}"
            self.log("task_output_failed", task=self.task_id, detail=detail)
