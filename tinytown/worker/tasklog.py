"""Per-task log files, with the next one created (and its header line written) before its task
arrives.

Creating a file and writing its first line are metadata writes: 0.1–0.3 ms on this project's
ext4 test machine, which would sit between a task's claim and its CLI's start. So a worker keeps
one unnamed file ready in the log folder (``O_TMPFILE``), its header line for a first attempt
already written; when a task starts, the CLI writes into it, and once the CLI runs the file gets
the task's name (``<task id>.log``, by ``linkat``). An unnamed file vanishes with its last
descriptor, so a worker that dies leaves no stray file behind.

Where ``O_TMPFILE`` is unavailable (macOS, some filesystems), and for a task's later attempts
(which append to the log an earlier attempt may have left), the log is opened by name.
"""

from __future__ import annotations

import os
from pathlib import Path

from tinytown.core import defaults


class TaskLog:
    """One attempt's output file, its header line written; the CLI's stdout and stderr go to
    ``fd``."""

    def __init__(
        self,
        folder: Path,
        name: str,
        fd: int,
        start: int,
        *,
        named: bool,
        folder_fd: int | None = None,
    ):
        self.folder, self.file_name, self.fd = folder, name, fd
        self.named, self.folder_fd = named, folder_fd
        self.start = start  # where this attempt's CLI output begins (after the header line)

    @property
    def path(self) -> Path:
        return self.folder / self.file_name

    def name(self) -> OSError | None:
        """Give an unnamed file its task's name; call once the CLI runs (off the start path).

        If a file of that name appeared meanwhile, this attempt's output is appended to it when
        the log is closed. Any other failure is returned (the output is then appended at close
        too; the caller should stop using unnamed files).
        """
        if self.named:
            return None
        try:  # a dir fd makes os.link use linkat(AT_SYMLINK_FOLLOW), which follows the fd's link
            os.link(f"/proc/self/fd/{self.fd}", self.file_name, dst_dir_fd=self.folder_fd)
            self.named = True
        except FileExistsError:
            pass
        except OSError as err:
            return err
        return None

    def tail(self) -> str:
        """The last ``RESULT_TAIL_BYTES`` of this attempt's output."""
        size = os.fstat(self.fd).st_size
        begin = min(
            size, max(self.start, size - defaults.RESULT_TAIL_BYTES)
        )  # the CLI may truncate
        return os.pread(self.fd, size - begin, begin).decode("utf-8", errors="replace")

    def close(self) -> None:
        try:
            if not self.named:  # the name was taken meanwhile: append what this attempt wrote
                with open(self.path, "ab") as out:
                    offset = 0
                    while chunk := os.pread(self.fd, 1 << 16, offset):
                        out.write(chunk)
                        offset += len(chunk)
        finally:
            os.close(self.fd)


class TaskLogs:
    """The worker's log folder, with one unnamed file kept ready for the next first attempt."""

    def __init__(self, folder: Path):
        self.folder = folder
        self.folder.mkdir(parents=True, exist_ok=True)
        self.spare: int | None = None
        self.spare_header = b""  # the header line already written into the spare
        self.folder_fd: int | None = None
        if hasattr(os, "O_TMPFILE") and Path("/proc/self/fd").is_dir():
            self.folder_fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)

    def prepare(self, header: str) -> None:
        """Make the file the next first attempt's output will go to, ``header`` (its first line)
        written — at idle time, not start time. A ready file with another header is replaced."""
        line = header.encode("utf-8", errors="replace")
        if self.spare is not None and self.spare_header != line:
            os.close(self.spare)
            self.spare = None
        if self.spare is not None or self.folder_fd is None:
            return
        try:
            fd = os.open(self.folder, os.O_TMPFILE | os.O_RDWR | os.O_APPEND, 0o666)
        except OSError:  # the filesystem does not support it: open logs by name from now on
            self.close()
            return
        try:
            os.write(fd, line)
        except OSError:  # e.g. a full disk: no ready file; opening by name will say so at the start
            os.close(fd)
            return
        self.spare, self.spare_header = fd, line

    def open(self, task_id: str, attempt: int, header: str) -> TaskLog:
        """The log for a task's attempt, ``header`` written first. A first attempt takes the ready
        file (no earlier attempt can have left a log to append to, so no look-up on the start
        path); later ones append to the log by name."""
        name, line = f"{task_id}.log", header.encode("utf-8", errors="replace")
        if self.spare is not None and attempt == 1 and line == self.spare_header:
            fd, self.spare = self.spare, None
            return TaskLog(self.folder, name, fd, len(line), named=False, folder_fd=self.folder_fd)
        fd = os.open(self.folder / name, os.O_RDWR | os.O_CREAT | os.O_APPEND, 0o666)
        try:
            os.write(fd, line)
            start = os.lseek(fd, 0, os.SEEK_END)
        except OSError:
            os.close(fd)
            raise
        return TaskLog(self.folder, name, fd, start, named=True)

    def close(self) -> None:
        """Close the spare and the folder; logs are opened by name after this."""
        for fd in (self.spare, self.folder_fd):
            if fd is not None:
                os.close(fd)
        self.spare = self.folder_fd = None
