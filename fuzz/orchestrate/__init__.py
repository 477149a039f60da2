"""The orchestrator of one cluster (``fuzz server``): workflows run on the nodes that joined it.

:mod:`~fuzz.orchestrate.server` runs the process; :mod:`~fuzz.orchestrate.service`
is its gRPC API; :mod:`~fuzz.orchestrate.store` is the SQLite store of the
:mod:`~fuzz.orchestrate.records` (whose states are in :mod:`~fuzz.orchestrate.states`);
:mod:`~fuzz.orchestrate.secrets` keeps secrets sealed. The rooms below:
:mod:`~fuzz.orchestrate.workflows` runs workflows (the runner, split by step, the DAG,
task attempts, volumes), :mod:`~fuzz.orchestrate.transfer` moves a volume's data in
before its first job and out after its last, :mod:`~fuzz.orchestrate.iam` says who may
do what, and :mod:`~fuzz.orchestrate.cluster` keeps the nodes and elastic pools.
"""
