from kubepay.config import Topics
from kubepay.mirror.messages import Payment, ce_id, due, messages_for
from kubepay.model.phases import Phase

PAYMENT = Payment(uid="u1", namespace="shop", name="order-1", payment_id="p1", order_id="1111", user_id="u",
                  amount_minor=1999, currency="usd", provider_id="pi_1", payment_method="pm_1",
                  failure_code="card_declined", failure_reason="declined", observed_at=1_700_000_000)


def test_each_phase_publishes_what_is_missing_in_order() -> None:
    assert due(Phase.PENDING, []) == ["initiated"]
    assert due(Phase.SUCCEEDED, []) == ["initiated", "succeeded"]
    assert due(Phase.SUCCEEDED, ["initiated"]) == ["succeeded"]
    assert due(Phase.FAILED, ["initiated", "failed"]) == []


def test_succeeded_message_and_order_status() -> None:
    payment, order = messages_for("succeeded", PAYMENT, Topics(), "kubepay")
    assert (payment.topic, payment.key) == ("payments.succeeded", "1111")
    assert payment.value["amount"] == "19.99"
    assert payment.value["amount_minor"] == 1999
    headers = dict(payment.headers)
    assert headers["ce_id"].decode() == ce_id("u1", "succeeded", "io.kubepay.payment.succeeded")
    assert headers["ce_time"] == b"2023-11-14T22:13:20Z"
    assert (order.topic, order.value["status"]) == ("orders.status", "COMPLETED")
    assert dict(order.headers)["ce_id"] != headers["ce_id"]


def test_ce_id_is_deterministic_per_resource_and_milestone() -> None:
    first = messages_for("failed", PAYMENT, Topics(), "kubepay")
    again = messages_for("failed", PAYMENT, Topics(), "kubepay")
    assert [dict(m.headers)["ce_id"] for m in first] == [dict(m.headers)["ce_id"] for m in again]
    assert first[0].value["code"] == "card_declined"
    assert first[1].value["status"] == "CANCELLED"
