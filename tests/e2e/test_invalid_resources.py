"""The API server (here the emulator enforcing the CRD) refuses invalid PaymentIntents, naming the field."""

from __future__ import annotations

import json
from typing import Any

import pytest
from kubernetes_asyncio.client.exceptions import ApiException

from kubepay_sandbox.stack import Tenant
from tests.helpers import Kube


@pytest.mark.parametrize(("spec", "field"), [
    ({"orderId": "1", "amount": 0, "currency": "usd"}, "spec.amount"),
    ({"orderId": "1", "amount": 12.5, "currency": "usd"}, "spec.amount"),
    ({"orderId": "1", "amount": 100, "currency": "US"}, "spec.currency"),
    ({"amount": 100, "currency": "usd"}, "spec.orderId"),
    ({"orderId": "1\u00001", "amount": 100, "currency": "usd"}, "spec.orderId"),
])
async def test_invalid_spec_is_rejected_with_the_field(tenant: Tenant, kube: Kube, spec: dict[str, Any],
                                                       field: str) -> None:
    with pytest.raises(ApiException) as raised:
        await kube.create_pi(tenant.namespace, "bad", spec)
    assert raised.value.status == 422
    assert field in json.loads(raised.value.body)["message"]
    assert await kube.get_pi(tenant.namespace, "bad") is None


async def test_order_id_cannot_change(tenant: Tenant, kube: Kube) -> None:
    await kube.create_pi(tenant.namespace, "fixed", {"orderId": "1", "amount": 100, "currency": "usd"})
    with pytest.raises(ApiException) as raised:
        await kube.custom.patch_namespaced_custom_object(
            "kubepay.io", "v1alpha1", tenant.namespace, "paymentintents", "fixed", {"spec": {"orderId": "2"}},
            _content_type="application/merge-patch+json")
    assert raised.value.status == 422
    assert json.loads(raised.value.body)["message"] == (
        'PaymentIntent.kubepay.io "fixed" is invalid: spec.orderId: Invalid value: "2": orderId is immutable')
