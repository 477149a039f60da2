"""What a lease's devices become in its job's container: CDI edits, or plain NVIDIA nodes.

A job gets exactly the devices its lease was granted (``nvidia.com/gpu`` ids
``"0"``, ``"1"``... - the GPU indices of the inventory) and nothing else, as
``--gres=gpu:N`` under Slurm or ``--device nvidia.com/gpu=N`` with the NVIDIA
container toolkit would give it:

* When the node's CDI directories hold a spec of the kind
  (:mod:`fuzz.substrate.capacity.cdi`), each leased device is looked up by its id, then
  by the GPU's UUID, and the spec's edits are applied: its common edits and the
  leased devices' own (device nodes, read-only library mounts, env, hooks).
  A leased device the specs lack, or an invalid spec, fails the job's start.
* Without a spec for ``nvidia.com/gpu``, the job gets the plain nodes
  ``/dev/nvidia<index>`` of its GPUs plus ``/dev/nvidiactl``, ``/dev/nvidia-uvm``
  and ``/dev/nvidia-uvm-tools``, those that exist on the host; no driver
  libraries (the image must bring them, or run ``nvidia-ctk cdi generate``).
  A leased GPU without its node (a GPU of a declared ``--inventory`` on a
  machine without one) is one warning in the agent's log, and the job starts
  anyway: declared inventories exist to test scheduling on machines without GPUs.

``NVIDIA_VISIBLE_DEVICES`` is set to the leased ids unless the spec sets it
(recent ``nvidia-ctk`` specs set ``void``), as a device plugin does; the
device edits' env is set over the image's and the job's env, as the NVIDIA
toolkit's CDI mode applies it, so an image's ``NVIDIA_VISIBLE_DEVICES=all``
does not claim GPUs the job was not granted.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from pathlib import Path

from fuzz.substrate.capacity.cdi import CdiError, ContainerEdits, NodeEdit, read_specs, select
from fuzz.substrate.capacity.inventory import GpuInfo
from fuzz.substrate.capacity.leases import GPU

VISIBLE_DEVICES = "NVIDIA_VISIBLE_DEVICES"
NVIDIA_CONTROL_NODES = ("nvidiactl", "nvidia-uvm", "nvidia-uvm-tools")
DEV = Path("/dev")

log = logging.getLogger(__name__)


def nvidia_nodes(ids: Sequence[str], owner: str, dev: Path = DEV) -> ContainerEdits:
    """The plain NVIDIA device nodes of the GPUs ``ids`` that exist under ``dev``.

    ``owner`` (e.g. ``job train-1``) starts the warning logged for each GPU
    whose node is missing. The nodes keep their ``/dev/...`` paths in the container.
    """
    names: list[str] = []
    for gpu in ids:
        if (dev / f"nvidia{gpu}").exists():
            names.append(f"nvidia{gpu}")
        else:
            log.warning("%s: %s %s has no %s on this node (a declared GPU?); the job starts "
                        "without it", owner, GPU, gpu, dev / f"nvidia{gpu}")
    names += [name for name in NVIDIA_CONTROL_NODES if (dev / name).exists()]
    return ContainerEdits(nodes=tuple(
        NodeEdit(f"{GPU} without a CDI spec", f"/dev/{name}", str(dev / name)) for name in names
    ))


def lease_edits(
    devices: Mapping[str, Sequence[str]],
    gpus: Sequence[GpuInfo],
    cdi_dirs: Sequence[Path],
    owner: str,
    dev: Path = DEV,
) -> ContainerEdits:
    """The container edits for a lease's ``devices`` (kind -> ids) on this node.

    ``gpus`` is the node's inventory (for the UUIDs of GPU ids); ``cdi_dirs``
    are read now, so a spec regenerated after a driver upgrade is used by the
    next job. Raises CdiError (one line naming the file and the field).
    """
    uuids = {str(gpu.index): gpu.uuid for gpu in gpus}
    edits = ContainerEdits()
    for kind, ids in devices.items():
        if not ids:
            continue
        specs = read_specs(cdi_dirs, kind)
        if specs:
            wanted = [(gpu, uuids[gpu]) if kind == GPU and gpu in uuids else (gpu,)
                      for gpu in ids]
            found = select(specs, kind, wanted)
        elif kind == GPU:
            found = nvidia_nodes(ids, owner, dev)
        else:
            dirs = ", ".join(str(directory) for directory in cdi_dirs)
            raise CdiError(f"no CDI spec of kind {kind} in {dirs}")
        if kind == GPU and not any(item.startswith(f"{VISIBLE_DEVICES}=") for item in found.env):
            found += ContainerEdits(env=(f"{VISIBLE_DEVICES}={','.join(ids)}",))
        edits += found
    return edits
