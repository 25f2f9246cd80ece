"""The two A2A dialects on the wire: method names, and how each spells states, roles, parts,
messages, tasks and errors.

A2A 1.0 (the current spec) is proto-JSON: ``SendMessage``, ``TASK_STATE_COMPLETED``,
``ROLE_AGENT``, a part is ``{"text": …}`` or ``{"data": …}``, SendMessage's result wraps the object
(``{"task": …}`` or ``{"message": …}``), and an error carries a ``google.rpc.ErrorInfo``. A2A 0.3
says ``message/send``, ``completed``, ``agent``, tags each object with its ``kind``, and returns
the Task or Message itself. Everything else in this package speaks the neutral state names
(``"input-required"``) and lets a :class:`Dialect` write them.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Any

from tinytown.a2a.errors import A2AError

# A2A task states (0.3's spelling; 1.0 writes TASK_STATE_ and the name in capitals).
SUBMITTED, WORKING, INPUT_REQUIRED = "submitted", "working", "input-required"
COMPLETED, FAILED, CANCELED = "completed", "failed", "canceled"
A2A_STATES = (SUBMITTED, WORKING, INPUT_REQUIRED, COMPLETED, FAILED, CANCELED)

ERROR_INFO_TYPE = "type.googleapis.com/google.rpc.ErrorInfo"
ERROR_DOMAIN = "a2a-protocol.org"
VERSION_HEADER = "A2A-Version"


@dataclass(frozen=True)
class Dialect:
    version: str  # "1.0" or "0.3"

    @property
    def modern(self) -> bool:
        return self.version == "1.0"

    def state(self, state: str) -> str:
        if self.modern:
            return "TASK_STATE_" + state.upper().replace("-", "_")
        return state

    def parse_state(self, value: str) -> str | None:
        """A state as a client spells it → the neutral name; None if it is not one."""
        for state in A2A_STATES:
            if value == self.state(state):
                return state
        return None

    def _kind(self, kind: str) -> dict:
        return {} if self.modern else {"kind": kind}

    def text_part(self, text: str) -> dict:
        return {**self._kind("text"), "text": text}

    def data_part(self, data: dict) -> dict:
        if self.modern:
            return {"data": data, "mediaType": "application/json"}
        return {"kind": "data", "data": data}

    def message(
        self, parts: list[dict], *, context_id: str | None = None, task_id: str | None = None
    ) -> dict:
        """A message from this agent."""
        out = {
            **self._kind("message"),
            "messageId": str(uuid.uuid4()),
            "role": "ROLE_AGENT" if self.modern else "agent",
            "parts": parts,
        }
        if context_id:
            out["contextId"] = context_id
        if task_id:
            out["taskId"] = task_id
        return out

    def artifact(
        self, artifact_id: str, name: str, parts: list[dict], description: str = ""
    ) -> dict:
        out = {"artifactId": artifact_id, "name": name, "parts": parts}
        if description:
            out["description"] = description
        return out

    def task(
        self,
        task_id: str,
        context_id: str,
        state: str,
        *,
        timestamp: str = "",
        message: str = "",
        artifacts: list[dict] = (),
        metadata: dict | None = None,
    ) -> dict:
        """An A2A Task; ``message`` (a sentence) becomes the status's agent message."""
        status: dict[str, Any] = {"state": self.state(state)}
        if timestamp:
            status["timestamp"] = timestamp
        if message:
            status["message"] = self.message(
                [self.text_part(message)], context_id=context_id, task_id=task_id
            )
        out = {**self._kind("task"), "id": task_id, "contextId": context_id, "status": status}
        if artifacts:
            out["artifacts"] = list(artifacts)
        if metadata:
            out["metadata"] = metadata
        return out

    def sent(self, obj: dict, *, is_task: bool) -> dict:
        """SendMessage's result: the Task or Message (1.0 names which)."""
        if self.modern:
            return {"task" if is_task else "message": obj}
        return obj

    def error_data(self, err: A2AError) -> Any:
        """What an error's ``data`` carries: 1.0's ErrorInfo; 0.3's field at fault, if any."""
        fields = {"field": err.field} if err.field else {}
        if self.modern:
            info = {"@type": ERROR_INFO_TYPE, "reason": err.kind.reason, "domain": ERROR_DOMAIN}
            return [{**info, "metadata": fields}]
        return fields or None


V1_0 = Dialect("1.0")
V0_3 = Dialect("0.3")

# Method name → its dialect and what it asks (a verb of :mod:`.methods`).
METHODS: dict[str, tuple[Dialect, str]] = {
    "SendMessage": (V1_0, "send"),
    "GetTask": (V1_0, "get"),
    "CancelTask": (V1_0, "cancel"),
    "ListTasks": (V1_0, "list"),
    "SendStreamingMessage": (V1_0, "stream"),
    "SubscribeToTask": (V1_0, "stream"),
    "CreateTaskPushNotificationConfig": (V1_0, "push"),
    "GetTaskPushNotificationConfig": (V1_0, "push"),
    "ListTaskPushNotificationConfigs": (V1_0, "push"),
    "DeleteTaskPushNotificationConfig": (V1_0, "push"),
    "GetExtendedAgentCard": (V1_0, "extended_card"),
    "message/send": (V0_3, "send"),
    "tasks/get": (V0_3, "get"),
    "tasks/cancel": (V0_3, "cancel"),
    "message/stream": (V0_3, "stream"),
    "tasks/resubscribe": (V0_3, "stream"),
    "tasks/pushNotificationConfig/set": (V0_3, "push"),
    "tasks/pushNotificationConfig/get": (V0_3, "push"),
    "tasks/pushNotificationConfig/list": (V0_3, "push"),
    "tasks/pushNotificationConfig/delete": (V0_3, "push"),
    "agent/getAuthenticatedExtendedCard": (V0_3, "extended_card"),
}


def dialect_of(method: str) -> Dialect:
    """The dialect a method speaks (an unknown one: 0.3 if it is spelled like 0.3's)."""
    if method in METHODS:
        return METHODS[method][0]
    return V0_3 if "/" in method else V1_0


def verb_of(method: str) -> str | None:
    return METHODS[method][1] if method in METHODS else None
