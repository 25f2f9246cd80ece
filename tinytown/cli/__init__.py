"""The ``tt`` command line: one module per command group, wired together in :mod:`.main`."""
