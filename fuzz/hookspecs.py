"""The vendor API: the pluggy hooks a provider or state-backend plugin implements.

A plugin is a module (or object) with functions decorated by :data:`hookimpl`,
published through an entry point::

    [project.entry-points."fuzz.providers"]
    mycloud = "fuzz_mycloud.provider"

    [project.entry-points."fuzz.state"]
    mystore = "fuzz_mystore.backend"

Provider hooks are *first-result* hooks: every hook receives the provider
``kind`` (directly or as ``ctx.kind``) and a plugin answers only for the kinds it
declares in :func:`fuzz_provider_kinds`, returning ``None`` for any other kind so
that pluggy asks the next plugin. The same holds for state backends and their
``name``. Failures are reported by raising the typed errors of
:mod:`fuzz.provider_api` (quota, capacity, auth, not found).

``fuzz.testing`` runs the same behavioural suite against any provider; run it
against yours before publishing.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pluggy

from fuzz.provider_api import JoinInfo, NodeObservation, NodeRequest, Offering, ProviderContext
from fuzz.state_api import StateBackend

PROJECT = "fuzz"
hookspec = pluggy.HookspecMarker(PROJECT)
hookimpl = pluggy.HookimplMarker(PROJECT)


# --- providers -------------------------------------------------------------------------


@hookspec
def fuzz_provider_kinds() -> list[str]:  # type: ignore[empty-body]
    """Return the provider kinds this plugin answers for, e.g. ``["aws"]``.

    Every plugin's answer is collected; a kind claimed twice is an error.
    """


@hookspec(firstresult=True)
def fuzz_provider_config_schema(kind: str) -> type[Any] | None:
    """Return the pydantic model that validates a provider block of this ``kind``.

    The model should forbid unknown keys so that typos in a cluster spec are caught
    by ``fuzz validate`` with their file, line and field. Return None for other kinds.
    """


@hookspec(firstresult=True)
def fuzz_provider_offerings(ctx: ProviderContext) -> list[Offering] | None:
    """List the node types this provider block can create, with prices per hour.

    Called by ``fuzz plan`` to check that each pool's offerings exist, and by the
    scheduler to pick the cheapest fit. Return None for other kinds.
    """


@hookspec(firstresult=True)
def fuzz_provider_bootstrap_payload(
    ctx: ProviderContext, node: NodeRequest, join: JoinInfo
) -> str | None:
    """Return the payload that makes a new machine start the fuzz agent.

    For clouds this is cloud-init user-data; for Warewulf an overlay; for the local
    provider a JSON document. It must carry ``join.token`` so the agent can join.
    The engine passes the result back as ``NodeRequest.bootstrap`` to create.
    """


@hookspec(firstresult=True)
def fuzz_provider_create_node(ctx: ProviderContext, node: NodeRequest) -> NodeObservation | None:
    """Create one node, idempotently by ``node.client_token``.

    Calling it twice with the same token must leave exactly one node. The node must
    carry ``node.tags`` (cluster, address, client token) as tags or labels so that
    :func:`fuzz_provider_read_nodes` finds it, even if fuzz crashed right after the
    create call. Return the node as observed now (``pending`` or ``running``).
    """


@hookspec(firstresult=True)
def fuzz_provider_read_nodes(ctx: ProviderContext) -> list[NodeObservation] | None:
    """Return every node this provider block holds for ``ctx.cluster``.

    This is the engine's refresh: a recorded node missing from the answer (or
    reported ``gone``) no longer exists; a listed node that recorded state does not
    know is an orphan, unless its client token matches a pending create.
    """


@hookspec(firstresult=True)
def fuzz_provider_delete_node(ctx: ProviderContext, node: NodeObservation) -> bool | None:
    """Delete one node; return True once it is gone or deleting.

    Must be idempotent: deleting a node that no longer exists returns True.
    """


# --- state backends --------------------------------------------------------------------


@hookspec
def fuzz_state_backend_names() -> list[str]:  # type: ignore[empty-body]
    """Return the backend names this plugin answers for, e.g. ``["s3"]``."""


@hookspec(firstresult=True)
def fuzz_state_config_schema(name: str) -> type[Any] | None:
    """Return the pydantic model that validates the ``state:`` block of backend ``name``.

    The block is validated without its ``backend`` and ``encryption`` keys (fuzz
    handles encryption itself, so a backend only ever sees ciphertext). The model
    should forbid unknown keys; errors then point at the spec's file and line.
    Return None for other names.
    """


@hookspec(firstresult=True)
def fuzz_state_backend(
    name: str, config: Mapping[str, Any], base_dir: Path
) -> StateBackend | None:
    """Return a backend for the ``state:`` block of a cluster spec, or None for other names.

    ``config`` is the block without its ``backend`` and ``encryption`` keys; relative
    paths in it are relative to ``base_dir``, the spec's directory. Raise ConfigError
    for bad keys.
    """
