"""The JSON API, compatible with the original Kindler web UI's clients."""

from __future__ import annotations

import hmac
import json
import logging
import uuid
from collections.abc import Callable
from functools import wraps
from typing import Any, cast

from django.conf import settings
from django.contrib.auth.decorators import login_not_required
from django.core import signals
from django.core.exceptions import PermissionDenied, RequestDataTooBig, ValidationError
from django.http import Http404, HttpRequest, HttpResponse, HttpResponseBase, JsonResponse
from django.middleware.csrf import CsrfViewMiddleware, get_token
from django.shortcuts import resolve_url
from django.views.decorators.csrf import csrf_exempt

from clusters import lifecycle, listing, permissions, placement, queries, ratelimit, registry
from clusters.errors import json_error
from clusters.models import (
    HOST_PORT_FIELDS,
    Cluster,
    ClusterProtectedError,
    DesiredState,
    OperationLog,
    Provider,
    free_host_ports,
)
from clusters.serializers import cluster_to_dict, operation_to_dict, status_word
from clusters.tasks import task_to_dict
from clusters.validators import MAX_PORT, MIN_PORT

View = Callable[..., HttpResponseBase]
logger = logging.getLogger("django.request")

SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
# API field -> model field, in the order errors are reported.
CREATE_FIELDS: dict[str, tuple[str, type]] = {
    "name": ("name", str),
    "provider": ("provider", str),
    "host": ("host", str),
    "node_port": ("node_port", int),
    "pf_port": ("pf_port", int),
    "http_port": ("http_port", int),
    "https_port": ("https_port", int),
    "cluster_subnet": ("subnet", str),
    "register_portainer": ("register_portainer", bool),
    "haproxy_route": ("haproxy_route", bool),
    "register_argocd": ("register_argocd", bool),
}
API_FIELD = {model: api for api, (model, _) in CREATE_FIELDS.items()}
TYPE_MESSAGES = {
    str: "Input should be a valid string",
    int: "Input should be a valid integer",
    bool: "Input should be a valid boolean",
}
DEFAULTED_FIELDS = (
    "node_port",
    "pf_port",
    "http_port",
    "https_port",
    "register_portainer",
    "haproxy_route",
    "register_argocd",
)
HOST_FIXED = "A cluster stays on its Docker host: delete it and create it on the other host."
NAME_FIXED = "A cluster keeps its name: create a cluster under the other name."
PROVIDER_FIXED = (
    "A cluster keeps its provider: delete it and create it again with the other provider."
)
# What identifies the real cluster: changing one would orphan it.
FIXED_FIELDS = {"name": NAME_FIXED, "host": HOST_FIXED, "provider": PROVIDER_FIXED}
# An operation keeps up to 200,000 characters of output: 200 of them is
# already some 40 MB of JSON.
DEFAULT_OPERATIONS_LIMIT, MAX_OPERATIONS_LIMIT = 50, 200
# Two creates that omit ports may be offered the same free ones; the later
# one tries again with what is free after the first.
FREE_PORT_ATTEMPTS = 3


class ApiError(Exception):
    """An answer other than success, as status and detail."""

    def __init__(self, status: int, detail: Any) -> None:
        super().__init__(detail)
        self.status, self.detail = status, detail


class Unprocessable(ApiError):
    """Invalid input, reported as 422 with a list of {loc, msg}."""

    def __init__(self, errors: list[dict[str, Any]]) -> None:
        super().__init__(422, errors)


class _CsrfCheck(CsrfViewMiddleware):
    def _reject(self, request: HttpRequest, reason: str) -> Any:
        return reason


def csrf_refusal(request: HttpRequest) -> str | None:
    """Return why a session-authenticated change fails the CSRF check, if it does."""
    check = _CsrfCheck(lambda request: HttpResponse())
    check.process_request(request)
    return cast(str | None, check.process_view(request, HttpResponse, (), {}))


def authenticate(request: HttpRequest) -> JsonResponse | None:
    """Return a refusal unless the request has a session or the API token."""
    # META, not request.headers: that would first copy every header of the request.
    scheme, _, credentials = request.META.get("HTTP_AUTHORIZATION", "").partition(" ")
    if scheme.lower() == "bearer":
        expected, given = settings.KINDLER_API_TOKEN, credentials.strip()
        if not expected:
            # Nothing to guess: say so rather than call the token wrong.
            return unauthorized(
                "API tokens are not enabled on this server (KINDLER_API_TOKEN is not set): "
                "log in instead"
            )
        # A token of another length is wrong without comparing it; the
        # comparison itself stays constant-time.
        same_length = bool(expected) and len(given) == len(expected)
        # The valid token first: failures, whoever made them, never refuse it.
        if same_length and hmac.compare_digest(given.encode(), expected.encode()):
            permissions.grant_token(request)
            return None
        seconds = ratelimit.token_retry_after(request)
        if seconds:
            return ratelimit.too_many_json(seconds)
        ratelimit.record_token_failure(request)
        return unauthorized("Invalid API token")
    if not request.user.is_authenticated:
        return unauthorized(
            "Authentication required: log in, or send Authorization: Bearer",
            login_url=resolve_url(settings.LOGIN_URL) if from_browser(request) else None,
        )
    if "CSRF_COOKIE" not in request.META:
        # A session without the CSRF cookie (cleared, or expired before the
        # session) could never write: hand one out with this answer.
        get_token(request)
    if request.method not in SAFE_METHODS:
        reason = csrf_refusal(request)
        if reason is not None:
            return json_error(403, f"CSRF check failed: {reason}")
    return None


