"""A fake Compute Engine API: the REST paths the gcp provider uses, in the real JSON shapes.

Served by :class:`fakes.httpserver.ApiServer`, it answers the real
``google-cloud-compute`` clients (``transport="rest"``) on

- ``GET  /compute/v1/projects/P/zones/Z/machineTypes[/NAME]``
- ``POST /compute/v1/projects/P/zones/Z/instances?requestId=UUID`` (insert)
- ``GET  /compute/v1/projects/P/zones/Z/instances?filter=…`` (list, label filters)
- ``GET|DELETE /compute/v1/projects/P/zones/Z/instances/NAME``
- ``GET  /compute/v1/projects/P/zones/Z/operations/OP`` and ``POST …/OP/wait``

and rejects what Compute Engine rejects, with its error bodies: unknown paths
(404 HTML), unknown query parameters, malformed JSON, missing or invalid fields
(name, machineType, disks, networkInterfaces, labels, metadata, requestId, spot
scheduling), unknown machine types, networks and images, duplicate names, a
missing or wrong bearer token (when one is required), CPU quota (403
quotaExceeded) and an exhausted zone (the operation ends in
ZONE_RESOURCE_POOL_EXHAUSTED). Operations finish ``op_seconds`` after they
start; an instance is STAGING until its insert finishes, then RUNNING, and
STOPPING until its delete finishes.
"""

from __future__ import annotations

import itertools
import json
import re
import threading
import time
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from tests.support.fakes.httpserver import ApiError, Request, Response, Router

LINK = "https://www.googleapis.com/compute/v1/"
NAME_RE = re.compile(r"[a-z](?:[-a-z0-9]{0,61}[a-z0-9])?")
LABEL_KEY_RE = re.compile(r"[a-z][-_a-z0-9]{0,62}")
LABEL_VALUE_RE = re.compile(r"[-_a-z0-9]{0,63}")
METADATA_KEY_RE = re.compile(r"[a-zA-Z0-9-_]{1,128}")
FILTER_TERM_RE = re.compile(r'\(labels\.(?P<key>[-_a-z0-9]+) = "(?P<value>[^"]*)"\)')
MAX_METADATA_BYTES = 512 * 1024
MAX_LABELS = 64
WAIT_CAP = 2.0
COMMON_PARAMS = frozenset({"$alt", "alt", "fields", "key", "prettyPrint", "quotaUser", "userIp"})
LIST_PARAMS = frozenset({"filter", "maxResults", "orderBy", "pageToken", "returnPartialSuccess"})


@dataclass(frozen=True)
class MachineType:
    """A machine type of the fake zone."""

    name: str
    cpus: int
    memory_mb: int
    accelerators: tuple[tuple[str, int], ...] = ()
    architecture: str = "X86_64"


DEFAULT_MACHINE_TYPES = (
    MachineType("e2-standard-2", 2, 8192),
    MachineType("n2-standard-4", 4, 16384),
    MachineType("t2a-standard-4", 4, 16384, architecture="ARM64"),
    MachineType("a2-highgpu-1g", 12, 87040, (("nvidia-tesla-a100", 1),)),
)


@dataclass
class _Operation:
    body: dict[str, Any]
    done_at: float
    on_done: Any = None  # a callable run (under the lock) when the operation finishes
    error: dict[str, Any] | None = None  # the error fields it ends with, if it fails


