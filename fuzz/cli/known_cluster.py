"""What the cluster could hold, for ``fuzz workflow validate``: the nodes of the orchestrator
a command would talk to, when one is known.

Known means: ``--server``/``--token-file`` or ``--context`` given, or a cluster spec
with an ``orchestrator:`` block next to the command. Then validate checks, as
``start`` does on the server, that some node could hold each job. A cluster with
elastic pools is not checked here (the server leaves that to its elastic loop, which
knows the offerings), nor one whose orchestrator does not answer or shows the caller
no node: validate never refuses on a guess. The spec's orchestrator may be down
(validate then checks without it); one the options name must answer.
"""

from __future__ import annotations

from pathlib import Path

from fuzz.cli.connection import target
from fuzz.cli.options import AppContext
from fuzz.clients.orchestrator import AccessDeniedError, OrchestratorClient
from fuzz.errors import FuzzError
from fuzz.resources import NodeCapacity

ASK_TIMEOUT = 10.0  # seconds: validate is a quick check, a silent server is skipped


def named_server(app: AppContext, server: str | None, token_file: Path | None) -> bool:
    """Whether the options name an orchestrator (``--server``/``--token-file``, ``--context``)."""
    return server is not None or token_file is not None or app.access.context is not None


def known_capacities(app: AppContext, server: str | None, token_file: Path | None
                     ) -> list[NodeCapacity] | None:
    """The whole of each node of the known cluster; None when none is known or it cannot
    say. An orchestrator the options name must answer (else its one-line error); the
    spec's may be down (validate then checks what it can without it)."""
    named = named_server(app, server, token_file)
    if not named and not (app.spec_path.exists()
                          and app.spec.spec.orchestrator is not None):
        return None
    try:
        chosen = target(app, server, token_file)
        client = OrchestratorClient(chosen.endpoint, chosen.token, timeout=ASK_TIMEOUT,
                                    tls=chosen.tls)
        try:
            if client.pool_demand().pools:
                return None
            nodes = client.list_nodes()
        finally:
            client.close()
    except AccessDeniedError:  # the caller may not see the nodes or pools: not checked
        return None
    except FuzzError:
        if named:
            raise
        return None
    return [NodeCapacity(name=node.name, cores=node.cores, memory_bytes=node.memory_bytes,
                         devices=dict(node.devices), labels=dict(node.labels))
            for node in nodes] or None
