"""Render an application template with the engine Fuzzball uses: Go's ``text/template``
with the sprig functions, in the small program ``make setup`` builds from
``renderer/main.go`` (into ``bin/fuzz-render``, run here as a subprocess).

Fuzzball's data context (reference §5.4): the root ``.`` (and ``$``) is a map from each
``values.yaml`` name to its value, so templates read ``{{ .Cores }}``. A name the
values do not declare is an error at its line (``missingkey=error``) rather than
Go's ``<no value>`` in the output. ``env``, ``expandenv`` and ``getHostByName`` are
left out of sprig's functions: a template must not read the renderer's environment
or the network.

A template error is one line, ``template.yaml:LINE:COL: FUNCTION: message``: a ``fail``
or ``required`` call shows its message, anything else Go's own words.
"""

from __future__ import annotations

import json
import re
import subprocess
from collections.abc import Mapping
from pathlib import Path

from fuzz.catalog.values import Value
from fuzz.errors import ConfigError
from fuzz.spec.problems import Problem, SpecError

RENDERER = Path(__file__).parent / "bin" / "fuzz-render"
RENDER_TIMEOUT = 30.0
"""Seconds one render may take: a template loops at most over its values."""
RENDER_MAX_BYTES = 16 * 1024 * 1024
"""The most text one render may write (a Fuzzfile may hold 1 MiB by default)."""

_TEMPLATE_NAME = "template"
_GO_ERROR = re.compile(rf"template: {_TEMPLATE_NAME}:(\d+)(?::(\d+))?: (.*)", re.DOTALL)
_CALL_ERROR = re.compile(r"error calling (\w+): (.*)", re.DOTALL)
_EXECUTING = re.compile(rf'executing "{_TEMPLATE_NAME}" at <.*?>: ', re.DOTALL)


class RendererMissingError(ConfigError):
    """``bin/fuzz-render`` was not built (``make setup``)."""


def _template_problem(error: str, file: str) -> Problem:
    """Go's error text as a one-line problem at the template's line and column."""
    match = _GO_ERROR.match(error)
    if match is None:
        return Problem(file, 1, 1, "", " ".join(error.split()))
    line, col, rest = int(match[1]), int(match[2] or 1), match[3]
    call = _CALL_ERROR.search(rest)
    if call is not None:
        return Problem(file, line, col, call[1], " ".join(call[2].split()))
    return Problem(file, line, col, "", " ".join(_EXECUTING.sub("", rest).split()))


def render_template(template: str, values: Mapping[str, Value], file: str) -> str:
    """``template`` rendered with ``values`` (see the module); ``file`` names it in errors.

    Raises SpecError (one problem at the template's line) when the template does not
    parse or its execution fails (a ``fail`` call, say), ConfigError when the renderer
    cannot run.
    """
    request = json.dumps({"name": _TEMPLATE_NAME, "template": template, "values": values,
                          "max_bytes": RENDER_MAX_BYTES})
    try:
        done = subprocess.run([str(RENDERER)], input=request.encode(), capture_output=True,
                              timeout=RENDER_TIMEOUT, check=False)
    except FileNotFoundError as exc:
        raise RendererMissingError(
            f"the template renderer {RENDERER} is not built: run `make setup` (it needs "
            "Debian's golang-go and golang-github-masterminds-sprig-dev)") from exc
    except subprocess.TimeoutExpired as exc:
        raise SpecError([Problem(file, 1, 1, "", f"rendering took longer than "
                                 f"{RENDER_TIMEOUT:.0f} s; is there a loop that never ends?")]
                        ) from exc
    if done.returncode != 0:
        reason = done.stderr.decode(errors="replace").strip() or f"exit {done.returncode}"
        raise ConfigError(f"the template renderer failed: {reason}")
    reply = json.loads(done.stdout)
    if "error" in reply:
        raise SpecError([_template_problem(reply["error"], file)])
    output: str = reply["output"]
    return output
