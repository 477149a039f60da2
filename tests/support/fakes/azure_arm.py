"""A fake Azure Resource Manager: the ARM paths the azure provider uses, in the real JSON shapes.

Served over HTTPS by :class:`fakes.httpserver.ApiServer` (the SDK sends bearer
tokens over TLS only), it answers the real ``azure-mgmt-compute`` and
``azure-mgmt-network`` clients on

- ``GET /subscriptions/S/providers/Microsoft.Compute/skus?$filter=location eq 'L'``
- ``PUT|GET|DELETE …/resourceGroups/G/providers/Microsoft.Compute/virtualMachines/NAME``
  and ``GET …/virtualMachines`` (list)
- ``DELETE …/resourceGroups/G/providers/Microsoft.Compute/disks/NAME``
- ``PUT|GET|DELETE …/resourceGroups/G/providers/Microsoft.Network/networkInterfaces/NAME``
  and ``GET …/networkInterfaces`` (list)
- ``GET /subscriptions/S/providers/Microsoft.{Compute,Network}/locations/L/operations/ID``

PUTs and DELETEs are long-running operations, as in ARM: 201/202 with an
``Azure-AsyncOperation`` URL whose status turns from ``InProgress`` to
``Succeeded`` (or ``Failed`` with an error) ``op_seconds`` later. It refuses what
ARM refuses, with ARM's error bodies: a missing or wrong bearer token, a missing
or unknown ``api-version``, unknown paths, another subscription, a missing
resource group, a VM without location, size, image, OS profile or NIC, an
unknown or restricted size (SkuNotAvailable), a Linux profile that enables
neither password nor SSH key, non-base64 custom data, a changed custom data on
an existing VM, reserved tag characters, a NIC in an unknown subnet, deleting a
NIC still attached to a VM, and the cores quota (OperationNotAllowed).
``allocation_fails`` makes VM creation end in AllocationFailed.
"""

from __future__ import annotations

import base64
import binascii
import itertools
import json
import re
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from tests.support.fakes.httpserver import ApiError, Request, Response, Router

API_VERSIONS = {
    "Microsoft.Compute/virtualMachines": {"2024-07-01", "2024-11-01", "2025-04-01", "2026-04-01"},
    "Microsoft.Compute/disks": {"2024-03-02", "2025-01-02", "2026-03-02"},
    "Microsoft.Compute/skus": {"2019-04-01", "2021-07-01"},
    "Microsoft.Compute/locations/operations": {"2024-07-01", "2025-04-01", "2026-04-01"},
    "Microsoft.Network/networkInterfaces": {"2024-05-01", "2025-03-01", "2026-03-01"},
    "Microsoft.Network/locations/operations": {"2024-05-01", "2025-03-01", "2026-03-01"},
}
RESERVED_TAG_CHARACTERS = set('<>%&\\?/')
DISALLOWED_ADMINS = {"administrator", "admin", "root", "user", "guest", "test", "sys", "owner"}
MAX_CUSTOM_DATA = 87380
SUB = r"/subscriptions/(?P<sub>[^/]+)"
GROUP = SUB + r"/resourceGroups/(?P<group>[^/]+)/providers"


@dataclass(frozen=True)
class VmSize:
    """A VM size of the fake location (a resource SKU of type virtualMachines)."""

    name: str
    vcpus: int
    memory_gb: float
    gpus: int = 0
    architecture: str = "x64"
    restricted: bool = False


DEFAULT_SIZES = (
    VmSize("Standard_D2s_v5", 2, 8),
    VmSize("Standard_D4s_v5", 4, 16),
    VmSize("Standard_D4ps_v5", 4, 16, architecture="Arm64"),
    VmSize("Standard_NC6s_v3", 6, 112, gpus=1),
    VmSize("Standard_M416ms_v2", 416, 11400, restricted=True),
)


@dataclass
class _Operation:
    namespace: str
    done_at: float
    on_done: Callable[[], None]
    error: dict[str, Any] | None = None
    status: str = "InProgress"
    start: str = ""


