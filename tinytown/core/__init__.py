"""The pure core: plain data and rules, no I/O (see README.md in this folder)."""
