"""Short ids: a task, agent or mission named by the first 8 or more hex digits of its id, as
``tt`` accepts them (branch names show ``tt/<8 hex>``). Resolving one reads a whole index, so
only operators' commands do it, never a request, a worker or a scaling path.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator

import redis

from tinytown.core.errors import NotFound, TinytownError
from tinytown.core.records import is_uuid

SHORT_ID_MIN_CHARS = 8  # a short id: the first 8+ hex digits (branch names show tt/<8 hex>)
SHORT_ID_PAGE_IDS = 10_000  # ids read per ZRANGE while resolving a short id
_HEX = frozenset("0123456789abcdef")


def short_id_digits(ref: str) -> str | None:
    """The hex digits of ``ref`` if it is a short id (8 or more hex digits, dashes ignored, not
    a whole UUID), else None."""
    digits = ref.strip().lower().replace("-", "")
    if len(digits) < SHORT_ID_MIN_CHARS or not set(digits) <= _HEX or is_uuid(ref.strip()):
        return None
    return digits


def match_short_id(kind: str, ref: str, ids: Iterable[str]) -> str:
    """The one id in ``ids`` that begins with the short id ``ref`` (dashes ignored). Raises
    NotFound (exit 5) when none does, TinytownError (exit 1) naming them when several do."""
    digits = short_id_digits(ref) or ""
    found = sorted(i for i in ids if i.replace("-", "").lower().startswith(digits))
    if not found:
        raise NotFound(f"{kind} {ref!r} not found: no {kind} id begins with it")
    if len(found) > 1:
        shown = ", ".join(found[:10]) + (f" and {len(found) - 10} more" if len(found) > 10 else "")
        raise TinytownError(f"{kind} id {ref!r} is ambiguous: {shown}; give more of the id")
    return found[0]


def resolve_reference(kind: str, ref: str, all_ids: Callable[[], Iterable[str]]) -> str:
    """The id ``ref`` names: a UUID (lowercased) or any other full id as given, or the one id of
    ``all_ids()`` that the short id ``ref`` begins (only then is ``all_ids`` called). A hex
    string shorter than a short id is NotFound, with the rule in the message."""
    ref = ref.strip()
    if is_uuid(ref):
        return ref.lower()
    if short_id_digits(ref) is not None:
        return match_short_id(kind, ref, all_ids())
    if ref and set(ref.lower().replace("-", "")) <= _HEX:
        raise NotFound(
            f"{kind} {ref!r} not found: give its id, or at least its first "
            f"{SHORT_ID_MIN_CHARS} hex digits"
        )
    return ref


def zset_members(r: redis.Redis, key: str) -> Iterator[str]:
    """Every member of the zset ``key`` in order, ``SHORT_ID_PAGE_IDS`` per ZRANGE."""
    start = 0
    while True:
        page = r.zrange(key, start, start + SHORT_ID_PAGE_IDS - 1)
        yield from page
        if len(page) < SHORT_ID_PAGE_IDS:
            return
        start += SHORT_ID_PAGE_IDS
