"""Benchmarks: one script per question (``bench_<name>.py``), run one by one as scripts or all
together with ``python -m bench`` (see ``suite.py`` and docs/benchmarks.md)."""
