"""The town's operations, written once: the table REST, MCP, A2A and ``tt mcp-stdio`` share.

Importing the package registers every operation (:mod:`.town`, :mod:`.tasks`, :mod:`.missions`,
:mod:`.agents`); :func:`run` does one by name. See :mod:`.table`.
"""

from tinytown.ops import agents, missions, tasks, town  # noqa: F401  (they register themselves)
from tinytown.ops.table import OPERATIONS, TOOLS, Operation, as_problem, find, run

__all__ = ["OPERATIONS", "TOOLS", "Operation", "as_problem", "find", "run"]
