"""The web UI's pages (Starlette): catalog, forms, workflows, logs, editor, sign-in.

Every page but sign-in needs a signed-in browser (:mod:`.access`); every read and
action goes through the orchestrator's gRPC API as that user (``connect(token)``),
so a user sees what ``fuzz workflow list`` shows them and may do what IAM lets them.
Live parts are server-sent events (htmx's SSE extension swaps them in): a workflow's
status from ``WatchWorkflow``, a task's log from ``StreamJobLog`` with follow, the
workflow list refreshed when it changes.
"""

from __future__ import annotations

import asyncio
import html
import logging
import time
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import AbstractContextManager
from functools import lru_cache
from pathlib import Path
from typing import Any
from urllib.parse import quote

from starlette.applications import Starlette
from starlette.concurrency import iterate_in_threadpool, run_in_threadpool
from starlette.middleware import Middleware
from starlette.middleware.base import BaseHTTPMiddleware, RequestResponseEndpoint
from starlette.requests import Request
from starlette.responses import PlainTextResponse, RedirectResponse, Response, StreamingResponse
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.templating import Jinja2Templates

from fuzz.api import orchestrator_pb2 as pb
from fuzz.catalog.application import (
    TEMPLATE_FILE,
    Application,
    Bundle,
    load_application,
    render_application,
    rendered_name,
)
from fuzz.clients.orchestrator import OrchestratorClient
from fuzz.errors import FuzzError
from fuzz.orchestrate.endpoints.sessions import COOKIE_NAME
from fuzz.orchestrate.endpoints.signin import safe_next
from fuzz.orchestrate.ui import forms, graph
from fuzz.orchestrate.ui.access import Signed, UiAccess
from fuzz.spec.fuzzfile import Fuzzfile
from fuzz.spec.fuzzfile_loader import parse_fuzzfile
from fuzz.spec.workflowref import workflow_ref_problem

logger = logging.getLogger(__name__)

PREFIX = "/ui"
HERE = Path(__file__).parent
FINISHED = frozenset({"SUCCEEDED", "FAILED", "CANCELED"})
LIST_REFRESH_SECONDS = 1.0
EDITOR_FILE = "Fuzzfile"
templates = Jinja2Templates(directory=HERE / "templates")
templates.env.filters["when"] = lambda stamp: time.strftime(
    "%Y-%m-%d %H:%M:%S", time.localtime(stamp)) if stamp else ""

Connect = Callable[[str], AbstractContextManager[OrchestratorClient]]
"""An API client for a user's token (closed when the block ends)."""


class _NotSignedIn(Exception):
    pass


@lru_cache(maxsize=1024)
def _application(catalog: str, key: str, template: str, values: str, metadata: str,
                 where: str) -> Application:
    """An application parsed once per distinct text (the catalog page lists many)."""
    return load_application(catalog, key, Bundle(template, values, metadata, where))


def _applications(reply: pb.ApplicationList) -> tuple[list[Application], list[str]]:
    apps, broken = [], list(reply.broken)
    for bundle in reply.applications:
        try:
            apps.append(_application(bundle.catalog, bundle.app, bundle.template,
                                     bundle.values, bundle.metadata, bundle.where))
        except FuzzError as exc:
            broken.append(str(exc).splitlines()[0])
    return apps, broken


def _sse(event: str, data: str) -> str:
    """One server-sent event (each line of ``data`` a ``data:`` line)."""
    lines = "".join(f"data: {line}\n" for line in data.split("\n"))
    return f"event: {event}\n{lines}\n"


