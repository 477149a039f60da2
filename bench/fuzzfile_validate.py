"""Benchmark: how long ``fuzz workflow validate`` takes per Fuzzfile.

Generates 1,000 realistic Fuzzfiles of 20 jobs each (volumes with ingress and egress,
inline files, defaults, mounts, depends-on and requires, resources, task arrays,
multinode jobs, env), half in v1 and half in v4, writes them to a temporary folder
and validates each as ``fuzz workflow validate FILE`` does
(:func:`fuzz.spec.fuzzfile_loader.load_fuzzfile`: read, size check, YAML with its source
map, the models, the cross-job checks). The baseline, measured in the same run
on the same files, is reading each file and ``yaml.safe_load``-ing it: what any Python
tool that looks at a Fuzzfile pays at least.

Each file is timed twice over: wall-clock and the process's CPU time. The BENCH figure
is the mean CPU time per file, what validating costs whatever else the machine runs
(on a busy shared machine the wall clock adds the waits for a core); the wall-clock
figures are printed beside it.
"""

from __future__ import annotations

import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import yaml

from fuzz.spec.fuzzfile_loader import load_fuzzfile
from fuzz.spec.fuzzfile_upgrade import upgrade_text

FILES = 1_000
JOBS = 20
TARGET_MS = 10.0


def _job(seed: int, index: int) -> str:
    """One job of file ``seed``: its shape cycles through what real Fuzzfiles hold."""
    name = f"step-{index:02d}"
    kind = (seed + index) % 5
    lines = [f"  {name}:",
             f"    image: {{uri: docker://registry.example.org/lab/tool-{kind}:1.{seed % 7}}}"]
    if kind == 0:
        lines += ["    script: |", "      #!/bin/sh", "      set -e",
                  f"      tool --input /data/in/sample-{index}.fa --out /data/out/{index}"]
    else:
        lines += [f"    command: [tool, --threads, {kind + 1}, --step, {index}, "
                  f"/data/in/sample-{index}.fa]"]
    lines += ["    env:", f"      - STEP={index}", "      - LOG_LEVEL=info"]
    if kind != 1:
        lines += ["    mounts:", "      data: {location: /data}",
                  "      scratch: {location: /scratch}"]
    lines += ["    resource:",
              f"      cpu: {{cores: {1 + kind}, affinity: {('CORE', 'NUMA', 'SOCKET')[kind % 3]}}}",
              f"      memory: {{size: {2 + kind}GiB}}"]
    if kind == 2:
        lines += ["      devices: {nvidia.com/gpu: 1}"]
    lines += [f"    policy: {{timeout: {{execute: {1 + kind}h30m}}, retry: {{attempts: 1}}}}"]
    if kind == 3:
        lines += [f"    task-array: {{start: 1, end: {10 + index}, concurrency: 4}}"]
    if kind == 4 and index % 2:
        lines += ["    multinode: {nodes: 2, implementation: openmpi}"]
    if index >= 2 and index % 3 == 0:
        lines += [f"    requires: [step-{index - 1:02d}]"]
    elif index >= 1:
        lines += ["    depends-on:",
                  f"      - {{name: step-{index - 1:02d}, status: FINISHED}}"]
        if index >= 2:
            lines += [f"      - {{name: step-{index - 2:02d}, status: FINISHED}}"]
    return "\n".join(lines)


