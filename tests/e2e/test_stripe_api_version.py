"""Every Stripe request names the API version kubepay was written for, and says it comes from kubepay."""

from __future__ import annotations

import pytest
import stripe

from kubepay import __version__
from kubepay.stripe.api_version import STRIPE_API_VERSION
from kubepay_sandbox.stack import Sandbox
from tests.conftest import Running
from tests.helpers import Kube, stripe_id, wait_for


def test_the_pinned_version_is_the_one_the_sdk_speaks() -> None:
    assert stripe.api_version == STRIPE_API_VERSION


@pytest.mark.needs_fake_stripe  # reads the fake's request log
async def test_requests_carry_the_pinned_version_and_app_info(sandbox: Sandbox, running: Running,
                                                              kube: Kube) -> None:
    created = await kube.create_pi(running.namespace, "versioned", {"orderId": "9101", "amount": 500,
                                                                    "currency": "usd"})
    await stripe_id(kube, running.namespace, "versioned")
    key = f"kubepay-pi-create-{created['metadata']['uid']}"
    [create] = [r for r in await sandbox.stripe.requests_log() if r["idempotency_key"] == key]
    assert create["stripe_version"] == STRIPE_API_VERSION
    assert f"kubepay/{__version__}" in create["user_agent"]

    async def logged() -> bool:
        return f"Stripe API {STRIPE_API_VERSION}" in running.operator.logs()
    await wait_for(logged, what="the operator logging the Stripe API version at start")
