"""The orchestrator: workflows, the DAG runner, volumes and data movement, secrets.

:mod:`~fuzz.orchestrate.transfer` moves a volume's data in before its first job
(ingress) and out after its last (egress).
"""
