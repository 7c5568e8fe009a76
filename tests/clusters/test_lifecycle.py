from __future__ import annotations

from typing import Any

import pytest
from django.core.exceptions import ValidationError

from clusters import lifecycle, preflight
from clusters.models import Cluster, OperationLog
from tests.conftest import BOTH
from tests.factories import cluster_fields, make_cluster

pytestmark = pytest.mark.django_db(databases=BOTH)


def test_a_name_taken_after_validation_is_refused_as_a_duplicate(
    alias: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    real_check = preflight.check_request

    def someone_else_takes_the_name(cluster: Cluster) -> None:
        real_check(cluster)
        make_cluster(name=cluster.name)

    monkeypatch.setattr(preflight, "check_request", someone_else_takes_the_name)
    with pytest.raises(ValidationError) as caught:
        lifecycle.request_create(**cluster_fields(name="dev"))
    assert caught.value.message_dict == {"name": ["A cluster named dev already exists."]}
    assert (Cluster.objects.filter(name="dev").count(), OperationLog.objects.count()) == (1, 0)


def test_devops_cannot_be_marked_absent_by_editing_it(alias: str) -> None:
    devops = make_cluster(name="devops")
    devops.desired_state = "absent"
    with pytest.raises(ValidationError) as caught:
        devops.full_clean()
    assert caught.value.message_dict == {"desired_state": ["The devops cluster cannot be deleted."]}


def test_other_clusters_can_be_marked_absent_by_editing_them(alias: str) -> None:
    dev: Any = make_cluster(name="dev")
    dev.desired_state = "absent"
    dev.full_clean()
