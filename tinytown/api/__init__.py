"""Townhall's Flask application: ``create_app(config)`` builds it from blueprints.

Blueprints follow the scope groups: ``public`` (no auth: probes, metrics, scaling, the spec),
``read`` (``town.read``), ``write`` (``town.write``), ``manage`` (``agent.manage``); ``a2a_card``
and ``a2a`` serve the A2A agent card and its JSON-RPC endpoint (:mod:`.a2a`). Errors are
problem details (:mod:`.problems`), bodies are checked by :mod:`.validation`, auth and the
audit log live in :mod:`.access`, and what a web browser may not ask is in :mod:`.browsers`.
"""

from __future__ import annotations

import time

from flask import Flask

from tinytown.api import browsers
from tinytown.api.a2a import a2a, a2a_card
from tinytown.api.access import install_audit
from tinytown.api.auth import Authenticator
from tinytown.api.feed import feed
from tinytown.api.manage import manage
from tinytown.api.mcp_http import mcp
from tinytown.api.output import output
from tinytown.api.page import page
from tinytown.api.problems import register_error_handlers
from tinytown.api.public import public
from tinytown.api.read import read
from tinytown.api.reports import reports
from tinytown.api.signals import SignalCache
from tinytown.api.write import write
from tinytown.config import Config
from tinytown.keeper import Keeper
from tinytown.missions.dispatcher import Dispatcher
from tinytown.sampler import Sampler
from tinytown.store import Town
from tinytown.store.pump import EventPump
from tinytown.store.task_tokens import TaskTokens

BLUEPRINTS = (public, read, feed, write, manage, reports, page, output, mcp, a2a_card, a2a)


def create_app(
    config: Config, town: Town | None = None, *, background: bool = False, **auth_options
) -> Flask:
    """The townhall app for ``config``; connects to (and if needed starts) the town's Redis.

    ``background``: start this process's background duties (townhall.py does; tests that build
    an app directly need not): the :class:`tinytown.keeper.Keeper`, which recovers dead agents'
    work; unless ``[missions] dispatcher = false``, the mission
    :class:`tinytown.missions.dispatcher.Dispatcher`; when ``[[notify]]`` targets exist, the
    :class:`tinytown.notify.deliver.Notifier`, which sends their notifications; and the
    :class:`tinytown.sampler.Sampler`, which keeps the status page's chart.
    ``auth_options`` go to :class:`tinytown.api.auth.Authenticator` (e.g. ``cache_ttl_secs=0`` to
    measure Argon2 without the verification cache).
    """
    app = Flask("townhall", static_folder=None)
    app.config["STARTED_MONOTONIC"] = time.monotonic()
    app.config["TOWN"] = town = town or Town.connect(config)
    pump = EventPump(town).start() if background else None
    app.config["PUMP"] = pump
    app.config["SIGNALS"] = SignalCache(town, pump)
    app.config["AUTHENTICATOR"] = Authenticator(
        config.townhall.auth, task_token_valid=TaskTokens.of(town).valid, **auth_options
    )
    app.config["MAX_CONTENT_LENGTH"] = config.townhall.max_body_bytes
    app.json.sort_keys = False
    app.url_map.strict_slashes = False
    register_error_handlers(app)
    browsers.install(app)  # first: a browser's request townhall must not answer
    install_audit(app)
    for bp in BLUEPRINTS:
        app.register_blueprint(bp)
    if background:
        app.config["KEEPER"] = Keeper(town, pump).start()
        if config.missions.dispatcher:
            app.config["DISPATCHER"] = Dispatcher(
                town,
                tick_secs=config.missions.tick_secs,
                lease_secs=config.missions.lease_secs,
                pump=pump,
            ).start()
        if config.notify:  # requests loads only for it (memory)
            from tinytown.notify.deliver import Notifier

            app.config["NOTIFIER"] = Notifier(town).start()
        app.config["SAMPLER"] = Sampler(town, pump=pump).start()
    return app
