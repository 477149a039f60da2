"""The container monitor: a helper process per node that runs, waits for and reaps the jobs.

Started by :mod:`fuzz.substrate.runtime.monitor_client` as ``python -S -c`` running
:func:`fuzz.substrate.monitor.process.main`, it imports only the standard library
and this package, so it starts in milliseconds. The one exception is pyroute2, imported
by the job network's own thread (:mod:`fuzz.substrate.monitor.netns`), never at start.
The agent imports the shared pieces (:mod:`~fuzz.substrate.monitor.files`,
:mod:`~fuzz.substrate.monitor.jobnet`) from here; nothing here imports the agent.
"""
