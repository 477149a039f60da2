"""A cluster spec around one ``orchestrator.<key>`` block, loaded as fuzz loads specs."""

from __future__ import annotations

from pathlib import Path

from fuzz.spec.cluster import OrchestratorSpec
from fuzz.spec.loader import load_cluster_spec

SPEC = """\
version: 1
cluster: demo
state: {{backend: local, path: .fuzz/state.json}}
providers: {{local: {{}}}}
orchestrator:
  {key}:
{block}
"""
"""The block's lines start on line 7 (indented four spaces), so problems name 7 and on."""


def load_orchestrator_block(tmp_path: Path, key: str, block: str) -> OrchestratorSpec:
    """The orchestrator section of a spec ``fuzz.yaml`` in ``tmp_path`` whose
    ``orchestrator.<key>`` is ``block``; SpecError as the loader raises it."""
    path = tmp_path / "fuzz.yaml"
    path.write_text(SPEC.format(key=key, block=block))
    orchestrator = load_cluster_spec(path, "fuzz.yaml").spec.orchestrator
    assert orchestrator is not None
    return orchestrator
