"""What platform engineers do with kubectl works: the real, pinned kubectl binary against the tenant's cluster
(tests/kubectl.py), with the tenant's kubeconfig."""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator
from pathlib import Path

import pytest_asyncio
import yaml

from kubepay_sandbox.stack import Sandbox
from kubepay_sandbox.stripe_fake import TEST_CARDS
from tests.chart.tools import ensure_tools
from tests.conftest import Running
from tests.helpers import Kube, confirm_and_notify, pay
from tests.kubectl import Kubectl

REPO = Path(__file__).resolve().parents[2]
EXAMPLE_INTENT = REPO / "examples" / "paymentintent.yaml"
EXAMPLE_REFUND = REPO / "examples" / "paymentrefund.yaml"
PI_COLUMNS = ["NAME", "ORDER", "AMOUNT", "CURRENCY", "PHASE", "READY", "SYNCED", "STRIPE ID", "AGE"]
PI_WIDE_COLUMNS = [*PI_COLUMNS, "STRIPE AMOUNT", "RECEIVED", "REFUNDED", "MESSAGE"]
PR_COLUMNS = ["NAME", "PAYMENT", "AMOUNT", "REASON", "PHASE", "STRIPE ID", "AGE"]


@pytest_asyncio.fixture()
async def kubectl(running: Running, tmp_path: Path) -> AsyncIterator[Kubectl]:
    tools = await asyncio.to_thread(ensure_tools)  # may download once, under a file lock: off the event loop
    yield Kubectl(tools["kubectl"], running.tenant.env["KUBECONFIG"], running.namespace, tmp_path / "kube-cache")


async def test_platform_engineer_pays_and_refunds_with_kubectl(
        sandbox: Sandbox, running: Running, kube: Kube, kubectl: Kubectl) -> None:
    ns = running.namespace

    # (1) Apply the example as it is, with kubectl's default (strict) validation.
    applied = (await kubectl("apply", "-f", str(EXAMPLE_INTENT))).ok()
    assert applied.stdout.strip() == "paymentintent.kubepay.io/order-1111 created", applied.stdout
    assert "Warning" not in applied.stderr, applied.stderr

    # (2) The printer columns, once the controller has made the Stripe intent.
    header, row = await kubectl.row_until("pi", "order-1111", {"PHASE": "Pending", "STRIPE ID": "pi_*"})
    assert header == PI_COLUMNS
    assert (row["ORDER"], row["AMOUNT"], row["CURRENCY"], row["READY"], row["SYNCED"]) == (
        "1111", "1200", "usd", "False", "True")
    assert re.fullmatch(r"pi_[A-Za-z0-9_]+", row["STRIPE ID"]), row
    assert re.fullmatch(r"\d+[smhd]", row["AGE"]), row
    intent_id = row["STRIPE ID"]
    pi = await kube.get_pi(ns, "order-1111")
    assert pi is not None and pi["status"]["stripe"]["paymentIntentId"] == intent_id

    # (3) kubectl wait, started before the customer pays: it must see the condition change on its watch.
    waiting = asyncio.create_task(kubectl("wait", "pi/order-1111", "--for=condition=Ready", "--timeout=30s",
                                          timeout=45.0))
    await asyncio.sleep(1.0)
    assert not waiting.done(), f"kubectl wait returned before the payment: {waiting.result()}"
    await confirm_and_notify(sandbox.stripe_client(), intent_id, TEST_CARDS["success"],
                             running.tenant.webhook_url, running.tenant.webhook_secret)
    waited = (await waiting).ok()
    assert waited.stdout.strip() == "paymentintent.kubepay.io/order-1111 condition met", waited
    # ... and once more when the condition already holds.
    again = (await kubectl("wait", "pi/order-1111", "--for=condition=Ready", "--timeout=30s")).ok()
    assert again.stdout.strip() == "paymentintent.kubepay.io/order-1111 condition met", again

    # (4) jsonpath, and the wide columns: what Stripe charges and collected, the Ready message.
    phase = (await kubectl("get", "pi", "order-1111", "-o", "jsonpath={.status.phase}")).ok()
    assert phase.stdout == "Succeeded", phase
    header, row = await kubectl.row_until("pi", "order-1111", {"READY": "True"}, wide=True)
    assert header == PI_WIDE_COLUMNS
    assert (row["STRIPE AMOUNT"], row["RECEIVED"], row["REFUNDED"], row["MESSAGE"]) == (
        "1200", "1200", "0", "Stripe reports succeeded."), row

    # (4b) A spec change kubepay takes note of (generation 2): kubectl wait still sees Ready at once, since
    # every condition carries the generation it reflects.
    (await kubectl("patch", "pi", "order-1111", "--type", "merge", "-p",
                   '{"spec":{"description":"Order 1111, renamed"}}')).ok()
    await kube.wait_pi(ns, "order-1111", lambda o: o["status"].get("observedGeneration") == 2, what="generation 2")
    again = (await kubectl("wait", "pi/order-1111", "--for=condition=Ready", "--timeout=15s", timeout=30.0)).ok()
    assert again.stdout.strip() == "paymentintent.kubepay.io/order-1111 condition met", again

    # (5) The controller's events about this payment, and only about it.
    events_header, events = await kubectl.table(
        "events", "--field-selector", "involvedObject.name=order-1111")
    assert events_header == ["LAST SEEN", "TYPE", "REASON", "OBJECT", "MESSAGE"], events_header
    assert events, "no events for order-1111"
    by_reason = {row[2]: row for row in events}
    assert {"StripeIntentCreated", "Succeeded"} <= set(by_reason), events
    assert all(row[3] == "paymentintent/order-1111" for row in events), events
    assert by_reason["Succeeded"][1] == "Normal", events

    # (6) A refund, with its own printer columns.
    refund = yaml.safe_load(EXAMPLE_REFUND.read_text())
    assert refund["spec"]["paymentIntentName"] == "order-1111"
    (await kubectl("apply", "-f", str(EXAMPLE_REFUND))).ok()
    header, row = await kubectl.row_until("pr", refund["metadata"]["name"], {"PHASE": "Succeeded"})
    assert header == PR_COLUMNS
    assert (row["PAYMENT"], row["AMOUNT"], row["REASON"]) == (
        "order-1111", str(refund["spec"]["amount"]), refund["spec"]["reason"])
    assert re.fullmatch(r"re_[A-Za-z0-9_]+", row["STRIPE ID"]), row
    parent = (await kubectl("get", "pi", "order-1111", "-o",
                            "jsonpath={.status.phase} {.status.amountRefunded}")).ok()
    assert parent.stdout == f"PartiallyRefunded {refund['spec']['amount']}", parent