@dataclass
class GcpComputeFake:
    """The state of one fake project and zone, and the request handlers that change it.

    Tests change the knobs to make the next requests fail the way the real API does:
    ``cpu_quota`` (CPUs the project may run), ``zone_exhausted``, ``networks`` and
    ``images`` (what exists), ``token`` (the bearer token required; None accepts
    anonymous requests, like an emulator).
    """

    project: str = "fuzz-test"
    zone: str = "us-central1-a"
    machine_types: tuple[MachineType, ...] = DEFAULT_MACHINE_TYPES
    networks: set[str] = field(default_factory=lambda: {"default"})
    subnetworks: set[str] = field(default_factory=lambda: {"default"})
    images: set[str] = field(
        default_factory=lambda: {"projects/debian-cloud/global/images/family/debian-12"})
    cpu_quota: int | None = None
    zone_exhausted: bool = False
    token: str | None = None
    op_seconds: float = 0.2
    instances: dict[str, dict[str, Any]] = field(default_factory=dict)
    operations: dict[str, _Operation] = field(default_factory=dict)
    request_ids: dict[str, str] = field(default_factory=dict)
    inserts: list[dict[str, Any]] = field(default_factory=list)
    _lock: threading.Condition = field(default_factory=threading.Condition)
    _ids: itertools.count[int] = field(default_factory=lambda: itertools.count(4_000_000_001))

    def __post_init__(self) -> None:
        zone = r"/compute/v1/projects/(?P<project>[^/]+)/zones/(?P<zone>[^/]+)"
        self.router = Router()
        self.router.add("GET", zone + "/machineTypes", self._list_machine_types)
        self.router.add("GET", zone + r"/machineTypes/(?P<name>[^/]+)", self._get_machine_type)
        self.router.add("POST", zone + "/instances", self._insert)
        self.router.add("GET", zone + "/instances", self._list_instances)
        self.router.add("GET", zone + r"/instances/(?P<name>[^/]+)", self._get_instance)
        self.router.add("DELETE", zone + r"/instances/(?P<name>[^/]+)", self._delete)
        self.router.add("GET", zone + r"/operations/(?P<name>[^/]+)", self._get_operation)
        self.router.add("POST", zone + r"/operations/(?P<name>[^/]+)/wait", self._wait)

    @property
    def region(self) -> str:
        """The zone's region (``us-central1`` for ``us-central1-a``)."""
        return self.zone.rsplit("-", 1)[0]

    def settled_instances(self) -> dict[str, dict[str, Any]]:
        """The instances after finishing every operation whose time has come."""
        with self._lock:
            self._tick()
            return dict(self.instances)

    def __call__(self, request: Request) -> Response:
        """Answer one request as Compute Engine would."""
        if request.path.startswith("/compute/v1/") and self.token is not None:
            _check_token(request, self.token)
        response = self.router.dispatch(request)
        if response is None:
            return Response(404, f"<!DOCTYPE html><title>Error 404 (Not Found)</title><p>"
                                 f"The requested URL <code>{request.path}</code> was not found "
                                 f"on this server.</p>")
        return response

    # --- machine types ------------------------------------------------------------------

    def _list_machine_types(self, request: Request, project: str, zone: str) -> Response:
        self._check_scope(request, project, zone, LIST_PARAMS)
        items = [self._machine_type_body(t) for t in self.machine_types]
        return Response(200, {"kind": "compute#machineTypeList", "id": f"{project}/{zone}",
                              "items": items, "selfLink": f"{self._zone_link()}/machineTypes"})

    def _get_machine_type(self, request: Request, project: str, zone: str, name: str) -> Response:
        self._check_scope(request, project, zone, frozenset())
        for machine in self.machine_types:
            if machine.name == name:
                return Response(200, self._machine_type_body(machine))
        raise _not_found(f"projects/{project}/zones/{zone}/machineTypes/{name}")

    def _machine_type_body(self, machine: MachineType) -> dict[str, Any]:
        body: dict[str, Any] = {
            "kind": "compute#machineType",
            "id": str(abs(hash(machine.name)) % 10**12),
            "creationTimestamp": "1969-12-31T16:00:00.000-08:00",
            "name": machine.name,
            "description": f"{machine.cpus} vCPUs, {machine.memory_mb / 1024:g} GB RAM",
            "guestCpus": machine.cpus,
            "memoryMb": machine.memory_mb,
            "maximumPersistentDisks": 128,
            "maximumPersistentDisksSizeGb": "263168",
            "zone": self.zone,
            "selfLink": f"{self._zone_link()}/machineTypes/{machine.name}",
            "isSharedCpu": False,
            "architecture": machine.architecture,
        }
        if machine.accelerators:
            body["accelerators"] = [{"guestAcceleratorType": kind, "guestAcceleratorCount": n}
                                    for kind, n in machine.accelerators]
        return body

    # --- instances ----------------------------------------------------------------------

    def _insert(self, request: Request, project: str, zone: str) -> Response:
        self._check_scope(request, project, zone, frozenset({"requestId", "sourceInstanceTemplate",
                                                             "sourceMachineImage"}))
        request_id = request.query.get("requestId")
        if request_id is not None:
            _check_request_id(request_id)
        body = _json_body(request)
        with self._lock:
            self._tick()
            if request_id is not None and request_id in self.request_ids:
                return Response(200, self.operations[self.request_ids[request_id]].body)
            machine, name = self._validate_instance(project, body)
            if name in self.instances:
                raise _error(409, f"The resource 'projects/{project}/zones/{zone}/instances/"
                                  f"{name}' already exists", "alreadyExists")
            self._check_quota(machine)
            self.inserts.append({"requestId": request_id, "body": body})
            link = f"{self._zone_link()}/instances/{name}"
            instance_id = str(next(self._ids))
            if self.zone_exhausted:
                operation = self._operation("insert", link, instance_id, on_done=None)
                operation.error = _zone_exhausted_error(project, zone)
            else:
                self.instances[name] = self._instance_body(body, machine, instance_id)
                operation = self._operation("insert", link, instance_id,
                                            on_done=lambda: self._set_status(name, "RUNNING"))
            if request_id is not None:
                self.request_ids[request_id] = operation.body["name"]
            return Response(200, operation.body)

    def _list_instances(self, request: Request, project: str, zone: str) -> Response:
        self._check_scope(request, project, zone, LIST_PARAMS)
        wanted = _parse_label_filter(request.query.get("filter", ""))
        with self._lock:
            self._tick()
            items = [dict(i) for i in self.instances.values()
                     if all(i.get("labels", {}).get(k) == v for k, v in wanted.items())]
        body: dict[str, Any] = {"kind": "compute#instanceList", "id": f"projects/{project}/"
                                f"zones/{zone}/instances", "selfLink": f"{self._zone_link()}"
                                "/instances"}
        if items:
            body["items"] = items
        return Response(200, body)

    def _get_instance(self, request: Request, project: str, zone: str, name: str) -> Response:
        self._check_scope(request, project, zone, frozenset())
        with self._lock:
            self._tick()
            if name not in self.instances:
                raise _not_found(f"projects/{project}/zones/{zone}/instances/{name}")
            return Response(200, dict(self.instances[name]))

    def _delete(self, request: Request, project: str, zone: str, name: str) -> Response:
        self._check_scope(request, project, zone, frozenset({"requestId"}))
        with self._lock:
            self._tick()
            instance = self.instances.get(name)
            if instance is None:
                raise _not_found(f"projects/{project}/zones/{zone}/instances/{name}")
            instance["status"] = "STOPPING"
            operation = self._operation("delete", instance["selfLink"], instance["id"],
                                        on_done=lambda: self.instances.pop(name, None))
            return Response(200, operation.body)

    # --- operations ---------------------------------------------------------------------

    def _get_operation(self, request: Request, project: str, zone: str, name: str) -> Response:
        self._check_scope(request, project, zone, frozenset())
        with self._lock:
            self._tick()
            return Response(200, self._find_operation(project, zone, name).body)

    def _wait(self, request: Request, project: str, zone: str, name: str) -> Response:
        """Like Compute Engine: return once the operation is DONE, or after a while anyway."""
        self._check_scope(request, project, zone, frozenset())
        deadline = time.monotonic() + WAIT_CAP
        with self._lock:
            while True:
                self._tick()
                operation = self._find_operation(project, zone, name)
                left = min(deadline, operation.done_at) - time.monotonic()
                if operation.body["status"] == "DONE" or left <= 0:
                    return Response(200, operation.body)
                self._lock.wait(left)

    def _find_operation(self, project: str, zone: str, name: str) -> _Operation:
        if name not in self.operations:
            raise _not_found(f"projects/{project}/zones/{zone}/operations/{name}")
        return self.operations[name]

    def _operation(self, kind: str, target: str, target_id: str, on_done: Any) -> _Operation:
        now = time.time()
        name = f"operation-{int(now * 1000)}-{uuid.uuid4().hex[:13]}-{uuid.uuid4().hex[:8]}"
        body = {
            "kind": "compute#operation",
            "id": str(next(self._ids)),
            "name": name,
            "zone": self._zone_link(),
            "operationType": kind,
            "targetLink": target,
            "targetId": target_id,
            "status": "RUNNING",
            "user": "fuzz-test@example.iam.gserviceaccount.com",
            "progress": 0,
            "insertTime": _timestamp(now),
            "startTime": _timestamp(now),
            "selfLink": f"{self._zone_link()}/operations/{name}",
        }
        operation = _Operation(body, time.monotonic() + self.op_seconds, on_done)
        self.operations[name] = operation
        return operation

    def _tick(self) -> None:
        """Finish the operations whose time has come (call with the lock held)."""
        now = time.monotonic()
        for operation in self.operations.values():
            if operation.body["status"] != "DONE" and now >= operation.done_at:
                body = operation.body
                body.update(status="DONE", progress=100, endTime=_timestamp(time.time()))
                if operation.error is not None:
                    body.update(operation.error)
                if operation.on_done is not None:
                    operation.on_done()
                self._lock.notify_all()

    def _set_status(self, name: str, status: str) -> None:
        if name in self.instances:
            self.instances[name]["status"] = status

    # --- validation -----------------------------------------------------------------------

    def _check_scope(self, request: Request, project: str, zone: str,
                     params: frozenset[str]) -> None:
        for name in request.query:
            if name not in params | COMMON_PARAMS:
                raise _error(400, f'Invalid JSON payload received. Unknown name "{name}": '
                                  "Cannot bind query parameter. Field '" + name + "' could not "
                                  "be found in request message.", "badRequest")
        if project != self.project:
            raise _error(404, f"The resource 'projects/{project}' was not found", "notFound")
        if zone != self.zone:
            raise _error(400, f"Invalid value for field 'zone': '{zone}'. Unknown zone.",
                         "invalid")

    def _validate_instance(self, project: str, body: dict[str, Any]) -> tuple[MachineType, str]:
        name = body.get("name")
        if not name:
            raise _invalid("resource.name", "", "Must be a match of regex "
                           "'(?:[a-z](?:[-a-z0-9]{0,61}[a-z0-9])?)'", required=True)
        if not isinstance(name, str) or not NAME_RE.fullmatch(name):
            raise _invalid("resource.name", name, "Must be a match of regex "
                           "'(?:[a-z](?:[-a-z0-9]{0,61}[a-z0-9])?)'")
        machine = self._machine_type(body.get("machineType"))
        self._check_disks(body.get("disks"))
        self._check_network(project, body.get("networkInterfaces"))
        _check_labels(body.get("labels", {}))
        _check_metadata(body.get("metadata", {}))
        _check_scheduling(body.get("scheduling", {}), machine)
        return machine, name

    def _machine_type(self, value: Any) -> MachineType:
        if not value:
            raise _error(400, "Required field 'resource.machineType' not specified", "required")
        wanted = str(value).removeprefix(LINK).removeprefix(f"projects/{self.project}/")
        for machine in self.machine_types:
            if wanted == f"zones/{self.zone}/machineTypes/{machine.name}":
                return machine
        raise _invalid("resource.machineType", value,
                       f"Machine type with name '{wanted.rsplit('/', 1)[-1]}' does not exist "
                       f"in zone '{self.zone}'.")

    def _check_disks(self, disks: Any) -> None:
        if not disks:
            raise _error(400, "Invalid value for field 'resource.disks': ''. "
                              "No boot disk specified.", "invalid")
        boots = [d for d in disks if d.get("boot")]
        if len(boots) != 1:
            raise _invalid("resource.disks", "", "Exactly one boot disk must be specified.")
        params = boots[0].get("initializeParams") or {}
        image = params.get("sourceImage")
        if not image and not boots[0].get("source"):
            raise _error(400, "Invalid value for field 'resource.disks[0]': ''. Boot disk must "
                              "specify a source image or an existing disk.", "invalid")
        if image and str(image).removeprefix(LINK) not in self.images:
            raise _not_found(str(image).removeprefix(LINK))

    def _check_network(self, project: str, interfaces: Any) -> None:
        if not interfaces:
            raise _error(400, "Invalid value for field 'resource.networkInterfaces': ''. "
                              "At least one network interface is required.", "invalid")
        nic = interfaces[0]
        network = _last(nic.get("network") or "global/networks/default")
        if network not in self.networks:
            raise _not_found(f"projects/{project}/global/networks/{network}")
        subnetwork = nic.get("subnetwork")
        if subnetwork is not None and _last(subnetwork) not in self.subnetworks:
            raise _not_found(f"projects/{project}/regions/{self.region}/subnetworks/"
                             f"{_last(subnetwork)}")

    def _check_quota(self, machine: MachineType) -> None:
        if self.cpu_quota is None:
            return
        used = sum(self._cpus_of(i) for i in self.instances.values())
        if used + machine.cpus > self.cpu_quota:
            raise _error(403, f"Quota 'CPUS' exceeded.  Limit: {self.cpu_quota:.1f} in region "
                              f"{self.region}.", "quotaExceeded", domain="usageLimits")

    def _cpus_of(self, instance: dict[str, Any]) -> int:
        name = _last(instance["machineType"])
        return next(m.cpus for m in self.machine_types if m.name == name)

    def _instance_body(self, body: dict[str, Any], machine: MachineType,
                       instance_id: str) -> dict[str, Any]:
        name = body["name"]
        nic = body["networkInterfaces"][0]
        network = _last(nic.get("network") or "default")
        boot = next(d for d in body["disks"] if d.get("boot"))
        scheduling = {"onHostMaintenance": "MIGRATE", "automaticRestart": True,
                      "preemptible": False, "provisioningModel": "STANDARD",
                      **body.get("scheduling", {})}
        interface = {
            "kind": "compute#networkInterface",
            "network": f"{LINK}projects/{self.project}/global/networks/{network}",
            "networkIP": f"10.128.{len(self.instances) // 250}.{len(self.instances) % 250 + 2}",
            "name": "nic0",
            "fingerprint": uuid.uuid4().hex[:12],
            "stackType": "IPV4_ONLY",
        }
        if nic.get("subnetwork"):
            interface["subnetwork"] = (f"{LINK}projects/{self.project}/regions/{self.region}/"
                                       f"subnetworks/{_last(nic['subnetwork'])}")
        instance: dict[str, Any] = {
            "kind": "compute#instance",
            "id": instance_id,
            "creationTimestamp": _timestamp(time.time()),
            "name": name,
            "machineType": f"{self._zone_link()}/machineTypes/{machine.name}",
            "status": "STAGING",
            "zone": self._zone_link(),
            "canIpForward": False,
            "networkInterfaces": [interface],
            "disks": [{
                "kind": "compute#attachedDisk", "type": "PERSISTENT", "mode": "READ_WRITE",
                "source": f"{self._zone_link()}/disks/{name}", "deviceName": "persistent-disk-0",
                "index": 0, "boot": True, "autoDelete": boot.get("autoDelete", False),
                "interface": "SCSI",
                "diskSizeGb": str(boot.get("initializeParams", {}).get("diskSizeGb", "10")),
            }],
            "metadata": {"kind": "compute#metadata", "fingerprint": uuid.uuid4().hex[:12],
                         **({"items": body["metadata"]["items"]}
                            if body.get("metadata", {}).get("items") else {})},
            "selfLink": f"{self._zone_link()}/instances/{name}",
            "scheduling": scheduling,
            "cpuPlatform": "Intel Cascade Lake",
            "labelFingerprint": uuid.uuid4().hex[:12],
            "startRestricted": False,
            "deletionProtection": False,
            "fingerprint": uuid.uuid4().hex[:12],
        }
        if body.get("labels"):
            instance["labels"] = dict(body["labels"])
        return instance

    def _zone_link(self) -> str:
        return f"{LINK}projects/{self.project}/zones/{self.zone}"


