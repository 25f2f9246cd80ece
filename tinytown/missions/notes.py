"""Acting on a note to a mission (:mod:`tinytown.core.mission_notes` reads what it asks)."""

from __future__ import annotations

from tinytown.core import mission_notes as notes
from tinytown.core.errors import NotFound, TinytownError
from tinytown.core.missions import json_now
from tinytown.core.states import MISSION
from tinytown.store import Town


def resume(town: Town, mission_id: str, items: list[dict]) -> int:
    """A stopped or failed mission runs again, its failed items with their attempts again.
    Returns how many items were retried."""
    changed, events = notes.retry_failed(mission_id, items, json_now())
    town.missions.resume(mission_id, move="retry")  # first: a refused resume retries nothing
    town.missions.change_items(mission_id, changed, events)
    return len(changed)


def apply_note(
    town: Town, mission_id: str, mission: dict, items: list[dict], note: dict
) -> tuple[str, list[str]]:
    """Do what ``note`` asks; returns what happened (for the log) and task ids to cancel."""
    action = notes.read_note(note.get("body") or "")
    state, sender = mission.get("state"), note.get("sender") or "someone"
    # (the state read with the snapshot may change meanwhile: a stop, a resume over REST; the
    # store's move then refuses, and the note says so instead of failing the dispatcher's round)
    if action.action == notes.RESUME:
        if not MISSION["retry"].allows(state):
            return f"{note['body']!r}: the mission is {state}; nothing to resume", []
        try:
            return f"resumed ({resume(town, mission_id, items)} failed item(s) retried)", []
        except TinytownError as err:
            return f"{note['body']!r}: not resumed: {err}", []
    if action.action == notes.PAUSE:
        if not MISSION["pause"].allows(state):
            return f"{note['body']!r}: the mission is {state}; nothing to pause", []
        try:
            town.missions.pause(mission_id, f"Paused by {sender}: {note['body']}")
        except TinytownError as err:
            return f"{note['body']!r}: not paused: {err}", []
        return "paused", []
    if action.action == notes.REDIRECT:
        try:
            agent = town.agents.resolve(action.agent or "")
            changed, events, cancel = notes.redirect(
                mission_id, items, action.item, agent.id, json_now()
            )
        except (NotFound, TinytownError, ValueError) as err:
            return f"redirect not done: {err}", []
        town.missions.change_items(mission_id, changed, events)
        return f"redirected to {agent.name} ({agent.id})", [cancel] if cancel else []
    return f"noted: {action.reason}", []
