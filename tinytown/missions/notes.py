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
    town.missions.change_items(mission_id, changed, events)
    town.missions.resume(mission_id, move="retry")
    return len(changed)


def apply_note(
    town: Town, mission_id: str, mission: dict, items: list[dict], note: dict
) -> tuple[str, list[str]]:
    """Do what ``note`` asks; returns what happened (for the log) and task ids to cancel."""
    action = notes.read_note(note.get("body") or "")
    state, sender = mission.get("state"), note.get("sender") or "someone"
    if action.action == notes.RESUME:
        if not MISSION["retry"].allows(state):
            return f"{note['body']!r}: the mission is {state}; nothing to resume", []
        return f"resumed ({resume(town, mission_id, items)} failed item(s) retried)", []
    if action.action == notes.PAUSE:
        if not MISSION["pause"].allows(state):
            return f"{note['body']!r}: the mission is {state}; nothing to pause", []
        town.missions.pause(mission_id, f"Paused by {sender}: {note['body']}")
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
