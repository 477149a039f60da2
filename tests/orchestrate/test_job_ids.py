"""Per-tenant job ids: each owner gets a uid:gid of their own from ``orchestrator.job_ids``,
recorded in the orchestrator's store so that it never changes and is never reused."""

from __future__ import annotations

import pwd
import textwrap
from pathlib import Path

import pytest

from fuzz.orchestrate.store import PostgresTarget, Store
from fuzz.orchestrate.workflows.jobids import (
    JobIdAllocator,
    JobIdRange,
    JobIdsExhaustedError,
    range_problem,
)
from fuzz.spec.loader import load_cluster_spec
from fuzz.spec.problems import SpecError


def test_each_owner_gets_ids_of_their_own_that_survive_a_reopen(
        store_target: Path | PostgresTarget) -> None:
    store = Store(store_target)
    ids = JobIdAllocator(store, JobIdRange(200000, 3))
    alice, bob = ids.of("alice"), ids.of("bob")
    assert (alice.uid, alice.gid) == (200000, 200000)
    assert (bob.uid, bob.gid) == (200001, 200001)
    assert ids.of("alice") == alice
    store.close()
    reopened = Store(store_target)
    again = JobIdAllocator(reopened, JobIdRange(200000, 3))
    assert again.of("bob") == bob and again.of("alice") == alice
    assert again.of("carol").uid == 200002
    with pytest.raises(JobIdsExhaustedError, match=r"all 3 job ids of orchestrator\.job_ids "
                       r"\(200000-200002\) are taken: widen the range"):
        again.of("dave")


def test_a_moved_range_keeps_recorded_ids_and_never_reuses_one(
        store_target: Path | PostgresTarget) -> None:
    store = Store(store_target)
    JobIdAllocator(store, JobIdRange(200000, 10)).of("alice")
    moved = JobIdAllocator(store, JobIdRange(300000, 10))
    assert moved.of("alice").uid == 200000  # recorded: it never changes
    assert moved.of("bob").uid == 300000
    back = JobIdAllocator(store, JobIdRange(199999, 10))
    assert back.of("carol").uid == 199999
    assert back.of("dave").uid == 200001  # 200000 is alice's, forever


def test_a_range_holding_ids_of_the_host_is_refused() -> None:
    nobody = pwd.getpwnam("nobody").pw_uid
    assert range_problem(JobIdRange(200000, 100000)) is None
    problem = range_problem(JobIdRange(nobody - 1, 5))
    assert problem is not None and f"uid {nobody} (nobody)" in problem
    taken = range_problem(JobIdRange(200000, 100000), subordinate=[("builder", 231072, 65536)])
    assert taken == ("orchestrator.job_ids (200000-299999) overlaps the subordinate ids of "
                     "builder (231072-296607) on this host: choose a range no account uses")


def _spec(tmp_path: Path, job_ids: str) -> Path:
    path = tmp_path / "fuzz.yaml"
    path.write_text(textwrap.dedent(f"""\
        version: 1
        cluster: demo
        orchestrator:
          job_ids: {job_ids}
        """))
    return path


def test_job_ids_in_the_spec_default_and_refuse_system_ids(tmp_path: Path) -> None:
    default = load_cluster_spec(_spec(tmp_path, "{}"), "fuzz.yaml").spec.orchestrator
    assert default is not None
    assert (default.job_ids.first, default.job_ids.count) == (200000, 100000)
    for bad, said in (
            ("{first: 1000, count: 10}", "orchestrator.job_ids: ids 1000-1009 reach below "
             "65536, where the system's accounts, its login users and nobody (65534) are"),
            ("{first: 4294967000, count: 1000}", "orchestrator.job_ids: ids 4294967000-"
             "4294967999 reach above 4294967294"),
            ("{first: 200000, count: 0}", "orchestrator.job_ids.count: ")):
        with pytest.raises(SpecError) as info:
            load_cluster_spec(_spec(tmp_path, bad), "fuzz.yaml")
        assert len(info.value.problems) == 1
        assert str(info.value).startswith("fuzz.yaml:4:") and said in str(info.value), \
            str(info.value)