def build_app(access: UiAccess, connect: Connect) -> Starlette:
    """The UI's ASGI app: pages under ``/ui/`` (``/`` goes there)."""

    def signed(request: Request) -> Signed:
        who = access.signed(request.cookies)
        if who is None:
            raise _NotSignedIn
        return who

    def page(request: Request, template: str, who: Signed | None, code: int = 200,
             **context: Any) -> Response:
        return templates.TemplateResponse(request, template, {"who": who, "prefix": PREFIX,
                                                              **context}, status_code=code)

    def apps_of(who: Signed) -> tuple[list[Application], list[str]]:
        with connect(who.token) as client:
            return _applications(client.list_applications())

    def find(who: Signed, catalog: str, key: str) -> Application | None:
        apps, _ = apps_of(who)
        return next((a for a in apps if a.catalog == catalog and a.key == key), None)

    # --- sign-in ---------------------------------------------------------------------

    async def sign_in(request: Request) -> Response:
        wanted = safe_next(request.query_params.get("next", f"{PREFIX}/"))
        if request.method == "GET":
            return page(request, "sign_in.html", None, next=wanted, problem="")
        form = await request.form()
        wanted = safe_next(str(form.get("next", wanted)))
        credential = str(form.get("credential", "")).strip()
        try:
            value, max_age = await run_in_threadpool(access.sign_in, credential)
        except FuzzError as exc:
            return page(request, "sign_in.html", None, 401, next=wanted, problem=str(exc))
        response = RedirectResponse(wanted, 303)
        response.set_cookie(COOKIE_NAME, value, max_age=max_age, path="/", secure=True,
                            httponly=True, samesite="lax")
        return response

    async def sign_out(request: Request) -> Response:
        access.sign_out(request.cookies)
        response = RedirectResponse(f"{PREFIX}/sign-in", 303)
        response.delete_cookie(COOKIE_NAME, path="/", secure=True, httponly=True,
                               samesite="lax")
        return response

    # --- the catalog and its forms -----------------------------------------------------

    def catalog(request: Request) -> Response:
        who = signed(request)
        apps, broken = apps_of(who)
        categories: dict[str, list[Application]] = {}
        for app in sorted(apps, key=lambda a: (a.metadata.category, a.metadata.name)):
            categories.setdefault(app.metadata.category, []).append(app)
        return page(request, "catalog.html", who, categories=categories, broken=broken)

    def application_form(request: Request) -> Response:
        who = signed(request)
        catalog_name, key = request.path_params["catalog"], request.path_params["app"]
        app = find(who, catalog_name, key)
        if app is None:
            return page(request, "message.html", who, 404, title="No such application",
                        message=f"no application {catalog_name}/{key} in the catalogs")
        return page(request, "app_form.html", who, app=app, sections=forms.sections(app),
                    name=key.replace("_", "-"), problem="")

    async def check_field(request: Request) -> Response:
        who = signed(request)
        form = await request.form()
        name = request.path_params["value"]
        app = await run_in_threadpool(find, who, request.path_params["catalog"],
                                      request.path_params["app"])
        value = next((v for v in app.values if v.name == name), None) if app else None
        if app is None or value is None:
            return PlainTextResponse("", 404)
        problem = forms.field_problem(app, value, str(form.get(name, "")))
        return PlainTextResponse(problem or "")

    async def launch(request: Request) -> Response:
        who = signed(request)
        form = {key: str(value) for key, value in (await request.form()).items()}
        return await run_in_threadpool(_launch, request, who, form)

    def _launch(request: Request, who: Signed, form: dict[str, str]) -> Response:
        app = find(who, request.path_params["catalog"], request.path_params["app"])
        if app is None:
            return PlainTextResponse("no such application", 404)
        name = form.pop("workflow_name", "").strip() or app.key.replace("_", "-")
        sections = forms.sections(app, form)
        problem = workflow_ref_problem(name) or "; ".join(forms.problems(sections))
        if not problem:
            try:
                rendered = render_application(app, forms.overrides(app, form))
                with connect(who.token) as client:
                    started = client.start_workflow(
                        name, rendered.text, rendered_name(app.bundle.file(TEMPLATE_FILE)))
                return RedirectResponse(f"{PREFIX}/workflows/{quote(started.id)}", 303)
            except FuzzError as exc:
                problem = str(exc)
        return page(request, "app_form.html", who, 422, app=app, sections=sections,
                    name=name, problem=problem)

    # --- workflows ---------------------------------------------------------------------

    def workflows(request: Request) -> Response:
        who = signed(request)
        with connect(who.token) as client:
            listed = client.list_workflows()
        return page(request, "workflows.html", who, workflows=_newest_first(listed))

    def workflows_events(request: Request) -> Response:
        who = signed(request)

        def events() -> Iterator[str]:
            last = ""
            while True:
                with connect(who.token) as client:
                    listed = client.list_workflows()
                body = templates.get_template("workflow_rows.html").render(
                    workflows=_newest_first(listed), prefix=PREFIX)
                if body != last:
                    last = body
                    yield _sse("rows", body)
                else:
                    yield ": still here\n\n"  # a write: a closed page ends the loop
                time.sleep(LIST_REFRESH_SECONDS)

        return _event_stream(events())

    def workflow(request: Request) -> Response:
        who = signed(request)
        ref = request.path_params["ref"]
        with connect(who.token) as client:
            run = client.get_workflow(ref, with_fuzzfile=True)
        fuzzfile = _run_fuzzfile(run)
        edges = graph.job_edges(fuzzfile) if fuzzfile is not None else None
        persistent = fuzzfile is not None and any(
            service.persist for service in fuzzfile.services.values())
        return page(request, "workflow.html", who, run=run, status=_status(run, edges),
                    finished=run.state in FINISHED, persistent=persistent)

    def workflow_events(request: Request) -> Response:
        who = signed(request)
        ref = request.path_params["ref"]

        def events() -> Iterator[str]:
            with connect(who.token) as client:
                fuzzfile = _run_fuzzfile(client.get_workflow(ref, with_fuzzfile=True))
                edges = graph.job_edges(fuzzfile) if fuzzfile is not None else None
                try:
                    for run in client.watch_workflow(ref):
                        yield _sse("status", _status(run, edges))
                except FuzzError as exc:
                    yield _sse("status", f'<p class="error">{html.escape(str(exc))}</p>')
            yield _sse("end", "")

        return _event_stream(events())

    def _status(run: pb.Workflow, edges: dict[str, tuple[str, ...]] | None) -> str:
        states = graph.job_states([(task.job, task.state) for task in run.tasks])
        svg = graph.draw(edges, states) if edges is not None else ""
        return templates.get_template("status.html").render(
            run=run, svg=svg, prefix=PREFIX, finished=run.state in FINISHED)

    async def cancel(request: Request) -> Response:
        """Cancel (``/cancel``) or stop (``/stop``, a workflow whose services persist)
        the run: the same API call as ``fuzz workflow stop`` and ``cancel``."""
        who = signed(request)
        ref = request.path_params["ref"]

        def do() -> None:
            with connect(who.token) as client:
                client.cancel_workflow(ref)

        try:
            await run_in_threadpool(do)
        except FuzzError as exc:
            stopped = request.url.path.endswith("/stop")
            return page(request, "message.html", who, 400,
                        title="Not stopped" if stopped else "Not canceled", message=str(exc))
        return RedirectResponse(f"{PREFIX}/workflows/{quote(ref)}", 303)

    def log(request: Request) -> Response:
        who = signed(request)
        ref, task = request.path_params["ref"], request.query_params.get("task", "")
        stream = "stderr" if request.query_params.get("stream") == "stderr" else "stdout"
        with connect(who.token) as client:
            run = client.get_workflow(ref)
        return page(request, "log.html", who, run=run, task=task, stream=stream,
                    events=f"{PREFIX}/workflows/{quote(ref)}/log/events?task="
                           f"{quote(task, safe='')}&stream={stream}")

    def log_events(request: Request) -> Response:
        who = signed(request)
        ref, task = request.path_params["ref"], request.query_params.get("task", "")
        stream = "stderr" if request.query_params.get("stream") == "stderr" else "stdout"

        def events() -> Iterator[str]:
            with connect(who.token) as client:
                try:
                    for chunk in client.stream_log(ref, task, stream, follow=True):
                        yield _sse("log", html.escape(chunk.decode("utf-8", "replace")))
                except FuzzError as exc:
                    yield _sse("log", html.escape(f"\n[{exc}]\n"))
            yield _sse("end", "")

        return _event_stream(events())

    # --- the editor --------------------------------------------------------------------

    def editor(request: Request) -> Response:
        who = signed(request)
        return page(request, "editor.html", who, text=STARTER, name="", problems=[],
                    problem="")

    async def editor_check(request: Request) -> Response:
        signed(request)
        text = str((await request.form()).get("fuzzfile", ""))
        problems = await run_in_threadpool(_fuzzfile_problems, text)
        return templates.TemplateResponse(request, "problems.html", {"problems": problems})

    async def editor_start(request: Request) -> Response:
        who = signed(request)
        form = await request.form()
        text, name = str(form.get("fuzzfile", "")), str(form.get("name", "")).strip()
        problems = await run_in_threadpool(_fuzzfile_problems, text)
        problem = workflow_ref_problem(name) if name else "give the workflow a name"
        if not problems and not problem:
            def start() -> pb.Workflow:
                with connect(who.token) as client:
                    return client.start_workflow(name, text, EDITOR_FILE)

            try:
                started = await run_in_threadpool(start)
                return RedirectResponse(f"{PREFIX}/workflows/{quote(started.id)}", 303)
            except FuzzError as exc:
                problem = str(exc)
        return page(request, "editor.html", who, 422, text=text, name=name,
                    problems=problems, problem=problem or "")

    routes = [
        Route("/", lambda request: RedirectResponse(f"{PREFIX}/", 307)),
        Mount(PREFIX, routes=[
            Route("/", catalog),
            Route("/sign-in", sign_in, methods=["GET", "POST"]),
            Route("/sign-out", sign_out, methods=["POST"]),
            Route("/apps/{catalog}/{app}", application_form),
            Route("/apps/{catalog}/{app}", launch, methods=["POST"]),
            Route("/apps/{catalog}/{app}/check/{value}", check_field, methods=["POST"]),
            Route("/workflows", workflows),
            Route("/workflows/events", workflows_events),
            Route("/workflows/{ref}", workflow),
            Route("/workflows/{ref}/events", workflow_events),
            Route("/workflows/{ref}/cancel", cancel, methods=["POST"]),
            Route("/workflows/{ref}/stop", cancel, methods=["POST"]),
            Route("/workflows/{ref}/log", log),
            Route("/workflows/{ref}/log/events", log_events),
            Route("/editor", editor),
            Route("/editor/check", editor_check, methods=["POST"]),
            Route("/editor/start", editor_start, methods=["POST"]),
            Mount("/static", StaticFiles(directory=HERE / "static"), name="static"),
        ]),
    ]
    return Starlette(routes=routes, middleware=[Middleware(_Guard)],
                     exception_handlers={_NotSignedIn: _to_sign_in, FuzzError: _refused})