@dataclass
class AzureArmFake:
    """One fake subscription, and the request handlers that change it.

    Knobs tests turn to make requests fail as ARM would: ``core_quota`` (vCPUs the
    subscription may run), ``allocation_fails``, ``groups`` and ``subnets`` (what
    exists), ``token`` (the bearer token ARM accepts).
    """

    subscription: str = "00000000-0000-0000-0000-00000000f022"
    location: str = "westeurope"
    sizes: tuple[VmSize, ...] = DEFAULT_SIZES
    groups: set[str] = field(default_factory=lambda: {"fuzz-rg"})
    subnets: set[str] = field(default_factory=set)
    token: str = "arm-test-token"
    core_quota: int | None = None
    allocation_fails: bool = False
    op_seconds: float = 0.1
    base_url: str = ""
    vms: dict[str, dict[str, Any]] = field(default_factory=dict)
    nics: dict[str, dict[str, Any]] = field(default_factory=dict)
    disks: dict[str, dict[str, Any]] = field(default_factory=dict)
    operations: dict[str, _Operation] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _ips: itertools.count[int] = field(default_factory=lambda: itertools.count(4))

    def __post_init__(self) -> None:
        if not self.subnets:
            self.subnets = {self.subnet_id("fuzz-vnet", "nodes")}
        compute = GROUP + "/Microsoft.Compute"
        network = GROUP + "/Microsoft.Network"
        self.router = Router()
        self.router.add("GET", SUB + "/providers/Microsoft.Compute/skus", self._list_skus)
        self.router.add("GET", compute + "/virtualMachines", self._list_vms)
        self.router.add("PUT", compute + r"/virtualMachines/(?P<name>[^/]+)", self._put_vm)
        self.router.add("GET", compute + r"/virtualMachines/(?P<name>[^/]+)", self._get_vm)
        self.router.add("DELETE", compute + r"/virtualMachines/(?P<name>[^/]+)", self._delete_vm)
        self.router.add("DELETE", compute + r"/disks/(?P<name>[^/]+)", self._delete_disk)
        self.router.add("GET", network + "/networkInterfaces", self._list_nics)
        self.router.add("PUT", network + r"/networkInterfaces/(?P<name>[^/]+)", self._put_nic)
        self.router.add("GET", network + r"/networkInterfaces/(?P<name>[^/]+)", self._get_nic)
        self.router.add("DELETE", network + r"/networkInterfaces/(?P<name>[^/]+)",
                        self._delete_nic)
        self.router.add("GET", SUB + r"/providers/(?P<namespace>Microsoft\.(?:Compute|Network))"
                        r"/locations/(?P<location>[^/]+)/operations/(?P<op>[^/]+)",
                        self._get_operation)

    def subnet_id(self, vnet: str, subnet: str, group: str = "fuzz-rg") -> str:
        """The ARM id of a subnet in this subscription."""
        return (f"/subscriptions/{self.subscription}/resourceGroups/{group}/providers/"
                f"Microsoft.Network/virtualNetworks/{vnet}/subnets/{subnet}")

    def __call__(self, request: Request) -> Response:
        """Answer one request as ARM would."""
        _check_token(request, self.token)
        response = self.router.dispatch(request)
        if response is None:
            raise _error(404, "InvalidResourceType", f"The resource type could not be found "
                         f"for the request path '{request.path}'.")
        return response

    # --- resource SKUs ------------------------------------------------------------------

    def _list_skus(self, request: Request, sub: str) -> Response:
        self._check(request, sub, "Microsoft.Compute/skus")
        wanted = request.query.get("$filter", "")
        match = re.fullmatch(r"location eq '(?P<location>[^']+)'", wanted)
        if wanted and not match:
            raise _error(400, "InvalidFilter", f"The filter '{wanted}' is not supported.")
        if match and match["location"].lower() != self.location:
            return Response(200, {"value": []})
        skus = [self._sku_body(size) for size in self.sizes]
        skus.append({"resourceType": "disks", "name": "Premium_LRS", "tier": "Premium",
                     "locations": [self.location], "capabilities": [], "restrictions": []})
        return Response(200, {"value": skus})

    def _sku_body(self, size: VmSize) -> dict[str, Any]:
        capabilities = {"vCPUs": str(size.vcpus), "MemoryGB": f"{size.memory_gb:g}",
                        "CpuArchitectureType": size.architecture, "MaxNetworkInterfaces": "2"}
        if size.gpus:
            capabilities["GPUs"] = str(size.gpus)
        restrictions = [{"type": "Location", "values": [self.location],
                         "restrictionInfo": {"locations": [self.location]},
                         "reasonCode": "NotAvailableForSubscription"}] if size.restricted else []
        return {"resourceType": "virtualMachines", "name": size.name, "tier": "Standard",
                "size": size.name.removeprefix("Standard_"), "family": "standardFamily",
                "locations": [self.location],
                "locationInfo": [{"location": self.location, "zones": ["1", "2", "3"]}],
                "capabilities": [{"name": k, "value": v} for k, v in capabilities.items()],
                "restrictions": restrictions}

    # --- virtual machines ---------------------------------------------------------------

    def _list_vms(self, request: Request, sub: str, group: str) -> Response:
        self._check(request, sub, "Microsoft.Compute/virtualMachines", group)
        with self._lock:
            return Response(200, {"value": [v for v in self.vms.values()
                                            if _group_of(v["id"]) == group.lower()]})

    def _get_vm(self, request: Request, sub: str, group: str, name: str) -> Response:
        self._check(request, sub, "Microsoft.Compute/virtualMachines", group)
        with self._lock:
            return Response(200, self._find(self.vms, group, name, "virtualMachines"))

    def _put_vm(self, request: Request, sub: str, group: str, name: str) -> Response:
        self._check(request, sub, "Microsoft.Compute/virtualMachines", group)
        body = _json_body(request)
        with self._lock:
            key = _key(group, name)
            existing = self.vms.get(key)
            size = self._validate_vm(body)
            if existing is not None:
                return self._update_vm(existing, body)
            self._check_quota(size)
            vm_id = self._id(group, "Microsoft.Compute/virtualMachines", name)
            properties = body["properties"]
            os_disk = properties["storageProfile"].setdefault("osDisk", {})
            disk_name = os_disk.setdefault("name", f"{name}_OsDisk_1_{uuid.uuid4().hex}")
            os_disk["managedDisk"] = {"id": self._id(group, "Microsoft.Compute/disks",
                                                     disk_name)}
            properties["vmId"] = str(uuid.uuid4())
            properties["provisioningState"] = "Creating"
            properties["timeCreated"] = _now()
            properties["osProfile"].pop("adminPassword", None)
            vm = {"id": vm_id, "name": name, "type": "Microsoft.Compute/virtualMachines",
                  "location": body["location"], **({"tags": body["tags"]} if "tags" in body
                                                   else {}), "properties": properties}
            self.vms[key] = vm
            self.disks[_key(group, disk_name)] = {
                "id": os_disk["managedDisk"]["id"], "name": disk_name, "managedBy": vm_id}
            for nic in properties["networkProfile"]["networkInterfaces"]:
                self.nics[_key_of(nic["id"])]["properties"]["virtualMachine"] = {"id": vm_id}
            error = _allocation_failed() if self.allocation_fails else None
            operation = self._operation("Microsoft.Compute",
                                        lambda: self._created(key, failed=error is not None),
                                        error)
            return Response(201, vm, self._async_headers("Microsoft.Compute", operation))

    def _created(self, key: str, failed: bool) -> None:
        if key in self.vms:
            self.vms[key]["properties"]["provisioningState"] = "Failed" if failed else "Succeeded"

    def _update_vm(self, vm: dict[str, Any], body: dict[str, Any]) -> Response:
        old = vm["properties"]["osProfile"].get("customData")
        new = body["properties"]["osProfile"].get("customData")
        if new is not None and new != old:
            raise _error(409, "PropertyChangeNotAllowed",
                         "Changing property 'customData' is not allowed.", target="customData")
        if "tags" in body:
            vm["tags"] = body["tags"]
        return Response(200, vm)

    def _delete_vm(self, request: Request, sub: str, group: str, name: str) -> Response:
        self._check(request, sub, "Microsoft.Compute/virtualMachines", group)
        with self._lock:
            key = _key(group, name)
            vm = self.vms.get(key)
            if vm is None:
                return Response(204)
            vm["properties"]["provisioningState"] = "Deleting"
            operation = self._operation("Microsoft.Compute", lambda: self._vm_deleted(key))
            return Response(202, None, self._async_headers("Microsoft.Compute", operation))

    def _vm_deleted(self, key: str) -> None:
        vm = self.vms.pop(key, None)
        if vm is None:
            return
        properties = vm["properties"]
        os_disk = properties["storageProfile"]["osDisk"]
        disk_key = _key_of(os_disk["managedDisk"]["id"])
        if os_disk.get("deleteOption") == "Delete":
            self.disks.pop(disk_key, None)
        elif disk_key in self.disks:
            self.disks[disk_key].pop("managedBy", None)
        for ref in properties["networkProfile"]["networkInterfaces"]:
            nic_key = _key_of(ref["id"])
            if ref.get("properties", {}).get("deleteOption") == "Delete":
                self.nics.pop(nic_key, None)
            elif nic_key in self.nics:
                self.nics[nic_key]["properties"].pop("virtualMachine", None)

    def _validate_vm(self, body: dict[str, Any]) -> VmSize:
        if not body.get("location"):
            raise _error(400, "LocationRequired",
                         "The location property is required for this definition.")
        properties = body.get("properties") or {}
        size = self._size((properties.get("hardwareProfile") or {}).get("vmSize"))
        storage = properties.get("storageProfile") or {}
        if not storage.get("imageReference"):
            raise _missing("imageReference")
        if (storage.get("osDisk") or {}).get("createOption", "FromImage") != "FromImage":
            raise _invalid("osDisk.createOption", "Only FromImage is supported here.")
        _check_os_profile(properties.get("osProfile"))
        self._check_nics(properties.get("networkProfile"))
        _check_tags(body.get("tags") or {})
        priority = properties.get("priority", "Regular")
        if priority not in ("Regular", "Low", "Spot"):
            raise _invalid("priority", f"The value '{priority}' of parameter 'priority' is "
                                       "not allowed. Allowed values are 'Regular', 'Low', "
                                       "'Spot'.")
        if priority != "Spot" and (properties.get("evictionPolicy")
                                   or properties.get("billingProfile")):
            raise _invalid("evictionPolicy", "Eviction policy and billing profile can only be "
                                             "set for Spot virtual machines.")
        return size

    def _size(self, name: Any) -> VmSize:
        if not name:
            raise _missing("vmSize")
        for size in self.sizes:
            if size.name.lower() == str(name).lower():
                if size.restricted:
                    raise _error(409, "SkuNotAvailable", f"The requested VM size for resource "
                                 f"'Following SKUs have failed for Capacity Restrictions: "
                                 f"{size.name}' is currently not available in location "
                                 f"'{self.location}'. Please try another size or deploy to a "
                                 "different location or zones. See "
                                 "https://aka.ms/azureskunotavailable for details.")
                return size
        available = ",".join(s.name for s in self.sizes if not s.restricted)
        raise _invalid("vmSize", f"The requested VM size {name} is not available in the current "
                                 f"region. The sizes available in the current region are: "
                                 f"{available}.")

    def _check_nics(self, profile: Any) -> None:
        refs = (profile or {}).get("networkInterfaces") or []
        if not refs:
            raise _invalid("networkProfile", "At least one network interface is required.")
        for ref in refs:
            if _key_of(ref.get("id", "")) not in self.nics:
                raise _error(400, "InvalidResourceReference", f"Resource {ref.get('id')} "
                             "referenced by resource virtualMachines was not found. Please make "
                             "sure that the referenced resource exists, and that both resources "
                             "are in the same region.")

    def _check_quota(self, size: VmSize) -> None:
        if self.core_quota is None:
            return
        used = sum(self._vcpus(vm) for vm in self.vms.values())
        if used + size.vcpus > self.core_quota:
            raise _error(409, "OperationNotAllowed", "Operation could not be completed as it "
                         "results in exceeding approved Total Regional Cores quota. Additional "
                         f"details - Deployment Model: Resource Manager, Location: "
                         f"{self.location}, Current Limit: {self.core_quota}, Current Usage: "
                         f"{used}, Additional Required: {size.vcpus}, (Minimum) New Limit "
                         f"Required: {used + size.vcpus}. Submit a request for Quota increase "
                         "at https://aka.ms/ProdportalCRP.")

    def _vcpus(self, vm: dict[str, Any]) -> int:
        wanted = vm["properties"]["hardwareProfile"]["vmSize"].lower()
        return next(s.vcpus for s in self.sizes if s.name.lower() == wanted)

    # --- disks and network interfaces ---------------------------------------------------

    def _delete_disk(self, request: Request, sub: str, group: str, name: str) -> Response:
        self._check(request, sub, "Microsoft.Compute/disks", group)
        with self._lock:
            key = _key(group, name)
            disk = self.disks.get(key)
            if disk is None:
                return Response(204)
            if disk.get("managedBy"):
                raise _error(409, "OperationNotAllowed", f"Disk {name} is attached to VM "
                             f"{disk['managedBy']}.")
            operation = self._operation("Microsoft.Compute", lambda: self.disks.pop(key, None))
            return Response(202, None, self._async_headers("Microsoft.Compute", operation))

    def _list_nics(self, request: Request, sub: str, group: str) -> Response:
        self._check(request, sub, "Microsoft.Network/networkInterfaces", group)
        with self._lock:
            return Response(200, {"value": [n for n in self.nics.values()
                                            if _group_of(n["id"]) == group.lower()]})

    def _get_nic(self, request: Request, sub: str, group: str, name: str) -> Response:
        self._check(request, sub, "Microsoft.Network/networkInterfaces", group)
        with self._lock:
            return Response(200, self._find(self.nics, group, name, "networkInterfaces"))

    def _put_nic(self, request: Request, sub: str, group: str, name: str) -> Response:
        self._check(request, sub, "Microsoft.Network/networkInterfaces", group)
        body = _json_body(request)
        if not body.get("location"):
            raise _error(400, "LocationRequired",
                         "The location property is required for this definition.")
        configs = (body.get("properties") or {}).get("ipConfigurations") or []
        if not configs:
            raise _error(400, "NetworkInterfaceMustHaveAtLeastOneIpConfiguration",
                         f"Network interface {name} must have at least one IP configuration.")
        subnet = ((configs[0].get("properties") or {}).get("subnet") or {}).get("id", "")
        if subnet.lower() not in {s.lower() for s in self.subnets}:
            raise _error(400, "InvalidResourceReference", f"Resource {subnet} referenced by "
                         f"resource {name} was not found. Please make sure that the referenced "
                         "resource exists, and that both resources are in the same region.")
        _check_tags(body.get("tags") or {})
        with self._lock:
            key = _key(group, name)
            nic_id = self._id(group, "Microsoft.Network/networkInterfaces", name)
            existing = self.nics.get(key)
            ip = (existing["properties"]["ipConfigurations"][0]["properties"]
                  ["privateIPAddress"] if existing else f"10.0.0.{next(self._ips)}")
            config = {"name": configs[0].get("name", "ipconfig1"),
                      "id": f"{nic_id}/ipConfigurations/{configs[0].get('name', 'ipconfig1')}",
                      "properties": {"subnet": {"id": subnet}, "privateIPAddress": ip,
                                     "privateIPAllocationMethod": "Dynamic",
                                     "provisioningState": "Succeeded", "primary": True}}
            properties: dict[str, Any] = {"ipConfigurations": [config],
                                          "provisioningState": "Updating" if existing
                                          else "Creating"}
            if existing and "virtualMachine" in existing["properties"]:
                properties["virtualMachine"] = existing["properties"]["virtualMachine"]
            nic = {"id": nic_id, "name": name, "type": "Microsoft.Network/networkInterfaces",
                   "location": body["location"], "etag": f'W/"{uuid.uuid4()}"',
                   **({"tags": body["tags"]} if "tags" in body else {}),
                   "properties": properties}
            self.nics[key] = nic
            operation = self._operation("Microsoft.Network", lambda: properties.update(
                provisioningState="Succeeded"))
            return Response(200 if existing else 201, nic,
                            self._async_headers("Microsoft.Network", operation))

    def _delete_nic(self, request: Request, sub: str, group: str, name: str) -> Response:
        self._check(request, sub, "Microsoft.Network/networkInterfaces", group)
        with self._lock:
            key = _key(group, name)
            nic = self.nics.get(key)
            if nic is None:
                return Response(204)
            attached = nic["properties"].get("virtualMachine")
            if attached:
                raise _error(400, "NicInUse", f"Network Interface {nic['id']} is used by "
                             f"existing resource {attached['id']}. In order to delete the network "
                             "interface, it must be dissociated from the resource.")
            operation = self._operation("Microsoft.Network", lambda: self.nics.pop(key, None))
            return Response(202, None, self._async_headers("Microsoft.Network", operation))

    # --- long-running operations --------------------------------------------------------

    def _operation(self, namespace: str, on_done: Callable[[], None],
                   error: dict[str, Any] | None = None) -> str:
        op_id = str(uuid.uuid4())
        self.operations[op_id] = _Operation(namespace, time.monotonic() + self.op_seconds,
                                            on_done, error, start=_now())
        return op_id

    def _async_headers(self, namespace: str, op_id: str) -> dict[str, str]:
        version = sorted(API_VERSIONS[f"{namespace}/locations/operations"])[-1]
        url = (f"{self.base_url}/subscriptions/{self.subscription}/providers/{namespace}/"
               f"locations/{self.location}/operations/{op_id}?api-version={version}")
        return {"Azure-AsyncOperation": url, "Location": url + "&monitor=true"}

    def _get_operation(self, request: Request, sub: str, namespace: str, location: str,
                       op: str) -> Response:
        self._check(request, sub, f"{namespace}/locations/operations")
        with self._lock:
            operation = self.operations.get(op)
            if operation is None or operation.namespace != namespace:
                raise _error(404, "NotFound", f"The operation '{op}' was not found.")
            if operation.status == "InProgress" and time.monotonic() >= operation.done_at:
                operation.on_done()
                operation.status = "Failed" if operation.error else "Succeeded"
            body: dict[str, Any] = {"name": op, "status": operation.status,
                                    "startTime": operation.start}
            if operation.status != "InProgress":
                body["endTime"] = _now()
            if operation.status == "Failed":
                body["error"] = operation.error
            return Response(200, body)

    # --- checks shared by every path ----------------------------------------------------

    def _check(self, request: Request, sub: str, resource_type: str,
               group: str | None = None) -> None:
        version = request.query.get("api-version")
        if version is None:
            raise _error(400, "MissingApiVersionParameter", "The api-version query parameter "
                         "(?api-version=) is required for all requests.")
        supported = API_VERSIONS[resource_type]
        if version not in supported:
            kind = resource_type.partition("/")[2]
            raise _error(400, "NoRegisteredProviderFound", f"No registered resource provider "
                         f"found for location '{self.location}' and API version '{version}' "
                         f"for type '{kind}'. The supported api-versions are "
                         f"'{', '.join(sorted(supported))}'.")
        if sub != self.subscription:
            raise _error(404, "SubscriptionNotFound", f"The subscription '{sub}' could not be "
                         "found.")
        if group is not None and group.lower() not in {g.lower() for g in self.groups}:
            raise _error(404, "ResourceGroupNotFound", f"Resource group '{group}' could not be "
                         "found.")

    def _find(self, table: dict[str, dict[str, Any]], group: str, name: str,
              kind: str) -> dict[str, Any]:
        found = table.get(_key(group, name))
        if found is None:
            namespace = "Microsoft.Compute" if kind == "virtualMachines" else "Microsoft.Network"
            raise _error(404, "ResourceNotFound", f"The Resource '{namespace}/{kind}/{name}' "
                         f"under resource group '{group}' was not found. For more details "
                         "please go to https://aka.ms/ARMResourceNotFoundFix")
        return found

    def _id(self, group: str, resource_type: str, name: str) -> str:
        return (f"/subscriptions/{self.subscription}/resourceGroups/{group}/providers/"
                f"{resource_type}/{name}")


