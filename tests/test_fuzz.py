"""Bad input everywhere a person or a program can send it: never a 500, never a traceback.

Hypothesis generates API bodies, form posts, environments.csv files and
`cluster create` arguments; every refusal must say what is wrong.
"""

from __future__ import annotations

import json
from io import StringIO
from pathlib import Path
from typing import Any

import pytest
from django.core.management import CommandError, call_command
from django.test import Client, override_settings
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from clusters.environments import COLUMNS, import_lines
from tests.conftest import BOTH
from tests.factories import make_user

TOKEN = "fuzz-token-for-tests"
FUZZ = settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
pytestmark = pytest.mark.django_db(databases=BOTH)

names = st.one_of(
    st.from_regex(r"[a-z][a-z0-9-]{0,70}", fullmatch=True),
    st.text(max_size=80),
)
ports = st.one_of(
    st.integers(min_value=-(2**40), max_value=2**40),
    st.integers(min_value=1000, max_value=70000),
    st.text(max_size=8),
    st.floats(allow_nan=True),
    st.none(),
    st.booleans(),
)
subnets = st.one_of(
    st.just(""),
    st.from_regex(r"\d{1,3}\.\d{1,3}\.\d{1,3}\.\d{1,3}/\d{1,2}", fullmatch=True),
    st.text(max_size=40),
)
json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner, max_size=4)
    ),
    max_leaves=10,
)
cluster_bodies = st.fixed_dictionaries(
    {},
    optional={
        "name": names,
        "provider": st.sampled_from(["k3d", "kind", "", "K3D", "docker"]) | st.text(max_size=10),
        "node_port": ports,
        "pf_port": ports,
        "http_port": ports,
        "https_port": ports,
        "cluster_subnet": subnets,
        "register_portainer": st.booleans() | json_values,
        "haproxy_route": st.booleans() | json_values,
        "register_argocd": st.booleans() | json_values,
    },
)


def says_what_is_wrong(detail: Any) -> bool:
    """Return True when an API detail is a message or a list of located messages."""
    if isinstance(detail, str):
        return bool(detail.strip())
    return (
        isinstance(detail, list)
        and bool(detail)
        and all(isinstance(item.get("msg"), str) and item["msg"].strip() for item in detail)
    )


@pytest.fixture
def api(client: Client) -> Any:
    def post(body: bytes, content_type: str = "application/json") -> Any:
        with override_settings(KINDLER_API_TOKEN=TOKEN):
            return client.post(
                "/api/clusters",
                data=body,
                content_type=content_type,
                HTTP_AUTHORIZATION=f"Bearer {TOKEN}",
            )

    return post


@FUZZ
@given(body=cluster_bodies)
def test_api_cluster_bodies_are_accepted_or_refused_with_a_reason(api: Any, body: Any) -> None:
    response = api(json.dumps(body).encode())
    assert response.status_code in (202, 409, 422), response.content
    if response.status_code != 202:
        assert says_what_is_wrong(response.json()["detail"]), response.content


@FUZZ
@given(body=json_values)
def test_api_json_of_any_shape_is_refused_with_a_reason(api: Any, body: Any) -> None:
    response = api(json.dumps(body).encode())
    assert response.status_code in (202, 400, 409, 422), response.content
    if response.status_code != 202:
        assert says_what_is_wrong(response.json()["detail"]), response.content


@FUZZ
@given(body=st.binary(max_size=200))
def test_api_raw_bytes_are_refused_as_json(api: Any, body: bytes) -> None:
    response = api(body)
    assert response["Content-Type"] == "application/json"
    assert response.status_code < 500, response.content
    if response.status_code != 202:
        assert says_what_is_wrong(response.json()["detail"]), response.content


@pytest.fixture
def person(client: Client, roles: None) -> Client:
    """Sign in an operator: a person who may submit every form."""
    client.force_login(make_user("fuzzer", "Operators"))
    return client


form_values = st.one_of(st.text(max_size=30), st.integers().map(str), st.just(""))
# What a browser sends: every text field (maybe empty), checkboxes only when ticked.
form_posts = st.fixed_dictionaries(
    {
        field: form_values
        for field in (
            "name",
            "provider",
            "http_port",
            "https_port",
            "pf_port",
            "node_port",
            "subnet",
            "server_ip",
        )
    },
    optional={
        field: form_values for field in ("register_portainer", "haproxy_route", "register_argocd")
    },
)


@FUZZ
@given(data=form_posts)
def test_create_form_posts_redirect_or_show_the_errors(
    person: Client, data: dict[str, str]
) -> None:
    response = person.post("/new/", data)
    assert response.status_code in (422, 302), response.status_code
    if response.status_code == 422:
        form = response.context["form"]
        messages = [m for errors in form.errors.values() for m in errors]
        assert messages
        assert all(m.strip() for m in messages)
        assert 'class="errorlist' in response.content.decode()


# One line of a text file: anything but the line breaks that end it.
line_text = st.characters(blacklist_categories=["Cs"], blacklist_characters="\r\n")
csv_cells = st.one_of(
    st.text(alphabet=line_text, max_size=12),
    st.integers(min_value=-5, max_value=70000).map(str),
    st.sampled_from(["k3d", "kind", "true", "false", "10.0.0.0/16", ""]),
)
csv_lines = st.one_of(
    st.lists(csv_cells, min_size=0, max_size=len(COLUMNS) + 2).map(",".join),
    st.text(alphabet=line_text, max_size=60),
    st.just("# " + ",".join(COLUMNS)),
)


@FUZZ
@given(lines=st.lists(csv_lines, max_size=8))
def test_csv_import_creates_or_rejects_each_line_with_a_reason(lines: list[str]) -> None:
    report = import_lines([line + "\n" for line in lines], source="fuzz.csv")
    for line, reason in report.rejected:
        assert 1 <= line <= len(lines)
        assert reason.strip()


@FUZZ
@given(content=st.binary(max_size=300))
def test_import_environments_command_refuses_any_file_with_a_message(
    tmp_path_factory: pytest.TempPathFactory, content: bytes
) -> None:
    path = Path(tmp_path_factory.mktemp("csv")) / "environments.csv"
    path.write_bytes(content)
    out, err = StringIO(), StringIO()
    refusal: str | None
    try:
        call_command("import_environments", str(path), stdout=out, stderr=err)
    except CommandError as exc:
        refusal = str(exc)
    else:
        refusal = None
    if refusal is None:
        assert out.getvalue().strip().endswith("0 rejected.")
    else:
        assert refusal.strip()


cli_values = st.one_of(st.text(max_size=20), st.integers().map(str))


@FUZZ
@given(
    name=names,
    options=st.dictionaries(
        st.sampled_from(
            ["--provider", "--http-port", "--https-port", "--pf-port", "--node-port", "--subnet"]
        ),
        cli_values,
        max_size=6,
    ),
)
def test_cluster_create_arguments_succeed_or_fail_with_a_message(
    name: str, options: dict[str, str]
) -> None:
    argv = ["create", "--", name] if name.startswith("-") else ["create", name]
    for option, value in options.items():
        argv[1:1] = [f"{option}={value}"]
    out = StringIO()
    refusal: str | None
    try:
        call_command("cluster", *argv, stdout=out, stderr=StringIO())
    except CommandError as exc:
        refusal = str(exc)
    else:
        refusal = None
    if refusal is None:
        assert out.getvalue().startswith(f"Cluster {name} added")
    else:
        assert refusal.strip()
