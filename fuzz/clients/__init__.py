"""Typed clients of fuzz's gRPC services, one module each, for whoever calls them.

:mod:`~fuzz.clients.agent` calls a node agent (the orchestrator, the local
provider, the CLI's ``info``), :mod:`~fuzz.clients.orchestrator` the orchestrator
(the CLI, and an agent enrolling or registering), :mod:`~fuzz.clients.iam` its IAM
API. A client imports :mod:`fuzz.rpc` and the generated stubs, never the server
it calls.
"""
