"""The agent's calls for many containers at once, on a real agent running real containers.

WatchContainers pushes each container's end (what WaitContainer answers) on one stream;
a new stream first sends the ends not acknowledged yet (by removing the container), also
after the agent's restart. RemoveContainers removes several, each with its own outcome;
StartContainers starts several, side by side, each with its own outcome.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest

from fuzz.api import substrate_pb2
from fuzz.clients.agent import AgentClient, AgentError, start_request
from fuzz.resources import ResourceRequest
from fuzz.rpc.client import DuplexCall
from tests.substrate.test_substrate_agent import TOKEN, Agent
from tests.substrate.test_substrate_job_rpc import _restart, running_node
from tests.support.registry import PushedImage

ONE_CORE = ResourceRequest(cores=1, memory_bytes=32 * 2**20)


@pytest.fixture
def node(tmp_path: Path, busybox_image: PushedImage) -> Iterator[tuple[Agent, AgentClient]]:
    """An agent that may pull from the test registry; everything it started is gone after."""
    with running_node(tmp_path, busybox_image) as running:
        yield running


class _Watch:
    """A WatchContainers stream read in a thread: its events on a queue."""

    def __init__(self, client: AgentClient) -> None:
        self.call: DuplexCall[substrate_pb2.ContainerEvent] = client.watch_containers()
        self.events: queue.SimpleQueue[substrate_pb2.ContainerEvent | Exception] = \
            queue.SimpleQueue()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        try:
            for event in self.call:
                self.events.put(event)
        except Exception as exc:  # handed to the test (a cancelled call ends so too)
            self.events.put(exc)

    def next(self, timeout: float = 30.0) -> substrate_pb2.ContainerEvent:
        item = self.events.get(timeout=timeout)
        assert not isinstance(item, Exception), item
        return item

    def backlog(self) -> dict[str, substrate_pb2.ContainerStatus]:
        """The ends sent before ``caught_up``."""
        ends = {}
        while not (event := self.next()).caught_up:
            ends[event.ended.id] = event.ended
        return ends


def test_ends_are_pushed_and_sent_again_until_removed(
    node: tuple[Agent, AgentClient], busybox_image: PushedImage
) -> None:
    agent, client = node
    client.start_container("job-early", busybox_image.reference, lease=ONE_CORE,
                           args=["sh", "-c", "exit 3"])
    client.wait_container("job-early", 30)
    watch = _Watch(client)
    try:
        assert set(watch.backlog()) == {"job-early"}  # ended before the stream began
        client.start_container("job-late", busybox_image.reference, lease=ONE_CORE,
                               args=["sh", "-c", "sleep 0.5; echo out; exit 4"])
        pushed = watch.next().ended
        waited = client.wait_container("job-late", 30)
        assert pushed == waited  # the very status WaitContainer answers
        assert (pushed.state, pushed.exit_code, pushed.stdout_bytes) == ("exited", 4, 4)
    finally:
        watch.call.cancel()
    client.remove_container("job-early", release_lease=True)  # acknowledged
    again = _Watch(client)
    try:
        assert set(again.backlog()) == {"job-late"}
    finally:
        again.call.cancel()
    client.close()
    restarted = _restart(agent, busybox_image.registry.host)
    agent.proc = restarted.proc  # the fixture stops whichever process runs now
    with AgentClient(restarted.endpoint, TOKEN) as fresh:
        after = _Watch(fresh)
        try:
            assert after.backlog()["job-late"].exit_code == 4  # not lost by the restart
        finally:
            after.call.cancel()


def test_containers_running_when_the_first_watch_opens_are_watched(
    node: tuple[Agent, AgentClient], busybox_image: PushedImage
) -> None:
    agent, client = node
    client.start_container("job-running", busybox_image.reference, lease=ONE_CORE,
                           args=["sh", "-c", "sleep 1; exit 5"])
    client.close()
    restarted = _restart(agent, busybox_image.registry.host)  # adopted, not yet watched
    agent.proc = restarted.proc
    with AgentClient(restarted.endpoint, TOKEN) as fresh:
        watch = _Watch(fresh)
        try:
            backlog = watch.backlog()
            ended = backlog.get("job-running") or watch.next().ended
            assert (ended.id, ended.exit_code) == ("job-running", 5)
        finally:
            watch.call.cancel()


def test_several_removals_in_one_call_each_with_its_outcome(
    node: tuple[Agent, AgentClient], busybox_image: PushedImage
) -> None:
    _, client = node  # two cores: one job done, one running
    client.start_container("job-done", busybox_image.reference, lease=ONE_CORE, args=["true"])
    client.wait_container("job-done", 30)
    client.start_container("job-busy", busybox_image.reference, lease=ONE_CORE,
                           args=["sleep", "30"])
    outcomes = client.remove_containers(["job-done", "job-missing", "job-busy"])
    assert [None if error is None else error.code for error in outcomes] == [
        None, grpc.StatusCode.NOT_FOUND, grpc.StatusCode.FAILED_PRECONDITION]
    assert [lease.holder for lease in client.list_leases()] == ["job-busy"]
    assert {status.id for status in client.list_containers()} == {"job-busy"}
    client.cancel_container("job-busy", 0.1)
    client.wait_container("job-busy", 30)
    assert client.remove_containers(["job-busy"]) == [None]
    assert client.list_leases() == [] and client.list_containers() == []


def test_several_starts_in_one_call_each_with_its_outcome(
    node: tuple[Agent, AgentClient], busybox_image: PushedImage
) -> None:
    """Each start is what its StartContainer would be: started under its lease, or refused
    with the status that call ends with. The node has two cores for three one-core jobs
    started side by side: one of them is refused."""
    _, client = node
    image = busybox_image.reference
    jobs = ["job-a", "job-b", "job-c"]
    outcomes = client.start_containers([
        *(start_request(job, image, lease=ONE_CORE, args=["sleep", "30"]) for job in jobs),
        start_request("job-d", image, "no-such-lease", args=["true"]),
    ])
    started = {o.id: o for o in outcomes if isinstance(o, substrate_pb2.ContainerStatus)}
    refused = [o.code for o in outcomes if isinstance(o, AgentError)]
    assert len(started) == 2 and set(started) < set(jobs), outcomes
    assert refused == [grpc.StatusCode.RESOURCE_EXHAUSTED,
                       grpc.StatusCode.FAILED_PRECONDITION], outcomes  # its lease is not held
    assert isinstance(outcomes[3], AgentError)  # in order: the last is job-d's
    assert {lease.holder: lease.id for lease in client.list_leases()} == {
        job: status.lease_id for job, status in started.items()}
    for job in started:
        client.cancel_container(job, 0.1)
        assert client.wait_container(job, 30).state in ("exited", "failed")
    assert client.remove_containers(list(started)) == [None, None]
    assert client.list_leases() == [] and client.list_containers() == []


def test_starts_over_the_message_limit_go_in_several_calls(
    node: tuple[Agent, AgentClient], busybox_image: PushedImage
) -> None:
    """Three starts of 1.9 MiB of files each are 5.7 MiB, over gRPC's 4 MiB for a message:
    in one call the agent refused them all; now each is answered for itself."""
    _, client = node
    image = busybox_image.reference
    files = [("/data/blob", b"x" * (19 * 2**20 // 10))]
    outcomes = client.start_containers([
        start_request("job-a", image, lease=ONE_CORE, args=["true"], files=files),
        start_request("job-b", image, lease=ONE_CORE, args=["true"], files=files),
        start_request("job-c", image, "no-such-lease", args=["true"], files=files),
    ])
    assert [o.id for o in outcomes if isinstance(o, substrate_pb2.ContainerStatus)] == [
        "job-a", "job-b"], outcomes
    assert isinstance(outcomes[2], AgentError)
    assert outcomes[2].code == grpc.StatusCode.FAILED_PRECONDITION, outcomes
    for job in ("job-a", "job-b"):
        client.wait_container(job, 30)
    assert client.remove_containers(["job-a", "job-b"]) == [None, None]