# --- error bodies (Compute Engine's JSON error format) ----------------------------------------


def _error(status: int, message: str, reason: str, domain: str = "global",
           status_name: str | None = None) -> ApiError:
    error: dict[str, Any] = {"code": status, "message": message,
                             "errors": [{"message": message, "domain": domain, "reason": reason}]}
    if status_name is not None:
        error["status"] = status_name
    return ApiError(Response(status, {"error": error}))


def _not_found(resource: str) -> ApiError:
    return _error(404, f"The resource '{resource}' was not found", "notFound")


def _invalid(field_name: str, value: Any, why: str, required: bool = False) -> ApiError:
    if required:
        return _error(400, f"Required field '{field_name}' not specified", "required")
    return _error(400, f"Invalid value for field '{field_name}': '{value}'. {why}", "invalid")


def _zone_exhausted_error(project: str, zone: str) -> dict[str, Any]:
    message = (f"The zone 'projects/{project}/zones/{zone}' does not have enough resources "
               "available to fulfill the request.  Try a different zone, or try again later.")
    return {"error": {"errors": [{"code": "ZONE_RESOURCE_POOL_EXHAUSTED", "message": message}]},
            "httpErrorStatusCode": 503, "httpErrorMessage": "SERVICE UNAVAILABLE"}


