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


# --- which annotations select nodes -------------------------------------------------------

METADATA_DOMAIN = "fuzzball.io"
"""Fuzzball's own annotation keys (``fuzzball.io/connect/SERVICE``): metadata, never labels."""
TASK_SANDBOX_ANNOTATION = "fuzz.io/task-sandbox"
"""A job's ``"false"`` keeps a container per task of its task array (no task sandbox)."""
METADATA_KEYS = frozenset({TASK_SANDBOX_ANNOTATION})  # fuzz's own: metadata, never labels


def is_selector_key(key: str) -> bool:
    """Whether a workflow- or job-level annotation ``key`` selects nodes: a label key with
    a domain prefix (``nvidia.com/gpu.model``, ``example.org/rack``), other than Fuzzball's
    own ``fuzzball.io/`` keys. Bare keys (``description``, ``stack``) are metadata.
    Every key of a ``resource.annotations`` selects, whatever its form; fuzz's own
    :data:`METADATA_KEYS` do not."""
    domain, slash, name = key.partition("/")
    return bool(slash) and bool(name) and "." in domain and domain != METADATA_DOMAIN \
        and key not in METADATA_KEYS


def inherited_selectors(*levels: dict[str, str]) -> dict[str, str]:
    """The selector keys of the workflow's then the job's annotations (a later level wins)."""
    selected: dict[str, str] = {}
    for annotations in levels:
        selected |= {key: value for key, value in annotations.items() if is_selector_key(key)}
    return selected
