"""Bad input everywhere a person or a program can send it: never a 500, never a traceback.

Hypothesis generates API bodies, form posts, environments.csv files and
`cluster create` arguments; every refusal must say what is wrong.
"""

from __future__ import annotations

import json
import os
from io import StringIO
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest
from django.core.management import CommandError, call_command
from django.test import Client, override_settings
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from clusters.environments import COLUMNS, import_lines
from clusters.models import Cluster, OperationLog
from clusters.reconciler import observe
from clusters.registry import Heartbeat
from tests.conftest import BOTH
from tests.factories import make_cluster, make_user

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
    before = inventory()
    response = person.post("/new/", data)
    assert response.status_code in (422, 302), response.status_code
    if response.status_code == 422:
        assert inventory() == before
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


# Harder: unbounded and huge numbers, bodies at and over the size limit, JSON
# nested far past the decoder's recursion, any Unicode (lone surrogates and
# NUL included, as JSON's \u escapes carry them), and provider output that is
# nothing like what k3d and kind print. Whatever comes, no 500, and a refusal
# writes nothing.
HEAVY = settings(FUZZ, max_examples=12)
any_char = st.characters(exclude_categories=())
any_text = st.one_of(
    st.text(alphabet=any_char, max_size=80),
    st.text(alphabet=any_char, max_size=20).map(lambda text: text + "\x00"),
    st.sampled_from(["\ud800", "a\udfff", "\x00", "dev\x00", "\u202edev", "\ufeffdev"]),
)
huge_integers = st.one_of(
    st.integers(),
    st.integers(min_value=2**63 - 2, max_value=2**64 + 2),
    st.integers(min_value=10**19, max_value=10**400),
    st.integers(max_value=-(10**19), min_value=-(10**400)),
)


def inventory() -> tuple[int, int, list[tuple[str, int]]]:
    """Return what a refused request must leave as it was."""
    clusters = list(Cluster.objects.order_by("name").values_list("name", "version"))
    return Cluster.objects.count(), OperationLog.objects.count(), clusters


def refused_without_writing(response: Any, before: Any) -> None:
    """Check a JSON refusal: 4xx with a reason, and nothing written."""
    assert 400 <= response.status_code < 500, response.content
    assert response["Content-Type"] == "application/json"
    assert says_what_is_wrong(response.json()["detail"]), response.content
    assert inventory() == before


@FUZZ
@given(
    field=st.sampled_from(["node_port", "pf_port", "http_port", "https_port"]),
    value=huge_integers,
)
def test_api_integers_of_any_size_are_accepted_or_refused(api: Any, field: str, value: int) -> None:
    before = inventory()
    response = api(json.dumps({"name": "big", field: value}).encode())
    if response.status_code in (202, 409):
        return
    assert response.status_code == 422, response.content
    refused_without_writing(response, before)


@HEAVY
@given(digits=st.integers(min_value=4000, max_value=60000), sign=st.sampled_from(["", "-"]))
def test_api_numbers_longer_than_python_converts_are_400(api: Any, digits: int, sign: str) -> None:
    before = inventory()
    body = b'{"name": "long", "http_port": ' + sign.encode() + b"9" * digits + b"}"
    response = api(body)
    if digits <= 4300:
        assert response.status_code == 422, response.content
    else:
        assert response.status_code == 400, response.content
    refused_without_writing(response, before)


@HEAVY
@given(depth=st.integers(min_value=1, max_value=200_000), brackets=st.sampled_from(["[]", "{}"]))
def test_api_json_nested_to_any_depth_is_refused(api: Any, depth: int, brackets: str) -> None:
    before = inventory()
    opening = "[" if brackets == "[]" else '{"a":'
    body = (opening * depth + "1" + brackets[1] * depth).encode()
    response = api(body)
    refused_without_writing(response, before)


