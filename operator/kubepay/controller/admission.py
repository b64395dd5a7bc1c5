"""Validating admission: refuse refunds, amounts and amount changes Stripe would refuse, before they are stored.

The controller checks the same rules again, since admission can be bypassed or be down
(the chart's failurePolicy is Ignore by default). `registry.register_admission` registers these only
when KUBEPAY_ADMISSION_PORT is set: kopf refuses to start with admission handlers and no server.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import kopf

from kubepay.config import Settings
from kubepay.controller.intents import AMOUNT_UPDATABLE, describe, spec_problems
from kubepay.controller.runtime import Runtime
from kubepay.kube.client import KubeUnavailable, NotFound
from kubepay.model.refunds import RefundRefused, refund_amount
from kubepay.model.resources import PAYMENT_INTENTS, PaymentIntent, RefundSpec


def configure_server(settings: kopf.OperatorSettings, config: Settings) -> None:
    """Serve the admission endpoints over HTTPS with the mounted certificate (the chart provides it)."""
    if not config.admission_port:
        return
    cert_dir = Path(config.admission_cert_dir)
    settings.admission.server = kopf.WebhookServer(
        addr="0.0.0.0", port=config.admission_port,
        certfile=str(cert_dir / "tls.crt"), pkeyfile=str(cert_dir / "tls.key"),
    )
    settings.admission.managed = None


async def validate_refund(spec: kopf.Spec, namespace: str | None, memo: kopf.Memo, **_: Any) -> None:
    rt: Runtime = memo["runtime"]
    refund = RefundSpec.parse(spec)
    try:
        parent = PaymentIntent.parse(await rt.kube.get_custom(PAYMENT_INTENTS, str(namespace),
                                                              refund.payment_intent_name))
    except NotFound:
        parent = None
    except KubeUnavailable as exc:
        raise kopf.AdmissionError(f"cannot check the PaymentIntent now: {exc}", code=503) from None
    try:
        refund_amount(refund, parent)
    except RefundRefused as exc:
        raise kopf.AdmissionError(str(exc), code=422) from None


async def validate_intent(spec: kopf.Spec, **kwargs: Any) -> None:
    """Amounts Stripe would refuse for the currency; amount changes Stripe no longer allows.

    An update is judged on the fields it changes only: removing a finalizer must always pass.
    """
    old = kwargs.get("old")  # the object before an update (AdmissionReview's oldObject)
    old_spec = (old or {}).get("spec") or {}
    problems = {field: problem for field, problem in spec_problems(spec).items()
                if old is None or spec.get(field.removeprefix("spec.")) != old_spec.get(field.removeprefix("spec."))}
    if problems:
        raise kopf.AdmissionError(describe(problems), code=422)
    if old_spec.get("amount") in (None, spec.get("amount")):
        return
    stripe_status = PaymentIntent.parse(old or {}).status.stripe.status
    if stripe_status and stripe_status not in AMOUNT_UPDATABLE:
        raise kopf.AdmissionError(
            f"spec.amount can no longer change: the Stripe payment is {stripe_status}", code=422)
