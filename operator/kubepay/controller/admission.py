"""Validating admission: refuse refunds, amounts and amount changes Stripe would refuse, before they are stored.

The controller checks the same rules again, since admission can be bypassed or be down
(the chart's failurePolicy is Ignore by default). Importing this module registers the handlers, so
`kubepay operator` imports it only when KUBEPAY_ADMISSION_PORT is set: kopf refuses to start with
admission handlers and no server.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import kopf

from kubepay.config import Settings
from kubepay.controller.intents import AMOUNT_UPDATABLE, describe, spec_problems
from kubepay.controller.runtime import Runtime
from kubepay.kube.client import GROUP, PAYMENT_INTENTS, VERSION, KubeUnavailable, NotFound
from kubepay.model.refunds import PAYMENT_REFUNDS, RefundRefused, refund_amount


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


@kopf.on.validate(GROUP, VERSION, PAYMENT_REFUNDS, id="validate-paymentrefund", operations=["CREATE"])
async def validate_refund(spec: kopf.Spec, namespace: str | None, memo: kopf.Memo, **_: Any) -> None:
    rt: Runtime = memo["runtime"]
    try:
        parent = await rt.kube.get_custom(PAYMENT_INTENTS, str(namespace), spec["paymentIntentName"])
    except NotFound:
        parent = None
    except KubeUnavailable as exc:
        raise kopf.AdmissionError(f"cannot check the PaymentIntent now: {exc}", code=503) from None
    try:
        refund_amount(dict(spec), parent)
    except RefundRefused as exc:
        raise kopf.AdmissionError(str(exc), code=422) from None


@kopf.on.validate(GROUP, VERSION, PAYMENT_INTENTS, id="validate-paymentintent", operations=["CREATE", "UPDATE"])
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
    stripe_status = (((old or {}).get("status") or {}).get("stripe") or {}).get("status")
    if stripe_status and stripe_status not in AMOUNT_UPDATABLE:
        raise kopf.AdmissionError(
            f"spec.amount can no longer change: the Stripe payment is {stripe_status}", code=422)
