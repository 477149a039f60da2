"""The agent's container runtime: OCI bundles, the monitor's client, exec and port forwards.

:mod:`~fuzz.substrate.runtime.bundle` writes a job's OCI config (with the
:mod:`~fuzz.substrate.runtime.seccomp` profile), :mod:`~fuzz.substrate.runtime.containers`
runs containers through the monitor (:mod:`fuzz.substrate.monitor`), and
:mod:`~fuzz.substrate.runtime.execproc` runs ``runc exec`` (with the ``python -S`` reaper
of :mod:`~fuzz.substrate.runtime.exec_reaper`). Nothing here imports the agent's
capacity, images or RPC packages.
"""
