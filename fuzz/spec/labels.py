"""Node labels that fuzz itself sets from the cluster spec and the node agent reads.

Standard library only, and nothing else: the agent's container monitor (a
``python -S`` helper) imports it through :mod:`fuzz.substrate.jobnet`.
"""

NETWORK_LABEL = "fuzz:network"  # a node label; ``host`` on the nodes of a host-network pool

# --- hardware labels: what the node agent publishes from its inventory --------------------
# A job's ``resource.annotations`` select nodes by these as by any other label (exact
# values); the elastic loop gives an offering's nodes the GPU ones in advance.

CPU_ARCHITECTURE_LABEL = "fuzz.io/cpu.architecture"  # x86_64, aarch64 (as uname -m says)
GPU_VENDOR_DOMAINS = {"nvidia": "nvidia.com", "amd": "amd.com"}
"""GPU vendor → the domain of its labels (``nvidia.com/gpu.model``, ``amd.com/gpu.model``)."""


def gpu_labels(vendor: str, models: list[str], families: list[str]) -> dict[str, str]:
    """The labels of a node's GPUs of one ``vendor`` (one model and family per GPU).

    ``DOMAIN/gpu.count`` always; ``DOMAIN/gpu.model`` and ``DOMAIN/gpu.family`` only
    when every GPU has the same one (a job asking for a model must get that model,
    whichever GPU it is given).
    """
    domain = GPU_VENDOR_DOMAINS.get(vendor, vendor)
    labels = {f"{domain}/gpu.count": str(len(models))}
    if len(set(models)) == 1 and models[0]:
        labels[f"{domain}/gpu.model"] = models[0]
    if len(set(families)) == 1 and families and families[0]:
        labels[f"{domain}/gpu.family"] = families[0]
    return labels
