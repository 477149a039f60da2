"""Every cloud provider plugin loads without its SDK; the SDK comes with the first hook call.

Every fuzz command loads every installed provider plugin, and boto3, google-cloud-compute
and the Azure management SDKs take a second or more each to import. The test loads the
plugins through their ``fuzz.providers`` entry points in a fresh interpreter and calls
their registration hooks, as fuzz does, and looks at what was imported.
"""

from __future__ import annotations

import json
import subprocess
import sys

SDKS = {"aws": ("boto3", "botocore"), "gcp": ("google.cloud", "google.api_core"),
        "azure": ("azure.core", "azure.mgmt", "azure.identity")}

LOAD = """
import json, sys
from importlib.metadata import entry_points
plugins = {ep.name: ep.load() for ep in entry_points(group="fuzz.providers")
           if ep.name in ("aws", "gcp", "azure", "baremetal")}
registered = []
for module in plugins.values():
    module.fuzz_register_providers(register=registered.append)
print(json.dumps({"kinds": sorted(p.kind for p in registered),
                  "modules": sorted(sys.modules)}))
"""


def test_cloud_plugins_load_without_their_sdks() -> None:
    done = subprocess.run([sys.executable, "-c", LOAD], capture_output=True, text=True,
                          timeout=60, check=True)
    loaded = json.loads(done.stdout)
    assert loaded["kinds"] == ["aws", "azure", "baremetal", "gcp"]
    for kind, packages in SDKS.items():
        imported = [name for name in loaded["modules"] if name.startswith(packages)]
        assert imported == [], f"loading the {kind} plugin imported {imported[:5]}"