def from_browser(request: HttpRequest) -> bool:
    """Return True when a browser page (not a script) made the request."""
    return "X-Requested-With" in request.headers or "text/html" in request.headers.get("Accept", "")


def unauthorized(detail: str, login_url: str | None = None) -> JsonResponse:
    body = {"detail": detail}
    if login_url is not None:
        # A single-page client has no sign-in page of its own: say where it is.
        body["login_url"] = login_url
    response = JsonResponse(body, status=401)
    response["WWW-Authenticate"] = 'Bearer realm="kindler"'
    return response


def api_view(*methods: str) -> Callable[[View], View]:
    """Make a view an API endpoint: auth, allowed methods, every error as JSON."""
    allowed = sorted({*methods, "HEAD"} if "GET" in methods else set(methods))

    def decorator(view: View) -> View:
        @wraps(view)
        def wrapper(request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponseBase:
            refusal = authenticate(request)
            if refusal is not None:
                return refusal
            if request.method not in allowed:
                response = json_error(405, "Method Not Allowed")
                response["Allow"] = ", ".join(allowed)
                return response
            try:
                return view(request, *args, **kwargs)
            except ApiError as exc:
                return json_error(exc.status, exc.detail)
            except Http404 as exc:
                return json_error(404, str(exc))
            except PermissionDenied as exc:
                return json_error(403, str(exc))
            except Exception:
                # The signal Django sends for an unhandled error: the failover
                # middleware listens to it to retry on SQLite after an outage.
                signals.got_request_exception.send(sender=None, request=request)
                logger.exception(
                    "Internal Server Error: %s",
                    request.path,
                    extra={"status_code": 500, "request": request},
                )
                response = json_error(500, "Internal server error")
                # Logged above with the traceback; keep Django from logging it again.
                response._has_been_logged = True  # type: ignore[attr-defined]
                return response

        return login_not_required(csrf_exempt(wrapper))

    return decorator


@login_not_required
@csrf_exempt
def not_found(request: HttpRequest, path: str) -> HttpResponse:
    """Answer any other /api/ path with JSON, whatever DEBUG says."""
    return json_error(404, "Not found")


def get_cluster(name: str) -> Cluster:
    """Return the named cluster, or raise Http404 in the original API's words."""
    found = queries.cluster_named(name)
    if found is None:
        raise Http404(f"Cluster {name} not found")
    return found


def accepted(task: OperationLog, message: str) -> JsonResponse:
    """Return 202 with the task the reconciler will carry out."""
    body = {"task_id": str(task.uid), "status": task.status, "message": message}
    return JsonResponse(body, status=202)


@api_view("GET")
def config(request: HttpRequest) -> HttpResponse:
    """Describe the providers, defaults and port range clients should offer.

    The original's fields come first: each default_*_port_range starts at the
    lowest free port (what a create that omits the port gets) and runs to the
    highest port allowed.
    """
    defaults = {field: Cluster._meta.get_field(field).default for field in DEFAULTED_FIELDS}  # type: ignore[union-attr]
    free = free_host_ports(placement.suggested_host())
    return JsonResponse(
        {
            "base_domain": settings.KINDLER_BASE_DOMAIN,
            "providers": [Provider.KIND.value, Provider.K3D.value],
            "default_provider": Cluster._meta.get_field("provider").default,
            "default_node_port": defaults["node_port"],
            "default_pf_port_range": [free["pf_port"], MAX_PORT],
            "default_http_port_range": [free["http_port"], MAX_PORT],
            "default_https_port_range": [free["https_port"], MAX_PORT],
            "defaults": defaults,
            "port_range": {"min": MIN_PORT, "max": MAX_PORT},
        }
    )


@api_view("GET", "POST")
def clusters(request: HttpRequest) -> HttpResponseBase:
    """List the clusters (clusters.listing), or ask for a new one to be created."""
    if request.method == "POST":
        permissions.require(request, "create")
        return create_cluster(request)
    return listing.cluster_list(request)


def read_json(request: HttpRequest) -> Any:
    """Return the request's JSON body, or raise ApiError (413 too big, 400 unreadable)."""
    try:
        body = request.body
    except RequestDataTooBig:
        limit = settings.DATA_UPLOAD_MAX_MEMORY_SIZE
        raise ApiError(413, f"Request body is larger than {limit} bytes") from None
    try:
        return json.loads(body)
    except (ValueError, UnicodeDecodeError) as exc:
        raise ApiError(400, f"Request body is not valid JSON: {exc}") from None
    except RecursionError:
        # The decoder recurses once per level; Python's recursion limit is the depth check.
        raise ApiError(400, "Request body is JSON nested too deeply") from None


def create_cluster(request: HttpRequest) -> HttpResponse:
    """Record a new cluster; host ports the body omits are the lowest free ones."""
    fields = parse_body(read_json(request))
    name = fields["name"]
    # Statements: one SELECT of the registered reconcilers (the host, the
    # provider check and the answer's wording all come from it), then the
    # cluster's and its operation log's INSERTs. Name and port clashes come
    # back from the unique index and the port claims, not from lookups first.
    with registry.one_reading():
        try:
            cluster, task = request_create_on_free_ports(
                {**fields, "created_by": permissions.account(request)}
            )
        except lifecycle.TooManyClusters as exc:
            raise Unprocessable([{"loc": ["body"], "msg": str(exc)}]) from None
        except ValidationError as exc:
            # A taken name is the answer whatever else clashes: the cluster exists.
            if any(error.code == "unique" for error in exc.error_dict.get("name", [])):
                return json_error(409, f"Cluster {name} already exists")
            raise Unprocessable(validation_errors(exc)) from None
        waiting = placement.waiting_message(cluster.host)
    message = f"Cluster creation task created for {cluster.name}"
    return accepted(task, f"{message}. {waiting}" if waiting else message)


def request_create_on_free_ports(fields: dict[str, Any]) -> tuple[Cluster, OperationLog]:
    """Ask for a cluster, giving each host port the body omits the lowest free one on its host."""
    fields = {**fields, "host": placement.choose_host(fields.get("host"))}
    omitted = [field for field in HOST_PORT_FIELDS if field not in fields]
    for _ in range(FREE_PORT_ATTEMPTS - 1):
        try:
            return lifecycle.request_create(**with_free_ports(fields, omitted))
        except ValidationError as exc:
            # Another request took the offered ports meanwhile: offer again.
            if not omitted or not set(exc.error_dict) <= set(omitted):
                raise
    return lifecycle.request_create(**with_free_ports(fields, omitted))


def with_free_ports(fields: dict[str, Any], omitted: list[str]) -> dict[str, Any]:
    """Return fields with the lowest free port for each omitted host port field."""
    if not omitted:
        return fields
    free = free_host_ports(fields["host"])
    return {**fields, **{field: free[field] for field in omitted}}


def parse_body(body: Any, current: Cluster | None = None) -> dict[str, Any]:
    """Return model fields from a create body, or an update of current, or raise Unprocessable."""
    if not isinstance(body, dict):
        raise Unprocessable([{"loc": ["body"], "msg": "Input should be a valid object"}])
    creating = current is None
    errors: list[dict[str, Any]] = []
    fields: dict[str, Any] = {}
    for api_name, (model_name, kind) in CREATE_FIELDS.items():
        value = body.get(api_name)
        if current is not None and api_name in FIXED_FIELDS:
            # The same value again is no change (a client sending the whole
            # cluster back); another one would orphan the real cluster.
            if api_name in body and value != getattr(current, model_name):
                errors.append({"loc": ["body", api_name], "msg": FIXED_FIELDS[api_name]})
            continue
        if value is None:
            if api_name == "name":
                errors.append({"loc": ["body", api_name], "msg": "Field required"})
            elif api_name == "cluster_subnet" and api_name in body and not creating:
                fields[model_name] = ""  # an explicit null clears the subnet
            continue
        # bool is an int in Python; a port given as true is still a mistake.
        if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
            errors.append({"loc": ["body", api_name], "msg": TYPE_MESSAGES[kind]})
            continue
        fields[model_name] = value
    if errors:
        raise Unprocessable(errors)
    return fields


def validation_errors(exc: ValidationError) -> list[dict[str, Any]]:
    """Return a model ValidationError as the API's list of {loc, msg}."""
    return [
        {"loc": ["body", API_FIELD.get(field, field)], "msg": message}
        for field, messages in exc.message_dict.items()
        for message in messages
    ]


@api_view("GET", "PATCH", "DELETE")
def cluster(request: HttpRequest, name: str) -> HttpResponse:
    """Show one cluster, change its settings, or ask for it to be deleted."""
    found = get_cluster(name)
    if request.method == "GET":
        return JsonResponse(cluster_to_dict(found))
    if request.method == "PATCH":
        permissions.require(request, "edit")
        return update_cluster(request, found)
    permissions.require(request, "delete")
    try:
        task = lifecycle.request_delete(found)
    except ClusterProtectedError as exc:
        raise PermissionDenied(" ".join(exc.messages)) from None
    return accepted(task, f"Cluster deletion task created for {name}")


def update_cluster(request: HttpRequest, found: Cluster) -> HttpResponse:
    """Apply the given fields to a cluster after the model's validation."""
    fields = parse_body(read_json(request), found)
    for field, value in fields.items():
        setattr(found, field, value)
    try:
        # No lookups: the name cannot change here, and a host port another
        # cluster holds is refused by the port claims when the row is saved.
        found.full_clean(exclude=["name", "uid"], validate_unique=False)
        lifecycle.request_update(found)
    except ValidationError as exc:
        raise Unprocessable(validation_errors(exc)) from None
    return JsonResponse(cluster_to_dict(found))


@api_view("GET")
def cluster_status(request: HttpRequest, name: str) -> HttpResponse:
    """Report what the cluster's reconciler last saw of it, and how long ago (no CLI runs here)."""
    found = get_cluster(name)
    seen = registry.last_observation(found.name, found.host, found.provider)
    return JsonResponse(
        {
            "name": found.name,
            "status": status_word(seen.state),
            "observed_state": seen.state,
            "nodes_ready": seen.nodes_ready,
            "nodes_total": seen.nodes_total,
            "host": found.host,
            "observed_at": seen.observed_at.isoformat() if seen.observed_at else None,
            "age_seconds": seen.age_seconds,
            "observation_error": seen.error,
            # Kindler does not query Portainer or Argo CD; kept for old clients.
            "portainer_status": "unknown",
            "argocd_status": "unknown",
            "error_message": found.reconcile_error or None,
        }
    )


@api_view("POST")
def start_cluster(request: HttpRequest, name: str) -> HttpResponse:
    """Ask for a stopped cluster to run again."""
    permissions.require(request, "start")
    found = get_running_candidate(name)
    return accepted(lifecycle.request_start(found), f"Cluster start task created for {name}")


@api_view("POST")
def stop_cluster(request: HttpRequest, name: str) -> HttpResponse:
    """Ask for a cluster to be stopped, keeping it."""
    permissions.require(request, "stop")
    found = get_running_candidate(name)
    return accepted(lifecycle.request_stop(found), f"Cluster stop task created for {name}")


def get_running_candidate(name: str) -> Cluster:
    """Return a cluster that may be started or stopped (not one being deleted)."""
    found = get_cluster(name)
    if found.desired_state == DesiredState.ABSENT:
        # Starting it would silently cancel the deletion someone asked for.
        raise ApiError(409, f"Cluster {name} is marked for deletion")
    return found


@api_view("GET")
def operations(request: HttpRequest, name: str) -> HttpResponse:
    """List a cluster's operations, newest first (the history outlives the cluster)."""
    limit = parse_limit(request.GET.get("limit"))
    entries = list(OperationLog.objects.filter(cluster_name=name)[:limit])
    if not entries:
        get_cluster(name)
    return JsonResponse([operation_to_dict(entry) for entry in entries], safe=False)


def parse_limit(raw: str | None) -> int:
    """Return the ?limit= value, or raise Unprocessable."""
    if raw is None:
        return DEFAULT_OPERATIONS_LIMIT
    # isdigit() alone is true for "²", which int() refuses, and int() refuses
    # more than 4,300 digits.
    digits = raw.isascii() and raw.isdigit() and len(raw) <= 9
    if not digits or not 1 <= int(raw) <= MAX_OPERATIONS_LIMIT:
        message = f"Input should be a whole number from 1 to {MAX_OPERATIONS_LIMIT}"
        raise Unprocessable([{"loc": ["query", "limit"], "msg": message}])
    return int(raw)


@api_view("GET")
def task_status(request: HttpRequest, task_id: str) -> HttpResponse:
    """Report an operation's progress as the original API's TaskStatus."""
    try:
        uid = uuid.UUID(task_id)
    except ValueError:
        raise Http404(f"Task {task_id} not found") from None
    try:
        operation = OperationLog.objects.get(uid=uid)
    except OperationLog.DoesNotExist:
        raise Http404(f"Task {task_id} not found") from None
    clusters = Cluster.objects.filter(name=operation.cluster_name)
    provider = clusters.values_list("provider", flat=True).first()
    return JsonResponse(task_to_dict(operation, provider))
