"""Moving a volume's data: ingress before its first job, egress after its last.

:mod:`~fuzz.orchestrate.transfer.ingress_egress` picks a source and a sink by URI
scheme: :mod:`~fuzz.orchestrate.transfer.local` (volumes and the orchestrator host),
:mod:`~fuzz.orchestrate.transfer.http` and :mod:`~fuzz.orchestrate.transfer.s3`; they
stream through :mod:`~fuzz.orchestrate.transfer.stream`. The guards:
:mod:`~fuzz.orchestrate.transfer.confined` (no symlink, the owner's ids),
:mod:`~fuzz.orchestrate.transfer.host_roots` (where ``file:///`` may go),
:mod:`~fuzz.orchestrate.transfer.ingress_policy` (which addresses http(s) may reach) and
:mod:`~fuzz.orchestrate.transfer.volume_limits` (how much a volume may hold).
"""
