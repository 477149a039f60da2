"""The provider conformance kit: one behavioural suite that any provider plugin must pass.

A vendor (or an in-tree provider) subclasses :class:`ProviderConformance` in a test
module and defines a ``conformance_target`` fixture that yields a
:class:`ConformanceTarget`: the plugin object, a configured provider block, and a
way to make the provider's next create fail with each kind of error::

    from fuzz.testing.provider_conformance import ConformanceTarget, ProviderConformance

    class TestMyCloudConformance(ProviderConformance):
        @pytest.fixture
        def conformance_target(self, my_fake_api) -> Iterator[ConformanceTarget]:
            yield ConformanceTarget(plugin=fuzz_mycloud.provider.plugin, context=..., ...)

This module is a pytest plugin (entry point ``pytest11``, loaded wherever fuzz is
installed; ``pytest_plugins = ["fuzz.testing.provider_conformance"]`` also works): it
provides the ``conformance`` fixture, a :class:`ConformanceSession` that vendors
may use in tests of their own.

The kit calls the provider the way the engine does: it loads the plugins through
:func:`fuzz.plugin.loader.load_plugins` (the installed entry point when one registers
the kind, otherwise the target's provider registered in-process) and calls the
provider registered for the kind through :class:`fuzz.lifecycle.gateway.ProviderGateway`,
so that registration is tested too. It builds the node requests itself (addresses, client
tokens, tags, join tokens for a stand-in orchestrator that records agents joining,
:mod:`fuzz.testing.joins`), waits for asynchronous operations with a bounded
timeout, and deletes every node it created.
"""

from __future__ import annotations

import math
import secrets
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import AbstractContextManager
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Literal, get_args

import pytest
from pydantic import BaseModel

from fuzz.engine.model import client_token, node_address
from fuzz.errors import PluginError
from fuzz.lifecycle.gateway import ProviderGateway
from fuzz.plugin.hookspecs import RegisterProvider, hookimpl
from fuzz.plugin.loader import PluginSet, load_plugins
from fuzz.plugin.provider import (
    TAG_ADDRESS,
    TAG_CLIENT_TOKEN,
    TAG_CLUSTER,
    AuthenticationError,
    CapacityUnavailableError,
    JoinInfo,
    NodeNotFoundError,
    NodeObservation,
    NodeRequest,
    NodeState,
    Offering,
    Provider,
    ProviderContext,
    ProviderError,
    QuotaExceededError,
)
from fuzz.testing.joins import JoinRecorder, Registration, join_recorder

ErrorCategory = Literal["quota", "capacity", "auth", "not-found"]
ALL_ERROR_CATEGORIES: frozenset[ErrorCategory] = frozenset(get_args(ErrorCategory))
ERROR_TYPES: Mapping[ErrorCategory, type[ProviderError]] = {
    "quota": QuotaExceededError,
    "capacity": CapacityUnavailableError,
    "auth": AuthenticationError,
    "not-found": NodeNotFoundError,
}
POOL = "conformance"
LABELS = {"role": "conformance"}
KNOWN_ARCHITECTURES = frozenset({"x86_64", "aarch64", "arm64", "ppc64le", "riscv64", "s390x"})


@dataclass(frozen=True)
class ConformanceTarget:
    """A provider under test, configured, with a way to provoke each error category.

    ``plugin`` is the provider object its plugin registers for the context's kind.

    ``inject_error(category)`` returns a context manager within which the
    provider's next create call fails with that category's error (the fake API
    answers with a quota error, the credentials are refused …). A category the
    provider cannot produce is left out of ``error_categories`` and explained in
    ``error_exemptions`` (category → why); the kit shows it as a skip with that
    reason. ``timeout`` bounds every wait for an asynchronous operation (a node
    ``pending`` before ``running``, a delete that takes a moment).
    """

    plugin: Provider
    context: ProviderContext
    offering: str | None
    inject_error: Callable[[ErrorCategory], AbstractContextManager[None]]
    error_categories: frozenset[ErrorCategory] = ALL_ERROR_CATEGORIES
    attributes: Mapping[str, Any] = field(default_factory=dict)
    error_exemptions: Mapping[ErrorCategory, str] = field(default_factory=dict)
    timeout: float = 60.0
    poll_interval: float = 0.1


