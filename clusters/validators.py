"""Field validators shared by every way a cluster enters Kindler."""

from __future__ import annotations

import ipaddress
import re

from django.core.exceptions import ValidationError
from django.core.validators import MaxValueValidator, MinValueValidator

DNS_LABEL = re.compile(r"[a-z0-9]([a-z0-9-]*[a-z0-9])?")
HOST_NAME = re.compile(r"[A-Za-z0-9]([A-Za-z0-9._-]*[A-Za-z0-9])?")
MAX_HOST_NAME = 253
MIN_PORT, MAX_PORT = 1024, 65535
PORT_RANGE_MESSAGE = f"Ports must be between {MIN_PORT} and {MAX_PORT}."
port_validators = [
    MinValueValidator(MIN_PORT, message=PORT_RANGE_MESSAGE),
    MaxValueValidator(MAX_PORT, message=PORT_RANGE_MESSAGE),
]


def validate_dns_label(value: str) -> None:
    """Accept a DNS-1123 label: lower-case letters, digits and inner dashes."""
    if len(value) > 63:
        raise ValidationError(
            "Cluster names are at most 63 characters (this one has %(length)d).",
            code="max_length",
            params={"length": len(value)},
        )
    # fullmatch: with match, "$" also matches before a trailing newline.
    if not DNS_LABEL.fullmatch(value):
        raise ValidationError(
            "Use lower-case letters, digits and dashes, starting and ending with "
            "a letter or digit (a DNS-1123 label), e.g. dev-1.",
            code="invalid_name",
        )


def validate_host_name(value: str) -> None:
    """Accept a Docker host's name: letters, digits, dots, dashes and underscores."""
    if len(value) > MAX_HOST_NAME or not HOST_NAME.fullmatch(value):
        raise ValidationError(
            "A host name is up to %(max)d letters, digits, dots, dashes and underscores, "
            "starting and ending with a letter or digit, e.g. docker-1.",
            code="invalid_host",
            params={"max": MAX_HOST_NAME},
        )


def validate_ipv4_cidr(value: str) -> None:
    """Accept an IPv4 network written as address/prefix-length, with no host bits set.

    ipaddress also reads a netmask (10.0.0.0/255.0.0.0) and a bare address (a
    /32); the provider is given the value as typed, so only the normal form is
    accepted.
    """
    try:
        network = ipaddress.ip_network(value, strict=True)
    except ValueError as exc:
        detail = str(exc).replace("'", "")
        raise ValidationError(
            "%(value)s is not a valid IPv4 CIDR such as 10.100.0.0/16 (%(detail)s).",
            code="invalid_cidr",
            params={"value": value, "detail": detail},
        ) from None
    if network.version != 4:
        raise ValidationError(
            "%(value)s is an IPv6 network; use an IPv4 CIDR such as 10.100.0.0/16.",
            code="invalid_cidr",
            params={"value": value},
        )
    if "/" not in value:
        raise ValidationError(
            "%(value)s has no prefix length; write a network such as %(value)s/16.",
            code="invalid_cidr",
            params={"value": value},
        )
    if str(network) != value:
        raise ValidationError(
            "%(value)s is not in CIDR notation; write it as %(network)s.",
            code="invalid_cidr",
            params={"value": value, "network": str(network)},
        )


def one_line(error: ValidationError) -> str:
    """Return every message of a ValidationError on one line, field first."""
    if hasattr(error, "error_dict"):
        return " ".join(
            f"{field}: {message}" if field != "__all__" else message
            for field, messages in error.message_dict.items()
            for message in messages
        )
    return " ".join(error.messages)
