"""Stopping a running job whose volume passes ``orchestrator.limits.volume_bytes`` (or its
own v4 ``size``).

Why a watch and not a file-system quota: the volume root is any directory every node
sees (NFS, a parallel file system, a local disk), prepared by nobody. Project quotas
(XFS, ext4 ``prjquota``) need the file system made and mounted for them; a file
system of its own per volume (a loop-mounted image, a sized tmpfs) lives on the one
host that mounts it, not on the other nodes, and a mount made after a node's container
monitor started may not reach its jobs. So the runner measures, every few seconds,
each volume a running task mounts (:func:`~fuzz.orchestrate.transfer.volume_limits.volume_bytes`:
regular files, never following symlinks) and stops every task that mounts one past
the limit; the task fails with the reason, and the volume's failure fails its
workflow. Between two looks a job can write past the limit by what it writes in
that time; where that matters, put ``volume_root`` on a file system with project
quotas, and keep ``orchestrator.disk.min_free`` so the disk itself never fills.

The watch costs one walk of each watched volume per pass; the pause between passes
grows with the time the last walk took (at most a fifth of the runner's time).
"""

from __future__ import annotations

import contextlib
import logging
import time

from fuzz.orchestrate.records import VolumeRecord
from fuzz.orchestrate.states import TaskState
from fuzz.orchestrate.workflows.reports import ReportSteps
from fuzz.orchestrate.workflows.tasks import LaunchPlan, Outcome

log = logging.getLogger(__name__)

QUOTA_INTERVAL = 2.0  # seconds between two looks at the running tasks' volumes, at least
QUOTA_SHARE = 5  # the pause is at least this many times the last look's duration


class QuotaSteps(ReportSteps):
    """The watch over running tasks' volumes, and the outcome of a task it stopped."""

    def _watch_quotas(self) -> None:
        """Until the runner stops: look at the running tasks' volumes, stop the overrunners."""
        pause = QUOTA_INTERVAL
        while not self._stopping.wait(pause):
            began = time.monotonic()
            try:
                self._quota_pass()
            except Exception:  # the watch must outlive any one bad look
                log.exception("volume limit pass failed")
            pause = max(QUOTA_INTERVAL, QUOTA_SHARE * (time.monotonic() - began))

    def _quota_pass(self) -> None:
        """Measure each volume a running task mounts once; stop the tasks of those over."""
        watched: dict[str, tuple[VolumeRecord, int | None, list[tuple[str, LaunchPlan]]]] = {}
        with self._lock:
            for workflow in self._active.values():
                for key, plan in workflow.plans.items():
                    task = workflow.tasks[key]
                    ident = f"{workflow.record.id}/{key}"
                    if task.state != TaskState.RUNNING or ident in self._quota_stops:
                        continue
                    for name in workflow.fuzzfile.container(task.job).mounts:
                        volume, size = workflow.volumes[name], workflow.fuzzfile.volumes[name].size
                        watched.setdefault(volume.path, (volume, size, []))[2].append(
                            (ident, plan))
        for volume, size, holders in watched.values():
            problem = self._volume_limits.overrun(volume, size)  # outside the lock: it walks
            if problem is None:
                continue
            reason = f"stopped: its volume {volume.name} {problem}"
            with self._lock:
                for ident, _ in holders:
                    self._quota_stops[ident] = reason
            for ident, plan in holders:
                log.info("task %s: %s", ident, reason)
                with contextlib.suppress(Exception):  # it may have ended meanwhile
                    self._executor.cancel(plan)

    def finished(self, workflow_id: str, key: str, outcome: Outcome) -> None:
        """An attempt ended; one the watch stopped fails with the watch's reason."""
        with self._lock:
            reason = self._quota_stops.pop(f"{workflow_id}/{key}", None)
        if reason is not None and outcome.state != TaskState.SUCCEEDED:
            outcome = Outcome(TaskState.FAILED, outcome.exit_code, reason)
        super().finished(workflow_id, key, outcome)
