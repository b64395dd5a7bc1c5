"""The payments API refuses what Stripe would refuse before any resource exists, naming the field (handler level)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any, cast

import pytest
import pytest_asyncio
from aiohttp.test_utils import TestClient, TestServer

from kubepay.kube.client import KubeClient
from kubepay.store import Store
from kubepay_webhook.api import ApiConfig, make_api_app
from kubepay_webhook.api_auth import SharedToken

TOKEN = "t" * 16


@pytest_asyncio.fixture()
async def api() -> AsyncIterator[TestClient[Any, Any]]:
    # No Kubernetes and no PostgreSQL: a request that got past validation would fail on them.
    app = make_api_app(cast(Store, object()), cast(KubeClient, object()), ApiConfig("token", "default", 1.0),
                       SharedToken(TOKEN))
    async with TestClient(TestServer(app)) as client:
        yield client


@pytest.mark.parametrize(("body", "field", "problem"), [
    ({"amount": 1200, "currency": "usd\n"}, "currency", "must be a three-letter ISO 4217 code such as USD"),
    ({"amount": 1200, "currency": " usd"}, "currency", "must be a three-letter ISO 4217 code such as USD"),
    ({"amount": 550, "currency": "ISK"}, "amount",
     "must be a multiple of 100 for ISK: Stripe takes ISK in whole units written with two decimals that are always "
     "00 (5 ISK is 500)"),
    ({"amount": 1250, "currency": "ugx"}, "amount", "must be a multiple of 100 for UGX"),
    ({"amount": 1235, "currency": "KWD"}, "amount",
     "must be a multiple of 10 for KWD: Stripe needs the last digit of a three-decimal amount to be 0 "
     "(5.120 KWD is 5120)"),
    ({"amount_decimal": "5.50", "currency": "ISK"}, "amount_decimal", "must be a multiple of 100 for ISK"),
])
async def test_refused_before_anything_is_created(api: TestClient[Any, Any], body: dict[str, Any], field: str,
                                                  problem: str) -> None:
    response = await api.post("/payments/intent", json={"order_id": "1", **body},
                              headers={"Authorization": f"Bearer {TOKEN}"})
    assert response.status == 422
    answer = await response.json()
    assert set(answer["fields"]) == {field}
    assert answer["fields"][field].startswith(problem)
