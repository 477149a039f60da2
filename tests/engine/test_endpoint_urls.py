"""Endpoint paths, host names, URLs and the FB_ENDPOINT_* variables (pure)."""

from __future__ import annotations

from fuzz.spec.endpoint_urls import (
    EndpointAddress,
    GatewayAddress,
    endpoint_url,
    endpoint_variables,
    locate_host,
    locate_path,
)

NOTEBOOK = EndpointAddress("ana.lyst", "nb", "jupyter", "lab")
GATEWAY = GatewayAddress("https://fuzz.example:8443", "apps.example")


def test_a_path_endpoint_is_found_with_or_without_its_trailing_slash_and_query() -> None:
    assert NOTEBOOK.path_prefix == "/endpoints/ana.lyst/nb/jupyter/lab/"
    for target in ("/endpoints/ana.lyst/nb/jupyter/lab/", "/endpoints/ana.lyst/nb/jupyter/lab",
                   "/endpoints/ana.lyst/nb/jupyter/lab/tree/x?token=1",
                   "/endpoints/ana.lyst/nb/jupyter/lab?x=1"):
        assert locate_path(target) == NOTEBOOK, target
    for target in ("/endpoints/ana.lyst/nb/jupyter", "/elsewhere/a/b/c/d/", "/endpoints//nb/j/l/",
                   "/endpoints/../nb/jupyter/lab/"):
        assert locate_path(target) is None, target


def test_a_subdomain_endpoint_is_found_by_host_and_its_owner_may_hold_dots() -> None:
    host = NOTEBOOK.host("apps.example")
    assert host == "lab.jupyter.nb.ana.lyst.apps.example"
    assert locate_host(host, "apps.example") == NOTEBOOK
    assert locate_host(f"{host}:8443", "apps.example") == NOTEBOOK
    assert locate_host("lab.jupyter.apps.example", "apps.example") is None
    assert locate_host("fuzz.example:8443", "apps.example") is None
    assert locate_host(host, "") is None


def test_urls_and_the_variables_a_service_is_given() -> None:
    assert endpoint_url(GATEWAY.base, NOTEBOOK, "path", GATEWAY.domain) == \
        "https://fuzz.example:8443/endpoints/ana.lyst/nb/jupyter/lab/"
    assert endpoint_url(GATEWAY.base, NOTEBOOK, "subdomain", GATEWAY.domain) == \
        "https://lab.jupyter.nb.ana.lyst.apps.example:8443/"
    one = endpoint_variables(GATEWAY, "ana.lyst", "nb", "jupyter", [("lab", "path")])
    assert one == {
        "FB_ENDPOINT_PATH_LAB": "/endpoints/ana.lyst/nb/jupyter/lab/",
        "FB_ENDPOINT_URL_LAB": "https://fuzz.example:8443/endpoints/ana.lyst/nb/jupyter/lab/",
        "FB_ENDPOINT_PATH": "/endpoints/ana.lyst/nb/jupyter/lab/",
        "FB_ENDPOINT_URL": "https://fuzz.example:8443/endpoints/ana.lyst/nb/jupyter/lab/",
    }
    two = endpoint_variables(GATEWAY, "ana.lyst", "nb", "files",
                             [("file-browser", "subdomain"), ("api", "path")])
    assert two == {
        "FB_ENDPOINT_PATH_FILE_BROWSER": "/",
        "FB_ENDPOINT_URL_FILE_BROWSER": "https://file-browser.files.nb.ana.lyst.apps.example:8443/",
        "FB_ENDPOINT_PATH_API": "/endpoints/ana.lyst/nb/files/api/",
        "FB_ENDPOINT_URL_API": "https://fuzz.example:8443/endpoints/ana.lyst/nb/files/api/",
    }