async def test_kubectl_apply_of_an_invalid_payment_names_the_field(running: Running, kubectl: Kubectl) -> None:
    invalid = yaml.safe_load(EXAMPLE_INTENT.read_text())
    invalid["metadata"]["name"] = "order-zero"
    invalid["spec"]["amount"] = 0

    result = await kubectl("apply", "-f", "-", stdin=yaml.safe_dump(invalid))

    assert result.returncode != 0, result
    assert result.stderr.startswith('The PaymentIntent "order-zero" is invalid: spec.amount: Invalid value: 0: '), (
        result.stderr)
    assert "greater than or equal to 1" in result.stderr, result.stderr
    listing = (await kubectl("get", "pi", "order-zero", "--ignore-not-found")).ok()
    assert listing.stdout == "", listing

    # kubectl's default --validate=strict: the server refuses a field the schema does not know (a typo).
    typo = yaml.safe_load(EXAMPLE_INTENT.read_text())
    typo["metadata"]["name"] = "order-typo"
    typo["spec"]["ammount"] = typo["spec"].pop("amount")
    result = await kubectl("apply", "-f", "-", stdin=yaml.safe_dump(typo))
    assert result.returncode != 0, result
    assert 'unknown field "spec.ammount"' in result.stderr, result.stderr
    # ... and --validate=false leaves it to the schema: the required amount is missing.
    result = await kubectl("apply", "--validate=false", "-f", "-", stdin=yaml.safe_dump(typo))
    assert result.returncode != 0, result
    assert "spec.amount: Required value" in result.stderr, result.stderr


def test_the_invalid_example_is_invalid_only_for_its_amount() -> None:
    """Guards the test above: the only thing wrong with the document it applies is the amount."""
    from kubepay_sandbox.kube_emulator import validate_custom_resource

    crd = yaml.safe_load((REPO / "crds" / "paymentintents.kubepay.io.yaml").read_text())
    invalid = yaml.safe_load(EXAMPLE_INTENT.read_text())
    invalid["spec"]["amount"] = 0
    [message] = validate_custom_resource(crd, invalid)
    assert message.startswith("spec.amount: "), message


async def test_kubectl_shows_refusals_and_waits_for_failure(
        sandbox: Sandbox, running: Running, kube: Kube, kubectl: Kubectl) -> None:
    """A payment that can no longer succeed says so (Failed=True), so `kubectl wait` need not time out."""
    refused = yaml.safe_load(EXAMPLE_INTENT.read_text())
    refused["metadata"]["name"] = "order-krona"
    refused["spec"].update({"orderId": "1112", "currency": "isk", "amount": 550})  # Stripe wants whole krónur
    (await kubectl("apply", "-f", "-", stdin=yaml.safe_dump(refused))).ok()
    waited = (await kubectl("wait", "pi/order-krona", "--for=condition=Failed", "--timeout=30s", timeout=45.0)).ok()
    assert waited.stdout.strip() == "paymentintent.kubepay.io/order-krona condition met", waited
    _, row = await kubectl.row_until("pi", "order-krona", {"PHASE": "Failed"}, wide=True)
    assert (row["READY"], row["SYNCED"], row["STRIPE ID"], row["STRIPE AMOUNT"]) == ("False", "False", "", ""), row
    assert row["MESSAGE"].startswith("Stripe would refuse the spec, so it was not sent: spec.amount: must be a "
                                     "multiple of 100 for ISK"), row
    # A later spec change does not retry it: still Failed at the new generation, so the wait still returns.
    (await kubectl("patch", "pi", "order-krona", "--type", "merge", "-p", '{"spec":{"description":"later"}}')).ok()
    await kube.wait_pi(running.namespace, "order-krona", lambda o: o["status"].get("observedGeneration") == 2,
                       what="generation 2")
    (await kubectl("wait", "pi/order-krona", "--for=condition=Failed", "--timeout=15s", timeout=30.0)).ok()

    # A refund kubepay refuses still shows the amount asked for.
    await pay(sandbox.stripe_client(), kube, running, "order-paid", {"orderId": "1113", "amount": 1200,
                                                                      "currency": "usd"})
    too_much = yaml.safe_load(EXAMPLE_REFUND.read_text())
    too_much["metadata"]["name"] = "too-much"
    too_much["spec"].update({"paymentIntentName": "order-paid", "amount": 5000})
    (await kubectl("apply", "-f", "-", stdin=yaml.safe_dump(too_much))).ok()
    (await kubectl("wait", "pr/too-much", "--for=condition=Failed", "--timeout=30s", timeout=45.0)).ok()
    header, row = await kubectl.row_until("pr", "too-much", {"PHASE": "Failed"})
    assert header == PR_COLUMNS
    assert (row["PAYMENT"], row["AMOUNT"], row["STRIPE ID"]) == ("order-paid", "5000", ""), row