def _check_token(request: Request, token: str) -> None:
    header = request.header("Authorization")
    if not header:
        raise _error(401, "Request is missing required authentication credential. Expected "
                          "OAuth 2 access token, login cookie or other valid authentication "
                          "credential.", "required", status_name="UNAUTHENTICATED")
    if header != f"Bearer {token}":
        raise _error(401, "Request had invalid authentication credentials. Expected OAuth 2 "
                          "access token, login cookie or other valid authentication "
                          "credential.", "authError", status_name="UNAUTHENTICATED")


def _check_request_id(value: str) -> None:
    try:
        parsed = uuid.UUID(value)
    except ValueError:
        parsed = None
    if parsed is None or parsed.int == 0:
        raise _invalid("requestId", value, "The request ID must be a valid UUID with the "
                       "exception that zero UUID is not supported "
                       "(00000000-0000-0000-0000-000000000000).")


def _json_body(request: Request) -> dict[str, Any]:
    try:
        body = json.loads(request.body or b"null")
    except ValueError:
        body = None
    if not isinstance(body, dict):
        raise _error(400, "Invalid JSON payload received. Unexpected token.", "parseError")
    return body


def _check_labels(labels: dict[str, Any]) -> None:
    if len(labels) > MAX_LABELS:
        raise _invalid("resource.labels", "", f"At most {MAX_LABELS} labels are allowed.")
    for key, value in labels.items():
        if not LABEL_KEY_RE.fullmatch(key):
            raise _invalid("resource.labels", "", f"Label key '{key}' violates format "
                           "constraints. The key must start with a lowercase character, can "
                           "only contain lowercase letters, numeric characters, underscores and "
                           "dashes. The key can be at most 63 characters long.")
        if not isinstance(value, str) or not LABEL_VALUE_RE.fullmatch(value):
            raise _invalid("resource.labels", "", f"Label value '{value}' violates format "
                           "constraints. The value can only contain lowercase letters, numeric "
                           "characters, underscores and dashes. The value can be at most 63 "
                           "characters long.")