class ConformanceSession:
    """Talks to one provider block through the registry the way the engine does, and cleans up."""

    def __init__(self, target: ConformanceTarget, joins: JoinRecorder) -> None:
        """Load the target's plugin (installed entry point or in-process) and open a run.

        Nodes it requests join ``joins``, which stands in for the orchestrator.
        """
        self.target = target
        self.joins = joins
        self.context = target.context
        self.plugins = _load_plugins(target)
        self.gateway = ProviderGateway(self.plugins, {self.context.name: self.context})
        self.lineage = f"conformance-{secrets.token_hex(6)}"
        self.created: dict[str, NodeRequest] = {}
        self._next_index = 0

    # --- building requests ---------------------------------------------------------

    def request(self) -> NodeRequest:
        """A new node request (fresh address and client token) with its bootstrap payload."""
        index = self._next_index
        self._next_index += 1
        address = node_address(POOL, index)
        token = client_token(self.lineage, address, 1)
        join = JoinInfo(token=secrets.token_urlsafe(24), orchestrator=self.joins.address)
        node = NodeRequest(
            address=address, pool=POOL, client_token=token, offering=self.target.offering,
            labels=dict(LABELS), attributes=dict(self.target.attributes),
            tags={TAG_CLUSTER: self.context.cluster, TAG_ADDRESS: address, TAG_CLIENT_TOKEN: token},
            join=join,
        )
        return replace(node, bootstrap=self.bootstrap_payload(node))

    # --- hooks ----------------------------------------------------------------------

    def config_schema(self) -> type[Any] | None:
        """The config schema of the provider registered for the target's kind."""
        return self.plugins.require_provider(self.context.kind).impl.config_schema

    def offerings(self) -> list[Offering]:
        """The provider's offerings."""
        return self.gateway.offerings(self.context.name)

    def bootstrap_payload(self, node: NodeRequest) -> str:
        """The bootstrap payload for ``node`` with its own join info."""
        payload = self.gateway.bootstrap_payload(self.context, node, node.join)
        assert isinstance(payload, str), f"bootstrap payload is {type(payload).__name__}, not str"
        return payload

    def create(self, node: NodeRequest) -> NodeObservation:
        """Create ``node``; it is deleted at the end of the test."""
        self.created[node.client_token] = node
        observation = self.gateway.create_node(self.context, node)
        assert isinstance(observation, NodeObservation), (
            f"create returned {type(observation).__name__}, not a NodeObservation"
        )
        return observation

    def read(self, context: ProviderContext | None = None) -> list[NodeObservation]:
        """The provider's nodes (for another cluster's ``context`` when given)."""
        ctx = context or self.context
        nodes = self.gateway.read_nodes(ctx)
        assert isinstance(nodes, list), f"read returned {type(nodes).__name__}, not a list"
        return nodes

    def delete(self, node: NodeObservation) -> bool:
        """Delete ``node``."""
        result = self.gateway.delete_node(self.context, node)
        assert isinstance(result, bool), f"delete returned {type(result).__name__}, not bool"
        return result

    # --- waiting --------------------------------------------------------------------

    def existing(self, token: str) -> list[NodeObservation]:
        """Observations with ``token`` that are not ``gone``."""
        return [n for n in self.read() if n.client_token == token and n.state != "gone"]

    def wait_for_state(self, token: str, state: NodeState) -> NodeObservation:
        """Poll read until the node of ``token`` is in ``state``; fail after the timeout."""
        seen: list[NodeObservation] = []
        deadline = time.monotonic() + self.target.timeout
        while time.monotonic() < deadline:
            seen = [n for n in self.read() if n.client_token == token]
            if len(seen) == 1 and seen[0].state == state:
                return seen[0]
            time.sleep(self.target.poll_interval)
        pytest.fail(f"node {token} not {state} within {self.target.timeout:g}s; read shows {seen}")

    def wait_gone(self, token: str) -> None:
        """Poll read until the node of ``token`` is absent or ``gone``; fail after the timeout."""
        deadline = time.monotonic() + self.target.timeout
        while (left := self.existing(token)) and time.monotonic() < deadline:
            time.sleep(self.target.poll_interval)
        if left:
            pytest.fail(f"node {token} still exists {self.target.timeout:g}s after delete: {left}")

    def cleanup(self) -> list[str]:
        """Delete every node this session created; return what could not be deleted."""
        problems: list[str] = []
        for token in list(self.created):
            try:
                for node in self.existing(token):
                    self.delete(node)
                deadline = time.monotonic() + self.target.timeout
                while self.existing(token) and time.monotonic() < deadline:
                    time.sleep(self.target.poll_interval)
                if self.existing(token):
                    problems.append(f"{token}: still exists after delete")
            except ProviderError as exc:
                problems.append(f"{token}: {exc}")
        return problems