def fuzzfile_v1(seed: int, jobs: int = JOBS) -> str:
    """A realistic v1 Fuzzfile of ``jobs`` jobs, different for every ``seed``."""
    head = f"""version: v1
files:
  params-{seed}.csv: |
    alpha,beta
    0.{seed % 10},{seed}
defaults:
  job:
    env: [OMP_NUM_THREADS=1]
    policy: {{timeout: {{execute: 2h}}}}
volumes:
  data:
    reference: volume://user/ephemeral
    ingress:
      - source: {{uri: "https://data.example.org/run-{seed}/inputs.tar.gz"}}
        destination: {{uri: file://in/inputs.tar.gz}}
      - source: {{uri: "file://params-{seed}.csv"}}
        destination: {{uri: file://in/params.csv}}
      - source: {{uri: "s3://lab-bucket/ref/genome-{seed % 13}.fa", secret: secret://user/S3}}
        destination: {{uri: file://in/genome.fa}}
    egress:
      - source: {{uri: file://out/results.tar.gz}}
        destination: {{uri: "s3://lab-bucket/runs/{seed}/results.tar.gz", secret: secret://user/S3}}
        policy: {{timeout: {{execute: 30m}}}}
  scratch:
    reference: volume://user/persistent/scratch-{seed % 5}
jobs:
"""
    return head + "\n".join(_job(seed, index) for index in range(jobs)) + "\n"


def corpus(folder: Path, count: int = FILES) -> list[Path]:
    """Write ``count`` generated Fuzzfiles to ``folder``, v1 and v4 taking turns (a v4
    file is a v1 one upgraded: mounts keyed by path, as the catalog writes them)."""
    paths = []
    for seed in range(count):
        dialect = ("v1", "v4")[seed % 2]
        text = fuzzfile_v1(seed) if dialect == "v1" else upgrade_text(fuzzfile_v1(seed))
        path = folder / f"wf-{seed:04d}-{dialect}.yaml"
        path.write_text(text, encoding="utf-8")
        paths.append(path)
    return paths


def validate(path: Path) -> None:
    """What ``fuzz workflow validate FILE`` does, less the printing."""
    load_fuzzfile(path)


def safe_load(path: Path) -> None:
    """The baseline: read the file and ``yaml.safe_load`` it."""
    yaml.safe_load(path.read_text(encoding="utf-8"))


Timing = tuple[float, float]
"""(wall-clock seconds, CPU seconds) of one file."""


def time_each(paths: list[Path], action: Callable[[Path], None]) -> list[Timing]:
    """Wall-clock and CPU seconds ``action`` takes on each file, in order."""
    timings = []
    for path in paths:
        wall, cpu = time.perf_counter(), time.process_time()
        action(path)
        timings.append((time.perf_counter() - wall, time.process_time() - cpu))
    return timings


def _summary(label: str, timings: list[Timing]) -> str:
    wall = sorted(t[0] * 1000 for t in timings)
    cpu = statistics.fmean(t[1] for t in timings) * 1000
    return (f"{label}: CPU {cpu:.2f} ms; wall mean {statistics.fmean(wall):.2f} ms, median"
            f" {statistics.median(wall):.2f} ms, p95 {wall[int(len(wall) * 0.95)]:.2f} ms"
            " per file")


def _mean_cpu_ms(timings: list[Timing]) -> float:
    return statistics.fmean(t[1] for t in timings) * 1000


def main() -> int:
    """Generate the corpus, time validate and the baseline, print the BENCH line."""
    with tempfile.TemporaryDirectory(prefix="fuzzfile-bench-") as tmp:
        paths = corpus(Path(tmp))
        for path in paths[:2]:
            validate(path)  # warm: imports, pydantic's schema build
        size = sum(path.stat().st_size for path in paths) / len(paths)
        dialects = sorted({path.stem.rsplit("-", 1)[1] for path in paths})
        print(f"{len(paths)} Fuzzfiles of {JOBS} jobs ({', '.join(dialects)}),"
              f" {size / 1024:.1f} KiB each on average")
        checked = time_each(paths, validate)
        baseline = time_each(paths, safe_load)
    print(_summary("validate (fuzz workflow validate)", checked))
    print(_summary("baseline (read + yaml.safe_load)", baseline))
    mean = _mean_cpu_ms(checked)
    ratio = mean / _mean_cpu_ms(baseline)
    print(f"ratio validate / baseline (CPU): {ratio:.2f} x")
    print(f"BENCH validate_ms_per_fuzzfile={mean:.2f} ms target<{TARGET_MS:g}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
