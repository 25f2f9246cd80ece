"""A2A (Agent2Agent): how another agent reaches the town — the agent card, and the JSON-RPC
methods mapped onto the town's operations (:mod:`tinytown.ops`).

Both wire dialects are served on one endpoint, told apart by the method's name: A2A 1.0
(``SendMessage``, ``GetTask``, ``CancelTask``, ``ListTasks``; proto-JSON shapes) and 0.3
(``message/send``, ``tasks/get``, ``tasks/cancel``; ``kind`` discriminators). No Flask here:
``tinytown/api/a2a.py`` reads the request, authenticates the caller and answers what
:func:`serve` returns (or the :class:`A2AError` it raises).

- :mod:`.skills` what the town offers: coding-task, mission, status
- :mod:`.card` the agent card
- :mod:`.wire` the two dialects: method names, states, parts and objects as each spells them
- :mod:`.messages` an incoming message → the skill and its operation's arguments
- :mod:`.views` our task or mission → an A2A Task
- :mod:`.errors` A2A's error codes, and an operation's Problem → an A2A error
- :mod:`.methods` the methods, each a few operations
"""

from tinytown.a2a.card import agent_card
from tinytown.a2a.errors import A2AError
from tinytown.a2a.methods import mutating, serve
from tinytown.a2a.wire import dialect_of

__all__ = ["A2AError", "agent_card", "dialect_of", "mutating", "serve"]
