"""A mission's moves as the store makes them: what a caller writes in a reason is kept as text."""

from __future__ import annotations

from tinytown.missions.start import start_mission


def test_a_failure_reason_with_braces_is_logged_as_written(town):
    """It was read as a format string: an MCP/REST caller's "{" ended in a 500."""
    mission, _ = start_mission(town, items=[{"key": "a", "title": "A"}], title="braces")
    reason = "CI is {red} and {state} } {"
    failed = town.missions.fail(mission.id, reason)
    assert failed.state == "failed" and failed.data["blocked_reason"] == reason
    assert any(
        line.endswith(f"Mission marked failed: {reason}")
        for line in town.missions.log_lines(mission.id)
    )