def _check_metadata(metadata: dict[str, Any]) -> None:
    items = metadata.get("items", [])
    for index, item in enumerate(items):
        key = item.get("key", "")
        if not METADATA_KEY_RE.fullmatch(key):
            raise _invalid(f"resource.metadata.items[{index}].key", key,
                           "Must be a match of regex '[a-zA-Z0-9-_]{1,128}'")
    if sum(len(str(i.get("value", "")).encode()) for i in items) > MAX_METADATA_BYTES:
        raise _invalid("resource.metadata", "", "Metadata exceeds the 512 KB limit.")


def _check_scheduling(scheduling: dict[str, Any], machine: MachineType) -> None:
    model = scheduling.get("provisioningModel", "STANDARD")
    if model not in ("STANDARD", "SPOT"):
        raise _invalid("resource.scheduling.provisioningModel", model,
                       "Must be one of [SPOT, STANDARD].")
    maintenance = scheduling.get("onHostMaintenance", "MIGRATE")
    if model == "SPOT" and (maintenance != "TERMINATE" or scheduling.get("automaticRestart")):
        raise _invalid("resource.scheduling", "", "Spot VMs require onHostMaintenance "
                       "TERMINATE and automaticRestart false.")
    if machine.accelerators and maintenance != "TERMINATE":
        raise _invalid("resource.scheduling.onHostMaintenance", maintenance,
                       "Instances with guest accelerators do not support live migration.")


def _parse_label_filter(text: str) -> dict[str, str]:
    """``(labels.k = "v") AND (labels.k2 = "v2")`` → {k: v, k2: v2}; anything else is a 400."""
    if not text:
        return {}
    terms = text.split(" AND ")
    matches = [FILTER_TERM_RE.fullmatch(term.strip()) for term in terms]
    if not all(matches):
        raise _invalid("filter", text, "Invalid list filter expression.")
    return {m["key"]: m["value"] for m in matches if m}


def _last(link: str) -> str:
    return link.rstrip("/").rsplit("/", 1)[-1]


def _timestamp(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, UTC).isoformat(timespec="milliseconds")
