"""The reconcile engine: desired vs recorded vs observed state, plan, and apply.

Nothing in this package does I/O itself; providers and state storage are reached
through the callables handed to :func:`fuzz.engine.apply.apply_plan`.
"""
