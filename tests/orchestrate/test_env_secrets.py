"""``env: [NAME=secret://SCOPE/SECRET]``: which secrets a start checks, and which values
may become an environment variable (without ever echoing the value)."""

from __future__ import annotations

import textwrap

import pytest

from fuzz.orchestrate.secrets import SecretError, environment_value
from fuzz.orchestrate.workflows.workflow import secret_references
from fuzz.spec.fuzzfile_loader import parse_fuzzfile


def test_env_secrets_are_checked_per_job_defaults_included() -> None:
    text = textwrap.dedent("""\
        version: v1
        defaults:
          job: {env: [TOKEN=secret://user/TOKEN]}
        jobs:
          a:
            image: {uri: docker://alpine, secret: secret://user/regcred}
            command: [env]
            env: [PLAIN=x, NGC_API_KEY=secret://account/NGC_API_KEY]
          b: {image: {uri: docker://alpine}, command: [env]}
        """)
    assert secret_references(parse_fuzzfile(text, "wf.yaml").fuzzfile) == [
        ("jobs.a.image.secret", "user", "regcred"),
        ("jobs.a.env.TOKEN", "user", "TOKEN"),
        ("jobs.a.env.NGC_API_KEY", "account", "NGC_API_KEY"),
        ("jobs.b.env.TOKEN", "user", "TOKEN"),
    ]


def test_an_env_secret_must_be_text_and_the_error_never_shows_it() -> None:
    assert environment_value("hf_abc=\n €".encode(), "HF") == "hf_abc=\n €"
    for value in (b"\xff\xfehidden", b"hid\x00den"):
        with pytest.raises(SecretError) as info:
            environment_value(value, "HF")
        assert "hid" not in str(info.value)
        assert str(info.value).startswith("secret 'HF' cannot be an environment variable's")
