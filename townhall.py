"""Townhall: the always-on REST API of a town, as a WSGI app for gunicorn.

    gunicorn -c python:tinytown.gunicorn_conf townhall:app

The config module applies ``[townhall]`` from ``tinytown.toml`` (bind, port, workers, TLS).
"""

from tinytown.api import create_app
from tinytown.config import load_config

app = create_app(load_config())