# --- helpers -----------------------------------------------------------------------------------


def _error(status: int, code: str, message: str, target: str | None = None,
           headers: dict[str, str] | None = None) -> ApiError:
    error: dict[str, Any] = {"code": code, "message": message}
    if target is not None:
        error["target"] = target
    return ApiError(Response(status, {"error": error}, headers or {}))


def _missing(name: str) -> ApiError:
    return _error(400, "InvalidParameter", f"Required parameter '{name}' is missing (null).",
                  target=name)


def _invalid(target: str, message: str) -> ApiError:
    return _error(400, "InvalidParameter", message, target=target)


def _allocation_failed() -> dict[str, Any]:
    return {"code": "AllocationFailed", "message": "Allocation failed. We do not have "
            "sufficient capacity for the requested VM size in this region. Read more about "
            "improving likelihood of allocation success at http://aka.ms/allocation-guidance"}


def _check_token(request: Request, token: str) -> None:
    header = request.header("Authorization")
    if not header:
        raise _error(401, "AuthenticationFailed",
                     "Authentication failed. The 'Authorization' header is missing.")
    if header != f"Bearer {token}":
        raise _error(401, "InvalidAuthenticationToken", "The access token is invalid.",
                     headers={"WWW-Authenticate": 'Bearer authorization_uri="https://login.'
                              'windows.net/", error="invalid_token", error_description="The '
                              'access token is invalid."'})


