"""The suite as a library: what the command line does, callable from Python with the same
behaviour and errors. The CLI (:mod:`suite.cli`) only parses flags and prints what these return.

- :mod:`suite.api.runs`: ``suite run`` (a configuration, a grid, a benchmark file; local or shared).
- :mod:`suite.api.work`: ``suite worker`` (storage workers on every device).
- :mod:`suite.api.tuning`: ``suite tune``.
"""
