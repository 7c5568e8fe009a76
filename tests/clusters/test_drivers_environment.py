"""The environment of k3d, kind and the hooks (clusters/drivers/environment.py)."""

from __future__ import annotations

import os
from typing import Any

import pytest

from clusters.drivers.base import Command, run
from clusters.drivers.environment import child_environment

SECRETS = {
    "SECRET_KEY": "django-secret",
    "PG_PASSWORD": "pg-secret",
    "KINDLER_API_TOKEN": "token-secret",
    "KINDLER_ADMIN_PASSWORD": "admin-secret",
}


@pytest.fixture
def kindler_environ(monkeypatch: pytest.MonkeyPatch) -> None:
    """Kindler's environment as a deployment has it: secrets, tools' variables, others."""
    for name in list(os.environ):
        if name not in ("PATH", "HOME"):
            monkeypatch.delenv(name)
    for name, value in {
        **SECRETS,
        "PG_HOST": "db.example",
        "LANG": "C.UTF-8",
        "LC_ALL": "C.UTF-8",
        "DOCKER_HOST": "unix:///run/docker.sock",
        "KUBECONFIG": "/home/k/.kube/config",
        "K3D_FIX_DNS": "1",
        "KIND_EXPERIMENTAL_PROVIDER": "podman",
        "PORTAINER_TOKEN": "ptr_x",
        "ARGOCD_SERVER": "argocd.example",
        "ARGOCD_AUTH_TOKEN": "argo",
    }.items():
        monkeypatch.setenv(name, value)


def test_a_child_gets_path_home_locale_and_the_tools_own_variables(
    kindler_environ: None, settings: Any
) -> None:
    settings.KINDLER_CHILD_ENV = []
    assert sorted(child_environment()) == [
        "DOCKER_HOST",
        "HOME",
        "K3D_FIX_DNS",
        "KIND_EXPERIMENTAL_PROVIDER",
        "KUBECONFIG",
        "LANG",
        "LC_ALL",
        "PATH",
    ]


def test_the_setting_adds_names_and_patterns(kindler_environ: None, settings: Any) -> None:
    settings.KINDLER_CHILD_ENV = ["PORTAINER_TOKEN", " ARGOCD_* "]
    env = child_environment({"KINDLER_OPERATION": "create"})
    assert {name: env[name] for name in env if name.startswith(("PORTAINER", "ARGOCD", "KIN"))} == {
        "PORTAINER_TOKEN": "ptr_x",
        "ARGOCD_SERVER": "argocd.example",
        "ARGOCD_AUTH_TOKEN": "argo",
        "KIND_EXPERIMENTAL_PROVIDER": "podman",
        "KINDLER_OPERATION": "create",
    }


def test_kindlers_secrets_never_pass_even_when_named(kindler_environ: None, settings: Any) -> None:
    settings.KINDLER_CHILD_ENV = ["*", *SECRETS]
    assert set(SECRETS) & set(child_environment()) == set()
    assert child_environment()["PG_HOST"] == "db.example"


def test_a_provider_command_runs_without_kindlers_secrets(
    kindler_environ: None, settings: Any
) -> None:
    settings.KINDLER_CHILD_ENV = []
    result = run(Command(("env",)), timeout=30)
    names = sorted(line.partition("=")[0] for line in result.output.splitlines())
    assert names == [
        "DOCKER_HOST",
        "HOME",
        "K3D_FIX_DNS",
        "KIND_EXPERIMENTAL_PROVIDER",
        "KUBECONFIG",
        "LANG",
        "LC_ALL",
        "PATH",
    ]
