"""The plugins the core brings: the ``local`` provider and the ``local`` state backend.

:mod:`fuzz.plugin.loader` registers them always, before any installed plugin.
"""
