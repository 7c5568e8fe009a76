"""Forms for the dashboard: cluster create/edit, delete confirmation, list filters."""

from __future__ import annotations

from typing import Any

from django import forms
from django.core.exceptions import ValidationError
from django.db.models import QuerySet

from clusters import placement
from clusters.models import ActualState, Cluster, Provider
from clusters.validators import PORT_RANGE_MESSAGE

PORT_FIELDS = ("http_port", "https_port", "pf_port", "node_port")
# The form field's own bound (0, from PositiveIntegerField) speaks of the
# range the model's validators explain.
PORT_ERRORS = {"min_value": PORT_RANGE_MESSAGE, "max_value": PORT_RANGE_MESSAGE}

CLUSTER_FIELDS = [
    "name",
    "provider",
    "host",
    "http_port",
    "https_port",
    "pf_port",
    "node_port",
    "subnet",
    "server_ip",
    "register_portainer",
    "haproxy_route",
    "register_argocd",
]


class ClusterForm(forms.ModelForm):
    """A new cluster; validation is the model's own (ports, subnet, name)."""

    class Meta:
        model = Cluster
        fields = CLUSTER_FIELDS
        labels = {
            "host": "Docker host",
            "http_port": "HTTP port",
            "https_port": "HTTPS port",
            "pf_port": "Port-forward port",
            "node_port": "NodePort",
            "server_ip": "Server IP",
            "register_portainer": "Register in Portainer",
            "haproxy_route": "Route through HAProxy",
            "register_argocd": "Register in Argo CD",
        }
        error_messages = {
            # The same words as validate_dns_label, which the form's own
            # length check would otherwise pre-empt with Django's generic one.
            "name": {
                "max_length": "Cluster names are at most 63 characters (this one has "
                "%(show_value)d)."
            },
            **{field: PORT_ERRORS for field in PORT_FIELDS},
        }
        help_texts = {
            "name": "Lower-case letters, digits and dashes, e.g. dev-1.",
            "subnet": "k3d only, e.g. 10.101.0.0/16. Leave empty to let the provider choose.",
            "server_ip": "Optional.",
            "host": "The Docker host whose reconciler runs it. Leave empty for the default.",
        }

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        if "host" in self.fields:
            self.fields["host"].required = False
            self.fields["host"].show_hidden_initial = False

    def clean_host(self) -> str:
        try:
            return placement.choose_host(self.cleaned_data.get("host") or None)
        except ValidationError as exc:
            raise ValidationError(exc.message_dict["host"]) from None


# What identifies the real cluster: changing one would orphan it.
FIXED_FIELDS = ("name", "provider", "host")


class ClusterEditForm(ClusterForm):
    """An existing cluster's settings; the name, the provider and the Docker host stay."""

    class Meta(ClusterForm.Meta):
        fields = [field for field in CLUSTER_FIELDS if field not in FIXED_FIELDS]


class DeleteConfirmForm(forms.Form):
    """Make a person type the cluster's name before deleting it."""

    confirm_name = forms.CharField(label="Type the cluster's name to confirm", strip=True)

    def __init__(self, cluster: Cluster, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.cluster = cluster

    def clean_confirm_name(self) -> str:
        value: str = self.cleaned_data["confirm_name"]
        if value != self.cluster.name:
            raise forms.ValidationError(
                "Type %(name)s exactly to confirm the deletion.",
                code="mismatch",
                params={"name": self.cluster.name},
            )
        return value


class ClusterFilterForm(forms.Form):
    """Search by name and filter by provider and actual state."""

    q = forms.CharField(required=False, label="Name", max_length=63)
    provider = forms.ChoiceField(required=False, choices=[("", "Any provider"), *Provider.choices])
    state = forms.ChoiceField(required=False, choices=[("", "Any state"), *ActualState.choices])

    def filter(self, clusters: QuerySet[Cluster]) -> QuerySet[Cluster]:
        """Return clusters narrowed by the valid filters."""
        data = self.cleaned_data if self.is_valid() else {}
        if data.get("q"):
            clusters = clusters.filter(name__icontains=data["q"])
        if data.get("provider"):
            clusters = clusters.filter(provider=data["provider"])
        if data.get("state"):
            clusters = clusters.filter(actual_state=data["state"])
        return clusters