@dataclass(frozen=True)
class _InProcessPlugin:
    """Registers the target's provider when no installed plugin registers its kind."""

    provider: Provider

    @hookimpl
    def fuzz_register_providers(self, register: RegisterProvider) -> None:
        """Register the target's provider."""
        register(self.provider)


def _load_plugins(target: ConformanceTarget) -> PluginSet:
    """The installed plugins, plus the target's provider in-process when none registers it."""
    kind = target.context.kind
    found = load_plugins()
    registered = found.providers.get(kind)
    if registered is None:
        return load_plugins(extra=[(f"conformance:{kind}", _InProcessPlugin(target.plugin))])
    if registered.impl is not target.plugin:
        pytest.fail(
            f"kind {kind!r} is registered by {registered.plugin.origin()} with another "
            f"provider object than the target's"
        )
    return found


@pytest.fixture
def conformance(conformance_target: ConformanceTarget) -> Iterator[ConformanceSession]:
    """A :class:`ConformanceSession` on the target; deletes what it created afterwards."""
    with join_recorder() as joins:
        session = ConformanceSession(conformance_target, joins)
        yield session
        problems = session.cleanup()
    if problems:
        pytest.fail("conformance clean-up left nodes behind: " + "; ".join(problems))


def _check_message(error: ProviderError) -> None:
    message = str(error)
    assert message.strip(), f"{type(error).__name__} has an empty message"
    assert "\n" not in message.strip(), f"the message is not one line: {message!r}"
    assert len(message) >= 15, f"the message does not say what happened: {message!r}"


