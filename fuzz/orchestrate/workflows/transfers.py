"""The runner's transfers: a volume's ingress before its jobs, its egress after them.

A transfer of a persistent volume waits while a job of another workflow mounts it,
and a job waits while another workflow's transfer copies a volume it mounts. A
transfer's own ``policy`` is honoured: ``retry.attempts`` runs in all (a failed
attempt leaves nothing behind), ``timeout.execute`` fails an attempt that takes
longer, checked as its data streams (every 4 MiB; a stalled connection ends at the
transfer's socket timeouts).
"""

from __future__ import annotations

import time
from collections.abc import Callable

from fuzz.errors import FuzzError
from fuzz.orchestrate.records import TaskRecord, TransferRecord, VolumeRecord
from fuzz.orchestrate.states import ACTIVE_TASK_STATES, TransferState, VolumeState
from fuzz.orchestrate.transfer.ingress_egress import (
    ProgressCallback,
    TransferError,
    TransferResult,
    s3_credentials_from_secret,
)
from fuzz.orchestrate.workflows.base import RunnerBase, mounted_paths
from fuzz.orchestrate.workflows.workflow import ActiveWorkflow, transfer_policy

PROGRESS_SAVE_INTERVAL = 1.0


class TransferSteps(RunnerBase):
    """Starts transfers on the movers' threads and records how they end."""

    def _start_transfer(self, workflow: ActiveWorkflow, move: TransferRecord) -> None:
        ident = (move.workflow_id, move.volume, move.direction, move.seq)
        if ident in self._transfers_running:
            return
        waiting = self._mounted_elsewhere(workflow, workflow.volumes[move.volume])
        if waiting != move.waiting_for:
            move.waiting_for = waiting
            self._store.save(move)
            self._touch()
        if waiting:
            return
        self._transfers_running.add(ident)
        move.state = TransferState.RUNNING
        self._store.save(move, workflow.volumes[move.volume])
        self._touch()
        self._movers.submit(self._transfer, workflow, move)

    def _mounted_elsewhere(self, workflow: ActiveWorkflow, volume: VolumeRecord) -> str:
        """Why no transfer may touch ``volume`` now: it is persistent and a job of another
        workflow mounts it, and could change it under the transfer ('' when none does)."""
        if volume.ephemeral:
            return ""
        for other in self._active.values():
            if other is workflow:
                continue
            for task in other.tasks.values():
                if task.state in ACTIVE_TASK_STATES and \
                        volume.path in mounted_paths(other, task):
                    return (f"waiting until job {task.key} of workflow {other.record.id} no "
                            "longer mounts this persistent volume")
        return ""

    def _transfer(self, workflow: ActiveWorkflow, move: TransferRecord) -> None:
        ident = (move.workflow_id, move.volume, move.direction, move.seq)
        volume = workflow.volumes[move.volume]

        def progress(done: int, total: int | None) -> None:
            with self._lock:
                move.bytes_done, move.bytes_total = done, total or 0
                now = self._clock()
                if now - self._last_progress_save.get(ident, 0.0) >= PROGRESS_SAVE_INTERVAL:
                    self._last_progress_save[ident] = now
                    self._store.save(move)
                    self._touch()

        try:
            credentials = None
            if move.secret:
                credentials = s3_credentials_from_secret(
                    self._secrets.open(workflow.secret_owner(move.secret_scope), move.secret))
            budget = None
            if move.direction == "ingress":
                problem = self._floor_problem("ingress")
                if problem is not None:
                    raise TransferError(problem)
                budget = self._volume_limits.ingress_budget(
                    volume, workflow.fuzzfile.volumes[volume.name].size)
            attempts, limit = 1, None
            policy = transfer_policy(workflow.fuzzfile, move)
            if policy is not None:
                attempts, limit = policy.retry.attempts, policy.timeout.execute
            uri = move.source if move.direction == "ingress" else move.destination

            def attempt(timed: ProgressCallback) -> TransferResult:
                return self._volumes.move(move, volume, workflow.record.owner, credentials,
                                          timed, workflow.volume_ids(volume), budget,
                                          workflow.fuzzfile.files)

            result = self._attempts(attempt, progress, attempts, limit, uri)
        except (TransferError, FuzzError, OSError) as exc:
            with self._lock:
                move.state, move.error = TransferState.FAILED, str(exc)
                volume.state, volume.error = VolumeState.FAILED, str(exc)
                self._after_transfer(ident, move, volume)
            self._settings.metrics.transfer(move.direction, False, 0)
            return
        with self._lock:
            move.state = TransferState.DONE
            move.bytes_done, move.bytes_total = result.size, result.size
            move.sha256 = result.sha256
            move.cached, move.bytes_fetched = result.cached, result.fetched
            siblings = [m for m in workflow.transfers
                        if m.volume == move.volume and m.direction == move.direction]
            if all(m.state == TransferState.DONE for m in siblings):
                volume.state = (VolumeState.READY if move.direction == "ingress"
                                else VolumeState.DONE)
            self._after_transfer(ident, move, volume)
        self._settings.metrics.transfer(move.direction, True, result.size)

    def _attempts(self, attempt: Callable[[ProgressCallback], TransferResult],
                  progress: ProgressCallback, attempts: int, limit: float | None,
                  uri: str) -> TransferResult:
        """``attempt`` run up to ``attempts`` times, each failed once it has run longer
        than ``limit`` seconds; the last failure names how many attempts were made."""
        for _ in range(attempts - 1):
            try:
                return attempt(self._timed(progress, limit, uri))
            except TransferError:
                continue  # the failed attempt left nothing behind: run it again
        try:
            return attempt(self._timed(progress, limit, uri))
        except TransferError as exc:
            if attempts == 1:
                raise
            raise TransferError(f"{exc} (attempt {attempts} of {attempts})") from exc

    def _timed(self, progress: ProgressCallback, limit: float | None,
               uri: str) -> ProgressCallback:
        """``progress``, failing the transfer once ``limit`` seconds have passed."""
        if limit is None:
            return progress
        start = time.monotonic()

        def timed(done: int, total: int | None) -> None:
            if time.monotonic() - start > limit:
                raise TransferError(f"{uri}: timed out after {limit:g}s"
                                    " (the transfer's policy.timeout.execute)")
            progress(done, total)
        return timed

    def _after_transfer(self, ident: tuple[str, str, str, int], move: TransferRecord,
                        volume: VolumeRecord) -> None:
        workflow = self._active.get(move.workflow_id)
        if workflow is not None:
            workflow.dirty = True
        self._transfers_running.discard(ident)
        self._last_progress_save.pop(ident, None)
        self._store.save(move, volume)
        self._touch()

    def _persistent_volumes_in_transfer(self) -> dict[str, str]:
        """The paths of persistent volumes a transfer is running on, and its workflow's id."""
        return {workflow.volumes[move.volume].path: workflow.record.id
                for workflow in self._active.values() for move in workflow.transfers
                if move.state == TransferState.RUNNING
                and not workflow.volumes[move.volume].ephemeral}

    def _held_by_transfer(self, workflow: ActiveWorkflow, task: TaskRecord,
                          in_transfer: dict[str, str]) -> bool:
        """Whether ``task`` must wait: it mounts a persistent volume that another workflow's
        transfer is copying (noted in its ``waiting_for``)."""
        for path in mounted_paths(workflow, task):
            other = in_transfer.get(path)
            if other is not None and other != workflow.record.id:
                why = f"waiting for a transfer of workflow {other} to this persistent volume"
                if task.waiting_for != why:
                    task.waiting_for = why
                    self._store.save(task)
                    self._touch()
                return True
        return False
