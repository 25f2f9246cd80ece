"""Tinytown: a cloud control plane for coding agents fed from Redis.

The package holds what the three front doors share — ``townhall`` (the REST API on gunicorn),
``agent_worker`` (the worker loop) and the ``tt`` CLI: configuration, the Redis connection and
embedded server, key names, records and their state transitions.
"""

__version__ = "0.1.0"