class ProviderConformance:
    """The behavioural suite. Subclass it (``class TestXConformance(ProviderConformance)``)
    and define a ``conformance_target`` fixture; see the module docstring."""

    def test_plugin_is_registered_for_its_kind(self, conformance: ConformanceSession) -> None:
        """The plugin registers its kind and publishes a strict config schema."""
        kind = conformance.context.kind
        assert kind in conformance.plugins.provider_kinds(), f"no plugin registers kind {kind!r}"
        registered = conformance.plugins.require_provider(kind).impl
        assert registered is conformance.target.plugin, "another provider has the target's kind"
        assert registered.kind == kind, f"registered under {kind!r}, says {registered.kind!r}"
        schema = conformance.config_schema()
        assert schema is not None, f"the {kind!r} provider has no config_schema"
        if isinstance(schema, type) and issubclass(schema, BaseModel):
            assert schema.model_config.get("extra") == "forbid", (
                f"{schema.__name__} accepts unknown keys; set extra='forbid' so typos are errors"
            )
            config = conformance.context.config
            if isinstance(config, BaseModel):
                assert isinstance(config, schema), f"the context's config is not a {schema}"
        other = replace(conformance.context, kind=f"{kind}-not-this-one")
        with pytest.raises(PluginError, match="no provider plugin for"):
            conformance.gateway.offerings_of(other)

    def test_offerings_are_well_formed(self, conformance: ConformanceSession) -> None:
        """Offerings: unique names, positive cores and memory, sane GPUs, prices and arch."""
        offerings = conformance.offerings()
        assert offerings, "the provider offers nothing"
        names = [o.name for o in offerings]
        assert len(names) == len(set(names)), f"duplicate offering names: {names}"
        for o in offerings:
            assert isinstance(o, Offering), f"{o!r} is not an Offering"
            assert o.name.strip(), f"an offering has an empty name: {o!r}"
            assert o.cores > 0 and o.memory_bytes > 0, f"{o.name}: no cores or memory: {o!r}"
            assert o.gpus >= 0 and (o.gpu_model is None or o.gpus > 0), f"{o.name}: {o!r}"
            assert math.isfinite(o.price_per_hour) and o.price_per_hour >= 0, f"{o.name}: price"
            assert o.architecture in KNOWN_ARCHITECTURES, f"{o.name}: arch {o.architecture!r}"
        offering = conformance.target.offering
        assert offering is None or offering in names, f"target offering {offering!r} not in {names}"

    def test_bootstrap_payload_carries_the_join_token_and_starts_the_agent(
        self, conformance: ConformanceSession, tmp_path: Path
    ) -> None:
        """An agent joins the orchestrator with the node's join token and name, and answers
        with the token it registered, labelled with the node's address. A script payload is
        run as a new machine would run it; any other payload is seen through a created node."""
        node = conformance.request()
        assert node.join.token in node.bootstrap, "the bootstrap payload lacks the join token"
        if node.bootstrap.startswith("#!"):
            from fuzz.testing.boot import boot, stop_agents

            try:
                boot(node.bootstrap, tmp_path / "machine", timeout=conformance.target.timeout)
                joined = _joined(conformance, node)
                labels = _agent_labels(joined.endpoint, joined.agent_token)
            finally:
                stop_agents(tmp_path / "machine")
        else:
            conformance.create(node)
            conformance.wait_for_state(node.client_token, "running")
            joined = _joined(conformance, node)
            labels = _agent_labels(joined.endpoint, joined.agent_token)
        assert labels.get(TAG_ADDRESS) == node.address, f"agent labels: {labels}"

    def test_create_is_idempotent_by_client_token(self, conformance: ConformanceSession) -> None:
        """Creating twice with one client token leaves one node."""
        node = conformance.request()
        first = conformance.create(node)
        second = conformance.create(node)
        assert (first.client_token, first.address) == (node.client_token, node.address)
        assert first.state in ("pending", "running"), f"a new node is {first.state}"
        assert second.provider_id == first.provider_id, "the second create made another node"
        nodes = conformance.existing(node.client_token)
        assert [n.provider_id for n in nodes] == [first.provider_id], f"read shows {nodes}"

    def test_distinct_tokens_make_distinct_nodes(self, conformance: ConformanceSession) -> None:
        """Two client tokens are two nodes."""
        a = conformance.create(conformance.request())
        b = conformance.create(conformance.request())
        assert a.provider_id != b.provider_id

    def test_read_finds_created_nodes_by_their_tags(self, conformance: ConformanceSession) -> None:
        """Read lists the node with its address and token once it runs, and only for
        its own cluster."""
        node = conformance.request()
        created = conformance.create(node)
        running = conformance.wait_for_state(node.client_token, "running")
        assert running.provider_id == created.provider_id
        assert running.address == node.address, "read lost the fuzz:address tag"
        other = replace(conformance.context, cluster=f"{conformance.context.cluster}-other")
        leaked = [n for n in conformance.read(other) if n.client_token == node.client_token]
        assert not leaked, f"another cluster's read lists this cluster's node: {leaked}"

    def test_delete_is_idempotent_and_read_reports_gone(
        self, conformance: ConformanceSession
    ) -> None:
        """Delete returns True, the node disappears (or reads ``gone``), deleting again is
        fine."""
        node = conformance.request()
        conformance.create(node)
        running = conformance.wait_for_state(node.client_token, "running")
        assert conformance.delete(running) is True
        conformance.wait_gone(node.client_token)
        assert conformance.delete(running) is True, "deleting a deleted node must return True"
        assert not conformance.existing(node.client_token)

    @pytest.mark.parametrize("category", sorted(ALL_ERROR_CATEGORIES))
    def test_errors_are_typed(
        self, conformance: ConformanceSession, category: ErrorCategory
    ) -> None:
        """A failed create raises the category's ProviderError with a one-line message and
        leaves no node behind."""
        target = conformance.target
        if category not in target.error_categories:
            reason = target.error_exemptions.get(category)
            if not reason:
                pytest.fail(f"the target leaves out {category!r} errors without saying why "
                            f"(ConformanceTarget.error_exemptions)")
            pytest.skip(f"{conformance.context.kind} has no {category!r} errors: {reason}")
        node = conformance.request()
        with target.inject_error(category), pytest.raises(ProviderError) as raised:
            conformance.create(node)
        expected = ERROR_TYPES[category]
        assert isinstance(raised.value, expected), (
            f"{category}: expected {expected.__name__}, got {type(raised.value).__name__}: "
            f"{raised.value}"
        )
        _check_message(raised.value)
        assert not conformance.existing(node.client_token), "a failed create left a node"


def _joined(conformance: ConformanceSession, node: NodeRequest) -> Registration:
    joined = conformance.joins.wait_for(node.join.token, conformance.target.timeout)
    assert joined is not None, (
        f"no agent joined the orchestrator with the node's join token within "
        f"{conformance.target.timeout:g}s"
    )
    assert joined.name == node.address, f"the agent joined as {joined.name!r}"
    return joined


def _agent_labels(endpoint: str, token: str) -> dict[str, str]:
    from fuzz.clients.agent import AgentClient  # gRPC only where an agent is asked

    with AgentClient(endpoint, token) as client:
        return dict(client.inventory().labels)
