"""The node agent ("substrate"): one process per node, spoken to over gRPC, never SSH.

It reports the node's inventory (CPUs, NUMA domains, memory, GPUs, labels), grants
leases and runs jobs' containers, and answers the standard gRPC health check.
Start it with ``fuzz substrate serve`` or ``python -m fuzz.substrate serve``.

Here: :mod:`~fuzz.substrate.cli` (the command line), :mod:`~fuzz.substrate.server`
(the agent process), :mod:`~fuzz.substrate.jobs` (a job = lease + image + container);
bearer tokens are :mod:`~fuzz.rpc.auth` and the agent's client :mod:`~fuzz.clients.agent`.
Below, one folder per concern: ``rpc/`` (the job, Exec and PortForward
servicers), ``images/``, ``capacity/`` (inventory, leases, devices), ``runtime/``
(OCI bundles, containers, exec) and ``monitor/``, the container monitor, a process of
its own that imports only the standard library. This package must stay light to
import (the monitor and exec's reaper import it under ``python -S``): no rich, no
pydantic, nothing at all in this file.
"""
