"""Townhall's Flask application: ``create_app(config)`` builds it from blueprints."""

from __future__ import annotations

import time

from flask import Flask

from ..config import Config
from ..store import Town
from .public import public


def create_app(config: Config, town: Town | None = None) -> Flask:
    """The townhall app for ``config``; connects to (and if needed starts) the town's Redis."""
    app = Flask("townhall")
    app.config["TOWN"] = town or Town.connect(config)
    app.config["STARTED_MONOTONIC"] = time.monotonic()
    app.register_blueprint(public)
    return app
