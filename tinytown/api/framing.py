"""Where an HTTP/1.x request ends, and whether it keeps to townhall's limits: no I/O here.

:class:`RequestReader` holds the bytes a connection has received; h11 frames the request at their
front (``Content-Length`` or chunked). The head goes to h11 only once it is whole, so a
connection holds one copy of it, not two. A request that breaks a limit or is malformed raises
:class:`Rejected` with the status it gets. :mod:`tinytown.api.server` reads the sockets, writes
the answers and hands complete requests to gunicorn.
"""

from __future__ import annotations

from dataclasses import dataclass

import h11

GUNICORN_MAX_REQUEST_LINE_BYTES = 8190  # gunicorn's cap on limit_request_line
GUNICORN_MAX_HEADER_FIELDS = 32768
GUNICORN_HEADER_FIELD_BYTES = 8190  # limit_request_field_size = 0 means this to gunicorn
UNLIMITED_REQUEST_LINE_BYTES = (
    1024 * 1024
)  # limit_request_line = 0, as gunicorn's fast parser reads it
DETAIL_MAX_CHARS = 200


@dataclass(frozen=True)
class RequestLimits:
    """What one request may be: the town's body limit and read deadline, and gunicorn's header
    settings normalised as its own parser does."""

    max_body_bytes: int
    read_timeout_secs: float
    request_line_bytes: int
    header_fields: int
    header_field_bytes: int

    @classmethod
    def of(cls, cfg, townhall) -> RequestLimits:
        line = cfg.limit_request_line
        if line < 0 or line >= GUNICORN_MAX_REQUEST_LINE_BYTES:
            line = GUNICORN_MAX_REQUEST_LINE_BYTES
        fields = cfg.limit_request_fields
        fields = fields if 0 < fields <= GUNICORN_MAX_HEADER_FIELDS else GUNICORN_MAX_HEADER_FIELDS
        size = (
            cfg.limit_request_field_size
            if cfg.limit_request_field_size > 0
            else GUNICORN_HEADER_FIELD_BYTES
        )
        line = line or UNLIMITED_REQUEST_LINE_BYTES
        return cls(townhall.max_body_bytes, townhall.request_read_timeout_secs, line, fields, size)

    @property
    def head_bytes(self) -> int:
        """The largest request head: request line and gunicorn's header buffer."""
        return self.request_line_bytes + 2 + self.header_fields * (self.header_field_bytes + 2) + 4

    def detail(self, status: int) -> str:
        return {
            408: f"the request did not arrive whole within {self.read_timeout_secs} s "
            "([townhall] request_read_timeout_secs); send it without pausing",
            413: f"request body is larger than the limit of {self.max_body_bytes} bytes "
            "([townhall].max_body_bytes)",
            414: f"request line is longer than {self.request_line_bytes} bytes "
            "(gunicorn limit_request_line)",
            431: f"request headers are over the limits: at most {self.header_fields} fields "
            f"of at most {self.header_field_bytes} bytes each "
            "(gunicorn limit_request_fields, limit_request_field_size)",
        }[status]


class Rejected(Exception):
    """A request answered with ``status`` on the event loop, before any thread sees it."""

    def __init__(self, status: int, detail: str):
        super().__init__(detail)
        self.status, self.detail = status, detail


class RequestReader:
    """A connection's received bytes, and where the request at their front ends (by h11)."""

    def __init__(self, limits: RequestLimits):
        self.limits = limits
        self.buffer = bytearray()
        self._h11: h11.Connection | None = None
        self._fed = self._body_bytes = self._scanned = 0
        self._head_done = self._continued = False

    @property
    def started(self) -> bool:
        return bool(self.buffer) or self._h11 is not None

    def next_request(self) -> bytes | None:
        """The whole request at the front of the buffer, taken out of it; None until it has all
        arrived. Raises :class:`Rejected` as soon as it breaks a limit or is malformed."""
        if self._h11 is None:
            if (
                self.buffer[:2] == b"\r\n"
            ):  # RFC 9112 §2.2: one empty line before a request is ignored
                del self.buffer[:2]
            if not self.buffer:
                return None
            self._h11 = h11.Connection(h11.SERVER, max_incomplete_event_size=self.limits.head_bytes)
            self._fed = self._body_bytes = self._scanned = 0
            self._head_done = self._continued = False
        if self._fed == 0 and not self._head_arrived():
            return None  # h11 sees the head once it is whole: one copy of it is held, not two
        if self._fed < len(self.buffer):
            self._h11.receive_data(bytes(self.buffer[self._fed :]))
            self._fed = len(self.buffer)
        try:
            while True:
                event = self._h11.next_event()
                if event is h11.NEED_DATA:
                    if not self._head_done:
                        self._check_request_line()
                    return None
                if isinstance(event, h11.Request):
                    self._check_head(event)
                elif isinstance(event, h11.Data):
                    self._body_bytes += len(event.data)
                    if self._body_bytes > self.limits.max_body_bytes:
                        raise Rejected(413, self.limits.detail(413))
                elif isinstance(event, h11.EndOfMessage):
                    return self._take()
        except h11.RemoteProtocolError as err:
            self._check_request_line()  # a request line that alone fills the head is 414, not 431
            status = err.error_status_hint if err.error_status_hint in (431, 501, 505) else 400
            said = str(err).split(": bytearray(", 1)[0][
                :DETAIL_MAX_CHARS
            ]  # not the client's bytes h11 quotes
            detail = self.limits.detail(431) if status == 431 else f"malformed HTTP request: {said}"
            raise Rejected(status, detail) from None

    def take_continue(self) -> bool:
        """True once, when the client waits for ``100 Continue`` before sending its body."""
        if self._h11 is None or self._continued or not self._h11.they_are_waiting_for_100_continue:
            return False
        self._continued = True
        return True

    def _head_arrived(self) -> bool:
        start = max(0, self._scanned - 2)
        ends = [
            i
            for i in (self.buffer.find(b"\n\r\n", start), self.buffer.find(b"\n\n", start))
            if i >= 0
        ]
        if ends:
            return True
        self._scanned = len(self.buffer)
        self._check_request_line()
        if len(self.buffer) > self.limits.head_bytes:
            raise Rejected(431, self.limits.detail(431))
        return False

    def _check_request_line(self) -> None:
        limit = self.limits.request_line_bytes
        end = self.buffer.find(b"\r\n", 0, limit + 3)
        if (end < 0 and len(self.buffer) - 2 > limit) or end > limit:
            raise Rejected(414, self.limits.detail(414))

    def _check_head(self, request: h11.Request) -> None:
        self._head_done = True
        head_end = self._fed - len(self._h11.trailing_data[0])
        lines = [line.rstrip(b"\r") for line in bytes(self.buffer[:head_end]).split(b"\n")]
        if len(lines[0]) > self.limits.request_line_bytes:
            raise Rejected(414, self.limits.detail(414))
        fields = [line for line in lines[1:] if line]
        too_long = any(len(f) + 2 > self.limits.header_field_bytes for f in fields)
        if len(fields) > self.limits.header_fields or too_long:
            raise Rejected(431, self.limits.detail(431))
        for name, value in request.headers:
            if name == b"content-length" and int(value) > self.limits.max_body_bytes:
                raise Rejected(413, self.limits.detail(413))

    def _take(self) -> bytes:
        end = self._fed - len(self._h11.trailing_data[0])
        request = bytes(self.buffer[:end])
        del self.buffer[:end]
        self._h11 = None
        return request
