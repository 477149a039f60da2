"""End to end: a task array's tasks run in their node's task sandbox; the opt-out
annotation keeps a container per task.

A task can tell: in a sandbox its container's PID 1 is the task server, bound at
``/.fuzz-tasks``; in a container of its own there is no such file. Each workflow's
command succeeds only where it runs as the test expects, so the workflow's state says it.
"""

from __future__ import annotations

import os
from pathlib import Path

from fuzz.testing.oci import PushedImage, free_port
from tests.support.workflowutil import local_cluster

FUZZFILE = """\
version: v1
jobs:
  work:
    image: {{uri: {image}}}
    command: [sh, -c, '{check} && test "$FB_TASK_ID" -ge 1']
    resource: {{cpu: {{cores: 1}}, memory: {{size: 32MiB}}}}
    task-array: {{start: 1, end: 6}}
{annotations}"""
IN_SANDBOX = "test -e /.fuzz-tasks"
OWN_CONTAINER = "test ! -e /.fuzz-tasks"
OPT_OUT = '    annotations: {fuzz.io/task-sandbox: "false"}\n'


def test_task_arrays_run_in_sandboxes_unless_their_job_opts_out(
    tmp_path: Path, busybox_image: PushedImage
) -> None:
    os.chmod(tmp_path, 0o755)  # jobs run as nobody
    with local_cluster(tmp_path, [busybox_image.registry.host], free_port()) as cluster, \
            cluster.client() as client:
        for name, check, annotations in (("sandboxed", IN_SANDBOX, ""),
                                         ("opted-out", OWN_CONTAINER, OPT_OUT)):
            client.start_workflow(name, FUZZFILE.format(
                image=busybox_image.reference, check=check, annotations=annotations),
                "Fuzzfile")
            updates = list(client.watch_workflow(name))
            assert updates and updates[-1].state == "SUCCEEDED", (name, updates[-1:])
