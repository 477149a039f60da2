"""gRPC plumbing shared by the orchestrator, the agent and their clients.

:mod:`~fuzz.rpc.client` opens channels (TLS, bearer tokens, one-line errors),
:mod:`~fuzz.rpc.server` starts servers (TLS files, health service, the token
interceptor), :mod:`~fuzz.rpc.auth` checks bearer tokens and the orchestrator's
certificate, :mod:`~fuzz.rpc.tunnel` frames byte streams in messages. No module
here knows a fuzz service: the services and their clients import this package.
"""
