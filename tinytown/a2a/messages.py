"""An incoming A2A message → the skill it asks for and its operation's arguments.

A message's parts are read the same in both dialects (a part with ``text`` is text, one with
``data`` is data; 0.3's ``kind`` is not needed): the text parts joined are a coding task's
description; one data part may carry arguments. A data part with ``items`` (or ``objectives``,
``issues``, ``docs``) starts a mission; ``{"skill": "status"}``, or the text ``status`` alone,
asks for the town's status. Files are refused (ContentTypeNotSupported).

The client's ``contextId`` is kept as a tag (``a2a-context:<id>``) on the task, or on each of a
mission's items, so that reading the task later answers the same context.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from tinytown.a2a import errors
from tinytown.a2a.errors import A2AError, invalid
from tinytown.a2a.skills import CODING_TASK, MISSION, SKILLS, STATUS, Skill
from tinytown.core import defaults, inputs
from tinytown.core.inputs import InputError, type_name

CONTEXT_TAG_PREFIX = "a2a-context:"
CONTEXT_ID_MAX_CHARS = defaults.INPUT_MAX_TAG_CHARS - len(CONTEXT_TAG_PREFIX)
MISSION_KEYS = ("items", "objectives", "issues", "docs")
STATUS_TEXT = "status"


@dataclass(frozen=True)
class Order:
    """What a message asks: ``skill``'s operation with ``args``; ``task_id`` when the message
    names a task to continue; ``context_id`` as the client gave it."""

    skill: Skill
    args: dict
    context_id: str | None = None
    task_id: str | None = None


def read_send(params: dict) -> Order:
    """SendMessage's (message/send's) params → the order; :class:`A2AError` if unusable."""
    message = params.get("message")
    if not isinstance(message, dict):
        raise invalid(f"'message' must be an object, got {type_name(message)}", "message")
    texts, data = _parts(message.get("parts"))
    context_id = _context_id(message.get("contextId"))
    task_id = message.get("taskId")
    if task_id is not None and not isinstance(task_id, str):
        raise invalid(f"'message.taskId' must be a string, got {type_name(task_id)}", "taskId")
    skill = _skill(texts, data)
    _check_configuration(params.get("configuration"), skill)
    args = _args(skill, texts, data, context_id)
    return Order(skill, args, context_id, task_id or None)


def context_tag(context_id: str) -> str:
    return CONTEXT_TAG_PREFIX + context_id


def context_of(tags: Any) -> str | None:
    """The client's context id among a record's tags, if it gave one."""
    for tag in tags if isinstance(tags, list) else ():
        if isinstance(tag, str) and tag.startswith(CONTEXT_TAG_PREFIX):
            return tag[len(CONTEXT_TAG_PREFIX) :]
    return None


def _parts(parts: Any) -> tuple[list[str], dict | None]:
    if not isinstance(parts, list) or not parts:
        raise invalid("'message.parts' must be a non-empty array of parts", "parts")
    texts: list[str] = []
    data: list[dict] = []
    for i, part in enumerate(parts):
        name = f"message.parts[{i}]"
        if not isinstance(part, dict):
            raise invalid(f"'{name}' must be an object, got {type_name(part)}", "parts")
        kind = part.get("kind")
        if "text" in part or kind == "text":
            if not isinstance(part.get("text"), str):
                raise invalid(f"'{name}.text' must be a string", "parts")
            texts.append(part["text"])
        elif "data" in part or kind == "data":
            if not isinstance(part.get("data"), dict):
                raise invalid(
                    f"'{name}.data' must be an object, got {type_name(part.get('data'))}", "parts"
                )
            data.append(part["data"])
        elif kind == "file" or any(k in part for k in ("file", "raw", "url")):
            raise A2AError(
                errors.CONTENT_TYPE_NOT_SUPPORTED,
                f"'{name}' is a file; this agent reads text and data parts "
                "(text/plain, application/json)",
                status=415,
                field="parts",
            )
        else:
            raise invalid(f"'{name}' has no text, data or file", "parts")
    if len(data) > 1:
        raise invalid(f"the message has {len(data)} data parts; send the arguments in one", "parts")
    return texts, data[0] if data else None


def _context_id(value: Any) -> str | None:
    if value is None or value == "":
        return None
    if not isinstance(value, str):
        raise invalid(f"'message.contextId' must be a string, got {type_name(value)}", "contextId")
    try:
        inputs.text(value, "contextId", max_chars=CONTEXT_ID_MAX_CHARS, multiline=False)
    except InputError as err:
        raise invalid(str(err), "contextId") from None
    if not value.strip() or "," in value:
        raise invalid(
            f"'message.contextId' must be 1-{CONTEXT_ID_MAX_CHARS} characters without a comma",
            "contextId",
        )
    return value


def _skill(texts: list[str], data: dict | None) -> Skill:
    named = (data or {}).get("skill")
    if named is not None:
        if not isinstance(named, str) or named not in SKILLS:  # (a list or object: unhashable)
            raise invalid(
                f"unknown skill {inputs.printable(str(named))!r}; this agent has "
                f"{', '.join(SKILLS)}",
                "skill",
            )
        return SKILLS[named]
    if data is not None and any(key in data for key in MISSION_KEYS):
        return MISSION
    if data is None and "".join(texts).strip().lower() == STATUS_TEXT:
        return STATUS
    return CODING_TASK


def _check_configuration(config: Any, skill: Skill) -> None:
    if config is None:
        return
    if not isinstance(config, dict):
        raise invalid(
            f"'configuration' must be an object, got {type_name(config)}", "configuration"
        )
    if config.get("taskPushNotificationConfig") or config.get("pushNotificationConfig"):
        raise A2AError(
            errors.PUSH_NOT_SUPPORTED,
            "push notifications are not supported; poll GetTask (tasks/get) for the task's state",
        )
    modes = config.get("acceptedOutputModes")
    if isinstance(modes, list) and modes and not _accepts(modes, skill.output_modes):
        raise A2AError(
            errors.CONTENT_TYPE_NOT_SUPPORTED,
            f"the {skill.id} skill answers {', '.join(skill.output_modes)}; the message accepts "
            f"only {', '.join(str(m) for m in modes)[:200]}",
            status=406,
            field="acceptedOutputModes",
        )


def _accepts(modes: list, offered: tuple[str, ...]) -> bool:
    for mode in modes:
        if not isinstance(mode, str):
            continue
        mode = mode.split(";")[0].strip().lower()
        for media in offered:
            kind = media.split("/")[0]
            if mode in (media, "*/*", "*", f"{kind}/*"):
                return True
    return False


def _args(skill: Skill, texts: list[str], data: dict | None, context_id: str | None) -> dict:
    args = {k: v for k, v in (data or {}).items() if k != "skill"}
    text = "\n".join(texts)
    if skill is STATUS:
        return {}
    if skill is MISSION:
        if text.strip() and "title" not in args:
            args["title"] = text
        if context_id and isinstance(args.get("items"), list):
            args["items"] = [_tagged(item, context_id) for item in args["items"]]
        return args
    if text.strip():
        if "description" in args:
            raise invalid(
                "the task's description came twice: as text and as the data part's "
                "'description'; send it once",
                "description",
            )
        args["description"] = text
    elif "description" not in args:
        raise invalid(
            "the message has no text: send the task's description as a text part", "parts"
        )
    return _tagged(args, context_id)


def _tagged(record: Any, context_id: str | None) -> Any:
    """``record`` with the client's context among its tags (left as it is when its tags are not
    a list: the operation says what is wrong with them)."""
    if not context_id or not isinstance(record, dict):
        return record
    tags = record.get("tags")
    if tags is None:
        return {**record, "tags": [context_tag(context_id)]}
    if isinstance(tags, list):
        return {**record, "tags": [*tags, context_tag(context_id)]}
    return record
