"""Tinytown scaler: turns townhall's scaling signal into agent-worker containers on Docker.

The front door of :mod:`tinytown.scaler` (what a pass does, and which file holds what, is in its
docstring; how to run it on a VM, in ``docs/scaler.md``). Installed, it is the ``tinytown-scaler``
command; ``python scaler.py`` runs the same thing from a checkout, under cron (``--once``) or
systemd (the loop), with the same flags and exit codes.
"""

import sys

from tinytown.scaler.cli import main

if __name__ == "__main__":
    sys.exit(main())
