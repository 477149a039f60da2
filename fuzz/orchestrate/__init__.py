"""The orchestrator of one cluster (``fuzz server``): workflows run on the nodes that joined it.

:mod:`~fuzz.orchestrate.server` runs the process; :mod:`~fuzz.orchestrate.service`
is its gRPC API; :mod:`~fuzz.orchestrate.runner` advances workflows (the DAG in
:mod:`~fuzz.orchestrate.dag`, placement in :mod:`fuzz.scheduler.placement`, task
attempts in :mod:`~fuzz.orchestrate.taskexec`); :mod:`~fuzz.orchestrate.volumes`
and :mod:`~fuzz.orchestrate.transfer` move a volume's data in before its first job
(ingress) and out after its last (egress); :mod:`~fuzz.orchestrate.secretstore`
keeps secrets sealed; :mod:`~fuzz.orchestrate.store` is the SQLite store.
"""
