"""Townhall's Flask application: ``create_app(config)`` builds it from blueprints.

Blueprints follow the scope groups: ``public`` (no auth: probes, metrics, scaling, the spec),
``read`` (``town.read``), ``write`` (``town.write``), ``manage`` (``agent.manage``). Errors are
problem details (:mod:`.problems`), bodies are checked by :mod:`.validation`, and auth and the
audit log live in :mod:`.access`.
"""

from __future__ import annotations

import time

from flask import Flask

from tinytown.api.access import install_audit
from tinytown.api.auth import Authenticator
from tinytown.api.manage import manage
from tinytown.api.problems import register_error_handlers
from tinytown.api.public import public
from tinytown.api.read import read
from tinytown.api.write import write
from tinytown.config import Config
from tinytown.keeper import Keeper
from tinytown.store import Town

BLUEPRINTS = (public, read, write, manage)


def create_app(
    config: Config, town: Town | None = None, *, keeper: bool = False, **auth_options
) -> Flask:
    """The townhall app for ``config``; connects to (and if needed starts) the town's Redis.

    ``keeper``: start this process's :class:`tinytown.keeper.Keeper`, which recovers dead
    agents' work by itself (townhall.py does; tests that build an app directly need not).
    ``auth_options`` go to :class:`tinytown.api.auth.Authenticator` (e.g. ``cache_ttl_secs=0`` to
    measure Argon2 without the verification cache).
    """
    app = Flask("townhall", static_folder=None)
    app.config["STARTED_MONOTONIC"] = time.monotonic()
    app.config["TOWN"] = town = town or Town.connect(config)
    app.config["MISSIONS"] = town.missions
    app.config["AUTHENTICATOR"] = Authenticator(config.townhall.auth, **auth_options)
    app.config["MAX_CONTENT_LENGTH"] = config.townhall.max_body_bytes
    app.json.sort_keys = False
    app.url_map.strict_slashes = False
    register_error_handlers(app)
    install_audit(app)
    for bp in BLUEPRINTS:
        app.register_blueprint(bp)
    if keeper:
        app.config["KEEPER"] = Keeper(town).start()
    return app