@settings(FUZZ, max_examples=6)
@given(extra=st.integers(min_value=-64, max_value=3 * 2**20))
def test_api_bodies_around_the_size_limit(api: Any, extra: int) -> None:
    from django.conf import settings as django_settings

    before = inventory()
    limit = django_settings.DATA_UPLOAD_MAX_MEMORY_SIZE
    envelope = b'{"name": "x", "pad": ""}'
    padding = max(0, limit + extra - len(envelope))
    body = envelope[:-2] + b"a" * padding + b'"}'
    response = api(body)
    if len(body) > limit:
        assert response.status_code == 413, response.content
        refused_without_writing(response, before)
    else:
        assert response.status_code in (202, 409), response.content


@FUZZ
@given(
    body=st.tuples(
        st.fixed_dictionaries(
            {"name": any_text}, optional={"provider": any_text, "cluster_subnet": any_text}
        ),
        st.dictionaries(any_text, any_text, max_size=3),
    ).map(lambda parts: {**parts[1], **parts[0]})
)
def test_api_any_unicode_in_a_body_is_accepted_or_refused(api: Any, body: Any) -> None:
    before = inventory()
    response = api(json.dumps(body).encode())
    if response.status_code in (202, 409):
        return
    assert response.status_code == 422, response.content
    refused_without_writing(response, before)


@pytest.fixture
def token_client(client: Client, settings: Any) -> Client:
    settings.KINDLER_API_TOKEN = TOKEN
    client.defaults["HTTP_AUTHORIZATION"] = f"Bearer {TOKEN}"
    return client


# A name as a client puts it in a URL: percent-encoded, slashes included.
url_names = any_text.filter(lambda name: name and name[:1] < "\ud800").map(
    lambda name: quote(name.encode("utf-8", "surrogatepass"), safe="")
)
API_ROUTES = [
    ("get", "/api/clusters/{}"),
    ("delete", "/api/clusters/{}"),
    ("patch", "/api/clusters/{}"),
    ("get", "/api/clusters/{}/status"),
    ("post", "/api/clusters/{}/start"),
    ("post", "/api/clusters/{}/stop"),
    ("get", "/api/clusters/{}/operations"),
    ("get", "/api/tasks/{}"),
]


@FUZZ
@given(name=url_names, route=st.sampled_from(API_ROUTES))
def test_api_any_name_in_a_url_is_404(token_client: Client, name: str, route: Any) -> None:
    make_cluster_once()
    before = inventory()
    method, template = route
    response = token_client.generic(
        method.upper(), template.format(name), b"{}", content_type="application/json"
    )
    expected = (400,) if "%00" in name else (404, 405)
    assert response.status_code in expected, response.content
    refused_without_writing(response, before)


def make_cluster_once() -> None:
    if not Cluster.objects.filter(name="dev").exists():
        make_cluster(name="dev")


@FUZZ
@given(limit=any_text)
def test_api_any_operations_limit_is_a_page_or_422(token_client: Client, limit: str) -> None:
    make_cluster_once()
    response = token_client.get(
        "/api/clusters/dev/operations?limit=" + quote(limit.encode("utf-8", "surrogatepass"))
    )
    valid = limit.isascii() and limit.isdigit() and 1 <= int(limit) <= 200
    expected = 400 if "\x00" in limit else 200 if valid else 422
    assert response.status_code == expected, response.content


# What a browser can send in a query string: any character it can encode.
browser_text = st.text(alphabet=st.characters(exclude_categories=["Cs"]), max_size=40)


@FUZZ
@given(
    query=st.dictionaries(
        st.sampled_from(["q", "provider", "state", "page"]) | browser_text,
        browser_text,
        max_size=4,
    )
)
def test_the_dashboard_list_answers_any_query(person: Client, query: dict[str, str]) -> None:
    make_cluster_once()
    response = person.get("/", query)
    nul = any("\x00" in text for pair in query.items() for text in pair)
    assert response.status_code == (400 if nul else 200)


@FUZZ
@given(name=url_names, page=st.sampled_from(["", "edit/", "delete/"]))
def test_the_dashboard_answers_any_cluster_name_with_404(
    person: Client, name: str, page: str
) -> None:
    response = person.get(f"/clusters/{name}/{page}")
    assert response.status_code == (400 if "%00" in name else 404)


