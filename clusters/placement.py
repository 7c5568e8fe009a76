"""Which Docker host a cluster belongs to, and whether a reconciler there can act on it.

The web side never looks at its own PATH: it reads the registry.
"""

from __future__ import annotations

from django.conf import settings
from django.core.exceptions import ValidationError

from clusters import registry
from clusters.drivers import driver_for
from clusters.validators import validate_host_name


def choose_host(requested: str | None = None) -> str:
    """Return the Docker host for a new cluster, or raise ValidationError on host.

    A named host wins; then KINDLER_DEFAULT_HOST; then the only host with a
    live reconciler; with none live, the only host ever registered, or this
    machine. Several candidates and no default: the request must name one.
    """
    if requested:
        try:
            validate_host_name(requested)
        except ValidationError as exc:
            raise ValidationError({"host": exc.error_list}) from None
        return requested
    if settings.KINDLER_DEFAULT_HOST:
        return str(settings.KINDLER_DEFAULT_HOST)
    hosts = sorted({entry.host for entry in registry.live_registrations()})
    if not hosts:
        hosts = registry.known_hosts()
    if not hosts:
        return str(settings.KINDLER_HOST_NAME)
    if len(hosts) == 1:
        return hosts[0]
    raise ValidationError(
        {
            "host": [
                ValidationError(
                    "Several Docker hosts have a reconciler (%(hosts)s): name one, "
                    "or set KINDLER_DEFAULT_HOST.",
                    code="required",
                    params={"hosts": ", ".join(hosts)},
                )
            ]
        }
    )


def provider_refusal(host: str, provider: str) -> str | None:
    """Return why the live reconcilers of host cannot run provider; None when one can."""
    live = registry.live_on(host)
    if not live or any(provider in entry.providers for entry in live):
        return None
    binary = driver_for(provider).binary
    return (
        f"the reconciler on {host} has no {binary} on its PATH; {registry.install_hint(provider)}"
    )


UNPLACED = (
    "This cluster has no Docker host yet (it was added before clusters had one): "
    "the first reconciler that runs takes it."
)


def waiting_message(host: str) -> str | None:
    """Return what to do when no reconciler is live for host; None when one is."""
    if not host:
        return UNPLACED
    if registry.live_on(host):
        return None
    return (
        f"No reconciler is running for host {host}: nothing will happen until one starts "
        f"there (scripts/manage reconcile with KINDLER_HOST_NAME={host})."
    )


def suggested_host() -> str:
    """Return the host a form offers first: the default when there is one, else this machine."""
    try:
        return choose_host()
    except ValidationError:
        return str(settings.KINDLER_HOST_NAME)
