"""The node agent ("substrate"): one process per node, spoken to over gRPC, never SSH.

It reports the node's inventory (CPUs, NUMA domains, memory, GPUs, labels) and
answers the standard gRPC health check; leases and containers join it later.
Start it with ``fuzz substrate serve`` or ``python -m fuzz.substrate serve``.

Modules: :mod:`~fuzz.substrate.capacity.inventory` reads the machine,
:mod:`~fuzz.substrate.auth` checks bearer tokens, :mod:`~fuzz.substrate.server`
runs the agent process, :mod:`~fuzz.substrate.client` talks to one, and
:mod:`~fuzz.substrate.cli` is the command line. This package must stay light to
import: no rich, no pydantic.
"""
