"""Load a Fuzzfile, from a file (the CLI) or from text (the server, given it over the API).

Every problem is collected (YAML, the models in :mod:`fuzz.spec.fuzzfile`, the
cross-job checks of :mod:`fuzz.spec.fuzzfile_checks`) and raised together as one
:class:`~fuzz.spec.problems.SpecError`, one ``file:line:col: field: message`` line each.
"""

from __future__ import annotations

import dataclasses
import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path

from fuzz.resources import NodeCapacity
from fuzz.spec.cluster import FUZZFILE_BYTES, LimitsSpec
from fuzz.spec.fuzzfile import Fuzzfile
from fuzz.spec.fuzzfile_checks import fuzzfile_issues
from fuzz.spec.fuzzfile_dialect import dialect_context, dialect_of
from fuzz.spec.problems import Problem, SpecError
from fuzz.spec.validation import validate_document
from fuzz.spec.yamlsource import SourceMap, decode_source, parse_yaml, read_source


@dataclass(frozen=True)
class LoadedFuzzfile:
    """A checked Fuzzfile with where it came from.

    ``path`` is absolute for a file (as given for text), ``source`` maps its fields to
    lines, ``text`` is the file's text and ``content_hash`` the sha256 (hex) of that
    text in UTF-8: the file's bytes, less a leading byte-order mark if it had one.
    """

    fuzzfile: Fuzzfile
    path: Path
    source: SourceMap
    text: str
    content_hash: str


MAX_FUZZFILE_VALUES = 10_000
"""The most values (keys, scalars, lists and mappings) one Fuzzfile may hold: 500
jobs of a dozen values each fit (a task array is one job); parsing this many costs
about half a second and 10 MB, where a dense 1 MiB of YAML (half a million values)
cost 28 s and 549 MB."""


def check_fuzzfile_size(size: int, file: str, limits: LimitsSpec | None = None) -> None:
    """Refuse a Fuzzfile of ``size`` bytes over ``limits.fuzzfile_bytes`` (default 1 MiB).

    The CLI checks before it sends a file and the server before it parses one, so
    both refuse with the same line; raises SpecError (``wf.yaml:1:1: ...``).
    """
    limit = limits.fuzzfile_bytes if limits is not None else FUZZFILE_BYTES
    if size > limit:
        raise SpecError([Problem(file, 1, 1, "", (
            f"the Fuzzfile is {size} bytes, more than the {limit} bytes the orchestrator "
            "accepts (orchestrator.limits.fuzzfile_bytes)"))])


def parse_fuzzfile(
    text: str,
    file: str,
    capacities: Sequence[NodeCapacity] | None = None,
    *,
    capacities_are_nodes: bool = False,
    limits: LimitsSpec | None = None,
    for_start: bool = False,
) -> LoadedFuzzfile:
    """Parse and check a Fuzzfile's ``text``, of either dialect (``version: v1`` or
    ``v4``); ``file`` is the name problems show.

    ``capacities``: what the cluster's nodes (or its pools' offerings) hold; given,
    a job that none of them could hold is a problem. ``capacities_are_nodes``: each
    capacity is one real node (rather than an offering a pool may create many of),
    so a multinode job asking for more suitable nodes than there are is a problem too.
    ``limits``: the cluster's ``orchestrator.limits``; given, a workflow making more
    tasks than they allow (counted, never made) or a task array allowed to run more
    at once is a problem. ``for_start``: what the dialect has but fuzz cannot run yet
    (services, say) is a problem too, each with its reason (the server's start sets
    it; validate does not). Raises SpecError listing every problem in file order.
    """
    document = parse_yaml(text, file, MAX_FUZZFILE_VALUES)
    issues = partial(
        fuzzfile_issues, capacities=capacities, capacities_are_nodes=capacities_are_nodes,
        limits=limits, for_start=for_start,
    )
    fuzzfile = validate_document(document, Fuzzfile, issues,
                                 context=dialect_context(dialect_of(document.data)))
    content_hash = hashlib.sha256(text.encode("utf-8")).hexdigest()
    return LoadedFuzzfile(fuzzfile, Path(file), document.source, text, content_hash)


def load_fuzzfile(
    path: Path,
    display_name: str | None = None,
    capacities: Sequence[NodeCapacity] | None = None,
    *,
    capacities_are_nodes: bool = False,
    limits: LimitsSpec | None = None,
) -> LoadedFuzzfile:
    """Read, parse and check the Fuzzfile at ``path`` (see :func:`parse_fuzzfile`).

    ``display_name`` is how problems name the file (default: ``path`` as given).
    Raises SpecError listing every problem (or only that the file is larger than
    ``limits`` allow: see :func:`check_fuzzfile_size`), or ConfigError (``wf.yaml: no
    such file``) when the file cannot be read.
    """
    name = display_name if display_name is not None else str(path)
    raw = read_source(path, name)
    check_fuzzfile_size(len(raw), name, limits)
    text = decode_source(raw, name)
    loaded = parse_fuzzfile(text, name, capacities, capacities_are_nodes=capacities_are_nodes,
                            limits=limits)
    return dataclasses.replace(loaded, path=path.absolute())
