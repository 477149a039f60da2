"""Fixtures: the Jupyter notebook image from Debian packages (see
:mod:`fuzz.testing.jupyter_image`), built once per machine and cached outside the
repository; ``jupyter_image`` is it pushed to the session's anonymous ``registry``."""

from __future__ import annotations

import pytest

from fuzz.testing.jupyter_image import JupyterLayout, jupyter_layout
from fuzz.testing.oci import PushedImage, Registry, push_layout


@pytest.fixture(scope="session")
def jupyter_notebook_layout() -> JupyterLayout:
    """The Jupyter image's layout (Debian's jupyter-notebook), built or taken from the cache."""
    return jupyter_layout()


@pytest.fixture(scope="session")
def jupyter_image(jupyter_notebook_layout: JupyterLayout, registry: Registry) -> PushedImage:
    """``docker://HOST/fuzz/jupyter:latest`` in the anonymous ``registry``."""
    return push_layout(jupyter_notebook_layout.path, registry, "fuzz/jupyter")
