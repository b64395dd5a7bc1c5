"""Settings of `kubepay api` and `kubepay orders-consumer`."""

from __future__ import annotations

import pytest

from kubepay.config import ConfigError, load

BASE = {"DATABASE_URL": "postgresql://u:p@db:5432/payments", "KAFKA_BROKER_URL": "kafka:9092"}


def test_api_defaults_and_namespaces() -> None:
    settings = load({**BASE, "KUBEPAY_API_TOKEN": "x" * 32}, command="api")
    assert settings.api_auth == "token"
    assert (settings.api_port, settings.api_namespace, settings.api_wait_seconds) == (8081, "default", 10.0)
    assert (settings.topics.orders_created, settings.topics.orders_dlq) == ("orders.created", "orders.created.dlq")
    assert (settings.orders_group, settings.orders_consumer_in_operator) == ("kubepay-orders", False)
    in_pod = load({**BASE, "POD_NAMESPACE": "shop", "KUBEPAY_NAMESPACE": "payments"}, command="orders-consumer")
    assert (in_pod.api_namespace, in_pod.orders_namespace) == ("shop", "payments")
    assert "x" * 32 not in repr(settings)


@pytest.mark.parametrize(("change", "message"), [
    ({}, "KUBEPAY_API_TOKEN is required"),
    ({"KUBEPAY_API_TOKEN": "short"}, "KUBEPAY_API_TOKEN must be at least 16 characters"),
    ({"KUBEPAY_API_TOKEN": "x" * 16, "KUBEPAY_API_WAIT_SECONDS": "soon"}, "KUBEPAY_API_WAIT_SECONDS must be a number"),
    ({"KUBEPAY_API_TOKEN": "x" * 16, "KUBEPAY_ORDERS_CONSUMER": "maybe"}, "KUBEPAY_ORDERS_CONSUMER must be true"),
    ({"KUBEPAY_API_AUTH": "token"}, "KUBEPAY_API_TOKEN is required"),
    ({"KUBEPAY_API_TOKEN": "x" * 16, "KUBEPAY_API_AUTH": "oauth"},
     "KUBEPAY_API_AUTH must be token, serviceaccount or none, got 'oauth'"),
])
def test_bad_api_settings_name_the_variable(change: dict[str, str], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        load({**BASE, **change}, command="api")


@pytest.mark.parametrize("mode", ["serviceaccount", "none", "ServiceAccount"])
def test_only_token_mode_needs_a_token(mode: str) -> None:
    settings = load({**BASE, "KUBEPAY_API_AUTH": mode}, command="api")
    assert (settings.api_auth, settings.api_token) == (mode.lower(), "")