class _Guard(BaseHTTPMiddleware):
    """Same-origin POSTs only (the cookie is SameSite=Lax as well), headers that keep
    the pages out of frames and their scripts to the UI's own files, and the server's
    time in ``Server-Timing``."""

    async def dispatch(self, request: Request, call_next: RequestResponseEndpoint) -> Response:
        origin = request.headers.get("origin")
        if request.method == "POST" and origin is not None and \
                origin.split("://", 1)[-1] != request.headers.get("host", ""):
            return PlainTextResponse("cross-origin form posts are refused\n", 403)
        began = time.perf_counter()
        response = await call_next(request)
        # the time the server took to the response's start (bench/ui.py reads it)
        response.headers["Server-Timing"] = \
            f"app;dur={(time.perf_counter() - began) * 1000:.1f}"
        response.headers["X-Frame-Options"] = "DENY"
        response.headers["X-Content-Type-Options"] = "nosniff"
        response.headers["Content-Security-Policy"] = (
            "default-src 'self'; img-src 'self' data:; style-src 'self' 'unsafe-inline'; "
            "frame-ancestors 'none'")
        response.headers["Referrer-Policy"] = "same-origin"
        return response


async def _to_sign_in(request: Request, exc: Exception) -> Response:
    target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
    return RedirectResponse(f"{PREFIX}/sign-in?next={quote(target, safe='')}", 303)


