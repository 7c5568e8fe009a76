"""Who may change clusters: the permission each action needs, and the refusal."""

from __future__ import annotations

from django.core.exceptions import PermissionDenied
from django.http import HttpRequest

# Action -> (permission, what the refusal says the person may not do).
ACTIONS: dict[str, tuple[str, str]] = {
    "create": ("clusters.add_cluster", "create clusters"),
    "edit": ("clusters.change_cluster", "edit clusters"),
    "delete": ("clusters.delete_cluster", "delete clusters"),
    "start": ("clusters.operate_cluster", "start clusters"),
    "stop": ("clusters.operate_cluster", "stop clusters"),
}
# The request attribute the API sets once the API token is accepted.
TOKEN_ATTRIBUTE = "kindler_api_token"


def allowed(request: HttpRequest, action: str) -> bool:
    """Return True when the request may carry out action on clusters.

    The API token acts as an operator; a signed-in person needs the action's
    permission (superusers have all of them).
    """
    if getattr(request, TOKEN_ATTRIBUTE, False):
        return True
    return request.user.has_perm(ACTIONS[action][0])


def refusal(action: str) -> str:
    """Return the message a person without the action's permission gets."""
    return f"You do not have permission to {ACTIONS[action][1]}."


def require(request: HttpRequest, action: str) -> None:
    """Raise PermissionDenied unless the request may carry out action."""
    if not allowed(request, action):
        raise PermissionDenied(refusal(action))


def account(request: HttpRequest) -> str:
    """Return the name of the person making request; empty for the API token (no one)."""
    if getattr(request, TOKEN_ATTRIBUTE, False) or not request.user.is_authenticated:
        return ""
    return str(request.user.get_username())


def grant_token(request: HttpRequest) -> None:
    """Mark the request as made with the API token: it acts as an operator."""
    setattr(request, TOKEN_ATTRIBUTE, True)
