"""`kubepay api` under each KUBEPAY_API_AUTH mode: the real process against the sandbox."""

from __future__ import annotations

import json

import pytest

from kubepay_sandbox.stack import Sandbox, Tenant
from tests.contracts import ApiClient

LIST = "/payments?order_id=nobody"  # any authenticated route; this one needs only PostgreSQL


async def test_token_mode_takes_only_the_shared_token(tenant: Tenant) -> None:
    process = tenant.process("api", KUBEPAY_API_AUTH="token")
    await process.start()
    api = await ApiClient.connect(tenant.api_url, tenant.api_token)
    assert await api.call("GET", LIST) == (200, {"payments": []})
    for token in (None, "wrong-token-0123456789"):
        status, body = await api.call("GET", LIST, token=token)
        assert (status, body["error"]) == (401, "missing or invalid bearer token")
    assert tenant.api_token not in process.logs()


async def _shop_and_stranger(sandbox: Sandbox, ns: str) -> tuple[str, str]:
    """Two ServiceAccount tokens: shop (in a pod) may create PaymentIntents in `ns`; stranger may only read them."""
    controls = sandbox.kube_controls
    shop = await controls.service_account_token(ns, "shop", pod="shop-7d9f")
    stranger = await controls.service_account_token(ns, "stranger")
    await controls.allow(f"system:serviceaccount:{ns}:shop", "create", "paymentintents", group="kubepay.io",
                         namespace=ns)
    await controls.allow(f"system:serviceaccount:{ns}:stranger", "get", "paymentintents", group="kubepay.io",
                         namespace=ns)
    return shop, stranger


async def test_serviceaccount_mode_asks_tokenreview_and_subjectaccessreview(sandbox: Sandbox, tenant: Tenant) -> None:
    ns = tenant.namespace
    shop, stranger = await _shop_and_stranger(sandbox, ns)
    process = tenant.process("api", KUBEPAY_API_AUTH="serviceaccount")
    await process.start()
    api = await ApiClient.connect(tenant.api_url, shop)

    assert await api.call("GET", LIST) == (200, {"payments": []})
    status, body = await api.call("GET", LIST, token=None)
    assert status == 401 and "ServiceAccount token" in body["error"]
    for unknown in ("not-a-kubernetes-token", tenant.api_token):  # the token mode's secret means nothing here
        status, body = await api.call("GET", LIST, token=unknown)
        assert status == 401 and "does not accept it" in body["error"], body
    status, body = await api.call("GET", LIST, token=stranger)
    assert status == 403
    assert body["error"] == (f"system:serviceaccount:{ns}:stranger may not create paymentintents.kubepay.io in "
                             f"namespace {ns}; grant it with a Role and RoleBinding")
    for token, expected in ((shop, 200), (stranger, 403), ("not-a-kubernetes-token", 401)):  # remembered answers
        assert (await api.call("GET", LIST, token=token))[0] == expected
    for secret in (shop, stranger):
        assert secret not in process.logs()


@pytest.mark.needs_emulator  # reads what the API server was asked
async def test_serviceaccount_mode_asks_about_the_whole_identity_once_per_token(
        sandbox: Sandbox, tenant: Tenant) -> None:
    ns, reviews = tenant.namespace, sandbox.kube.reviews
    shop_user = f"system:serviceaccount:{ns}:shop"
    shop, stranger = await _shop_and_stranger(sandbox, ns)
    process = tenant.process("api", KUBEPAY_API_AUTH="serviceaccount")
    await process.start()
    api = await ApiClient.connect(tenant.api_url, shop)
    for token in (shop, stranger, "not-a-kubernetes-token"):
        await api.call("GET", LIST, token=token)

    # The SubjectAccessReview asked about the whole identity TokenReview found.
    [asked] = [spec for spec in reviews.access_log if spec.get("user") == shop_user]
    assert asked["resourceAttributes"] == {"namespace": ns, "verb": "create", "group": "kubepay.io",
                                           "resource": "paymentintents"}
    assert set(asked["groups"]) == {"system:serviceaccounts", f"system:serviceaccounts:{ns}", "system:authenticated"}
    assert asked["uid"] and asked["extra"]["authentication.kubernetes.io/pod-name"] == ["shop-7d9f"]
    # Answers are remembered: more requests with the same tokens cost no more reviews.
    reviewed = list(reviews.token_log)
    for token, expected in ((shop, 200), (stranger, 403), ("not-a-kubernetes-token", 401)):
        assert (await api.call("GET", LIST, token=token))[0] == expected
    assert list(reviews.token_log) == reviewed


async def test_none_mode_needs_no_header_and_warns_at_start(tenant: Tenant) -> None:
    process = tenant.process("api", KUBEPAY_API_AUTH="none")
    await process.start()
    api = await ApiClient.connect(tenant.api_url, tenant.api_token)
    assert await api.call("GET", LIST, token=None) == (200, {"payments": []})
    assert await api.call("GET", LIST, token="anything at all") == (200, {"payments": []})
    assert api.checker.document["security"] == []  # the served document says so too
    [warning] = [line for line in process.logs().splitlines() if "KUBEPAY_API_AUTH=none:" in line]
    assert json.loads(warning)["severity"] == "warn" and "NetworkPolicy" in warning
