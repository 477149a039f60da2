"""Workflow runs: the runner, split by step, and the pieces it drives.

The runner (:class:`~fuzz.orchestrate.workflows.loop.Runner`) is one object built
from one module per step: :mod:`~fuzz.orchestrate.workflows.base` (its settings,
shared state and look-ups), :mod:`~fuzz.orchestrate.workflows.transfers` (a volume's
ingress and egress), :mod:`~fuzz.orchestrate.workflows.reports` (what attempts report,
and the snapshots the service reads), :mod:`~fuzz.orchestrate.workflows.scheduling`
(placing queued tasks and dispatching attempts), :mod:`~fuzz.orchestrate.workflows.lifecycle`
(submit, cancel, resume, and a run's passes from PENDING to a final state) and
:mod:`~fuzz.orchestrate.workflows.loop` (the decision loop). It drives
:mod:`~fuzz.orchestrate.workflows.dag` (the pure job graph),
:mod:`~fuzz.orchestrate.workflows.tasks` (one attempt on its nodes),
:mod:`~fuzz.orchestrate.workflows.volumes` (volume directories and their transfers),
:mod:`~fuzz.orchestrate.workflows.workflow` (a run's records in memory) and
:mod:`~fuzz.orchestrate.workflows.jobids` (the uid:gid each owner's jobs run as).
"""