def _check_os_profile(profile: Any) -> None:
    if not profile:
        raise _missing("osProfile")
    for name in ("computerName", "adminUsername"):
        if not profile.get(name):
            raise _missing(name)
    if profile["adminUsername"].lower() in DISALLOWED_ADMINS:
        raise _invalid("adminUsername", "The Admin Username specified is not allowed.")
    custom = profile.get("customData")
    if custom is not None:
        try:
            base64.b64decode(custom, validate=True)
        except (binascii.Error, ValueError):
            custom = None
        if custom is None or len(profile["customData"]) > MAX_CUSTOM_DATA:
            raise _invalid("customData", "Custom data in OSProfile must be in Base64 encoding "
                           f"and with a maximum length of {MAX_CUSTOM_DATA} characters.")
    linux = profile.get("linuxConfiguration") or {}
    keys = (linux.get("ssh") or {}).get("publicKeys") or []
    if linux.get("disablePasswordAuthentication") and not keys:
        raise _invalid("linuxConfiguration", "Authentication using either SSH or by user name "
                       "and password must be enabled in Linux profile.")
    if not linux.get("disablePasswordAuthentication") and not profile.get("adminPassword"):
        raise _missing("adminPassword")
    expected = f"/home/{profile['adminUsername']}/.ssh/authorized_keys"
    for key in keys:
        if key.get("path") != expected:
            raise _invalid("linuxConfiguration.ssh.publicKeys.path", "Destination path for SSH "
                           f"public keys is currently limited to its default value {expected} "
                           "due to a known issue in Linux provisioning agent.")
        if not str(key.get("keyData", "")).startswith(("ssh-rsa ", "ssh-ed25519 ")):
            raise _invalid("linuxConfiguration.ssh.publicKeys.keyData", "The value of "
                           "parameter linuxConfiguration.ssh.publicKeys.keyData is invalid.")


def _check_tags(tags: dict[str, Any]) -> None:
    bad = [name for name in tags if set(name) & RESERVED_TAG_CHARACTERS]
    if bad:
        raise _error(400, "InvalidTagNameCharacters", f"The tag names '{','.join(bad)}' have "
                     "reserved characters '<,>,%,&,\\,?,/' or control characters.")
    if any(len(str(value)) > 256 for value in tags.values()):
        raise _error(400, "InvalidTagValueLength", "Tag values can have at most 256 characters.")


def _json_body(request: Request) -> dict[str, Any]:
    try:
        body = json.loads(request.body or b"null")
    except ValueError:
        body = None
    if not isinstance(body, dict):
        raise _error(400, "InvalidRequestContent", "The request content was invalid and could "
                     "not be deserialized.")
    return body


def _key(group: str, name: str) -> str:
    return f"{group.lower()}/{name.lower()}"


def _key_of(resource_id: str) -> str:
    parts = resource_id.strip("/").split("/")
    return _key(parts[3], parts[-1]) if len(parts) >= 8 else resource_id.lower()


def _group_of(resource_id: str) -> str:
    return resource_id.strip("/").split("/")[3].lower()


def _now() -> str:
    return datetime.now(UTC).isoformat()