# Provider output: JSON of any shape, k3d-like entries with values of any
# type, and text that is no JSON at all.
k3d_entries = st.lists(
    st.fixed_dictionaries(
        {},
        optional={
            "name": json_values | any_text,
            "serversRunning": json_values | huge_integers,
            "serversCount": json_values | huge_integers,
            "agentsRunning": json_values | huge_integers,
            "agentsCount": json_values | huge_integers,
            "nodes": json_values,
        },
    ),
    max_size=4,
)
k3d_outputs = st.one_of(
    k3d_entries.map(json.dumps),
    json_values.map(json.dumps),
    any_text,
    st.sampled_from(["[null]", '[{"name": "dev", "serversCount": 1e400}]', "NaN", "[" * 50_000]),
    k3d_entries.map(lambda entries: "WARN[0000] a warning\n" + json.dumps(entries)),
)
kind_outputs = st.tuples(any_text, any_text).map(lambda pair: {"kind": pair[0], "docker": pair[1]})


@FUZZ
@given(output=k3d_outputs)
def test_any_k3d_listing_is_a_status_or_unknown(
    token_client: Client, output: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    make_cluster_once()
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr("clusters.drivers.k3d.capture", lambda argv: output)
        observed = observe("k3d")
    # As the reconciler does: keep the observation, which the status API answers from.
    Heartbeat(providers={"k3d": "v5.7.4"}).record_observation({"k3d": observed})
    response = token_client.get("/api/clusters/dev/status")
    assert response.status_code == 200, response.content
    assert response.json()["status"] in ("running", "stopped", "unknown")
    assert isinstance(observed, dict | str)


@FUZZ
@given(outputs=kind_outputs)
def test_any_kind_listing_is_a_status(token_client: Client, outputs: dict[str, str]) -> None:
    if not Cluster.objects.filter(name="kdev").exists():
        make_cluster(name="kdev", provider="kind")

    def capture(argv: tuple[str, ...]) -> str:
        return outputs[argv[0]]

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr("clusters.drivers.kind.capture", capture)
        observed = observe("kind")
    Heartbeat(providers={"kind": "v0.24.0"}).record_observation({"kind": observed})
    response = token_client.get("/api/clusters/kdev/status")
    assert response.status_code == 200, response.content
    # kind's listing is names, one a line: whatever it prints is a listing, never an error.
    assert isinstance(observed, dict)
    assert response.json()["observed_state"] == ("running" if "kdev" in observed else "absent")


@settings(FUZZ, max_examples=15)
@given(
    output=st.binary(max_size=2000)
    | k3d_outputs.map(lambda text: text.encode("utf-8", "surrogatepass"))
)
def test_any_bytes_a_real_k3d_prints_are_a_status_or_unknown(
    token_client: Client, output: bytes, tmp_path_factory: pytest.TempPathFactory
) -> None:
    """A real executable on PATH prints the bytes: decoding is tested too."""
    make_cluster_once()
    folder = tmp_path_factory.mktemp("k3d")
    (folder / "output").write_bytes(output)
    script = folder / "k3d"
    script.write_text(f"#!/bin/sh\ncat '{folder / 'output'}'\n")
    script.chmod(0o755)
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("PATH", f"{folder}{os.pathsep}{os.environ['PATH']}")
        response = token_client.get("/api/clusters/dev/status")
    assert response.status_code == 200, response.content
    assert response.json()["status"] in ("running", "stopped", "unknown")


@FUZZ
@given(
    body=st.fixed_dictionaries(
        {},
        optional={
            "cluster_subnet": any_text | st.none(),
            "provider": any_text,
            "http_port": huge_integers,
            "node_port": huge_integers,
            "register_argocd": json_values,
        },
    )
)
def test_api_any_change_is_saved_or_refused(token_client: Client, body: Any) -> None:
    make_cluster_once()
    before = inventory()
    response = token_client.patch(
        "/api/clusters/dev", json.dumps(body), content_type="application/json"
    )
    if response.status_code == 200:
        return
    assert response.status_code == 422, response.content
    refused_without_writing(response, before)
