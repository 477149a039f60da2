"""Pure scheduling decisions: no I/O, no clocks, the same answer for the same input.

:mod:`~fuzz.scheduler.placement` chooses the registered nodes each pending job runs
on, by counts of cores, memory and devices; the node agent then packs the exact
CPUs when the orchestrator acquires the lease (:mod:`fuzz.substrate.capacity.leases`).
"""
