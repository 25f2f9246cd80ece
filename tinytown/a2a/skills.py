"""What the town offers another agent: three skills, each one operation (:mod:`tinytown.ops`).

The card (:mod:`.card`) lists them; :mod:`.messages` decides which one a message asks for.
"""

from __future__ import annotations

from dataclasses import dataclass

TEXT, JSON = "text/plain", "application/json"


@dataclass(frozen=True)
class Skill:
    id: str
    operation: str  # the operation a message for it runs
    name: str
    description: str
    tags: tuple[str, ...]
    examples: tuple[str, ...]
    input_modes: tuple[str, ...]
    output_modes: tuple[str, ...]

    def card_entry(self) -> dict:
        return {
            "id": self.id,
            "name": self.name,
            "description": self.description,
            "tags": list(self.tags),
            "examples": list(self.examples),
            "inputModes": list(self.input_modes),
            "outputModes": list(self.output_modes),
        }


CODING_TASK = Skill(
    "coding-task",
    "backlog.add",
    "Coding task",
    "One coding task for the town's agent workers (Claude Code, Codex, Aider, …). The message's "
    "text is the task's description; a data part may add repo, base_branch, cli, tags and push. "
    "The answer is a Task (submitted); once completed, its artifact 'result' holds what the "
    "worker reported.",
    ("coding", "task", "software"),
    (
        "Fix the failing test in tests/test_parser.py and explain the cause.",
        "Add a --json flag to the export command, with tests.",
    ),
    (TEXT, JSON),
    (TEXT,),
)

MISSION = Skill(
    "mission",
    "mission.start",
    "Mission",
    "A goal written as work items with dependencies: a data part "
    '{"items": [{"key", "title", "description", "depends_on": [keys]}], "title", "policy"}. '
    "Each item becomes a task once the items it depends on are done. The answer is a Task "
    "whose artifacts are the finished items' results.",
    ("mission", "plan", "workflow"),
    (
        '{"title": "Export", "items": [{"key": "design", "title": "Design the format"}, '
        '{"key": "build", "title": "Build it", "depends_on": ["design"]}]}',
    ),
    (JSON,),
    (TEXT, JSON),
)

STATUS = Skill(
    "status",
    "town.get_status",
    "Town status",
    "The town and its agents: states, liveness, current tasks. Send the text 'status' or a data "
    'part {"skill": "status"}; the answer is a Message with one data part.',
    ("status", "agents"),
    ("status",),
    (TEXT, JSON),
    (JSON,),
)

SKILLS = {s.id: s for s in (CODING_TASK, MISSION, STATUS)}
