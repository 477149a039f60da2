"""The chaos soak's workload and its books (bench/chaos.py): what each task does, what a run lost.

The workload is what a user would write: one task array whose tasks sleep 1 to 3
seconds. Each task keeps its own books in a persistent volume: the moment its
work starts it appends ``start`` to a file named after its index, and ``end``
once its work is done. Those marks are written by the containers themselves, so
they do not depend on the orchestrator's bookkeeping: a file holding two
``start`` lines is a task whose work started twice. The workload sets no retry
policy, so no second start was ever asked for.

:func:`tally` reads the marks and the workflow's final task states: a task is
*lost* when it did not end SUCCEEDED, *run twice* when its work started more than
once.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

MARKS_MOUNT = "/marks"
START, END = "start", "end"

_FUZZFILE = """\
version: v1
volumes:
  marks: {{reference: volume://user/persistent/{volume}}}
jobs:
  soak:
    image: {{uri: {image}}}
    script: |
      mark={mount}/$FUZZ_TASK_ID
      echo {start} >> $mark
      sleep $((1 + FUZZ_TASK_ID % 3))
      echo {end} >> $mark
    mounts: {{marks: {{location: {mount}}}}}
    resource: {{cpu: {{cores: 1}}, memory: {{size: 32MiB}}}}
    task-array: {{start: {first}, end: {last}}}
"""


def soak_fuzzfile(image: str, volume: str, tasks: int, first: int = 1) -> str:
    """The soak's Fuzzfile: tasks ``first`` to ``first + tasks - 1`` of one task array, each
    marking its start and end in the persistent volume ``volume`` (mounted at /marks)."""
    return _FUZZFILE.format(image=image, volume=volume, mount=MARKS_MOUNT, start=START,
                            end=END, first=first, last=first + tasks - 1)


@dataclass(frozen=True)
class Marks:
    """What one task wrote in its marks file."""

    starts: int = 0
    ends: int = 0


def read_marks(directory: Path) -> dict[int, Marks]:
    """Every task's marks in the volume ``directory``, by task index."""
    found: dict[int, Marks] = {}
    for path in directory.iterdir():
        if not path.name.isdigit():
            continue
        lines = path.read_text().split()
        found[int(path.name)] = Marks(lines.count(START), lines.count(END))
    return found


@dataclass(frozen=True)
class Tally:
    """What a run lost and what it repeated, as task indices."""

    lost: tuple[int, ...]  # did not end SUCCEEDED (or the workflow never reported them)
    run_twice: tuple[int, ...]  # their work started more than once
    unfinished_work: tuple[int, ...]  # SUCCEEDED, but their work never wrote its end mark


def tally(states: Mapping[int, str], marks: Mapping[int, Marks], indices: range) -> Tally:
    """The books of a run of the tasks ``indices``: ``states`` are the tasks' final states
    by index (as the orchestrator reports them), ``marks`` what the tasks themselves wrote."""
    lost = tuple(i for i in indices if states.get(i) != "SUCCEEDED")
    run_twice = tuple(i for i in indices if marks.get(i, Marks()).starts > 1)
    unfinished = tuple(i for i in indices
                       if states.get(i) == "SUCCEEDED" and marks.get(i, Marks()).ends < 1)
    return Tally(lost, run_twice, unfinished)