async def _refused(request: Request, exc: Exception) -> Response:
    """An API refusal (not found, denied, unreachable) as one sentence on a page."""
    return templates.TemplateResponse(request, "message.html", {
        "who": None, "prefix": PREFIX, "title": "Refused", "message": str(exc)},
        status_code=404 if "no workflow" in str(exc) or "not found" in str(exc) else 400)


def _event_stream(events: Iterator[str]) -> Response:
    async def relay() -> AsyncIterator[str]:
        try:
            async for event in iterate_in_threadpool(events):
                yield event
        except asyncio.CancelledError:
            raise

    return StreamingResponse(relay(), media_type="text/event-stream",
                             headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"})


def _newest_first(listed: list[pb.Workflow]) -> list[pb.Workflow]:
    return sorted(listed, key=lambda run: run.created, reverse=True)


def _run_fuzzfile(run: pb.Workflow) -> Fuzzfile | None:
    """A run's Fuzzfile, parsed (None: it does not parse, which a started run's Fuzzfile
    always does unless fuzz changed since)."""
    try:
        return parse_fuzzfile(run.fuzzfile, run.file_name or EDITOR_FILE).fuzzfile
    except FuzzError:
        return None


def _fuzzfile_problems(text: str) -> list[str]:
    """The editor's text checked as ``fuzz workflow validate`` checks a file: one
    ``Fuzzfile:line:col: field: message`` line per problem."""
    try:
        parse_fuzzfile(text, EDITOR_FILE)
    except FuzzError as exc:
        return str(exc).splitlines()
    return []


STARTER = """\
version: v1
jobs:
  hello:
    image:
      uri: docker://alpine:latest
    script: |
      echo hello
    resource:
      cpu: {cores: 1}
      memory: {size: 64MiB}
"""
