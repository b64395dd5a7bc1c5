"""PaymentIntent and PaymentRefund as frozen typed models, parsed once from the API server's JSON.

Handlers parse the body they are given at the edge (`PaymentIntent.parse`, `PaymentRefund.parse`) and
downstream code reads attributes. Status writes are merge patches built by `kube.status_writer` and the
observations in `model.observations`; `raw` keeps the body for what needs the object itself (an owner
reference, a k8s event's involved object).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, ClassVar, Generic, TypeVar

from kubepay.model.phases import Phase, RefundPhase

GROUP = "kubepay.io"
VERSION = "v1alpha1"
PAYMENT_INTENTS = "paymentintents"
PAYMENT_REFUNDS = "paymentrefunds"
PAUSED_ANNOTATION = "kubepay.io/paused"

Conditions = list[dict[str, Any]]


def _int(value: Any) -> int:
    return int(value or 0)


def _opt_int(value: Any) -> int | None:
    return None if value is None else int(value)


def _opt_str(value: Any) -> str | None:
    return str(value) if value else None


def epoch(value: Any) -> float | None:
    """An RFC 3339 time (`...Z`, as Kubernetes and kubepay write them), as seconds since the epoch."""
    if not value:
        return None
    try:
        return datetime.fromisoformat(str(value)).replace(tzinfo=UTC).timestamp()  # C-fast, unlike strptime
    except ValueError:
        return None


def _secret_ref(ref: Mapping[str, Any] | None) -> tuple[str, str] | None:
    ref = ref or {}
    return (str(ref["name"]), str(ref["key"])) if ref.get("name") and ref.get("key") else None


@dataclass(frozen=True)
class Meta:
    namespace: str
    name: str
    uid: str
    generation: int
    deleting: bool
    annotations: Mapping[str, str]

    @classmethod
    def parse(cls, meta: Mapping[str, Any]) -> Meta:
        return cls(
            namespace=str(meta.get("namespace") or ""),
            name=str(meta.get("name") or ""),
            uid=str(meta.get("uid") or ""),
            generation=int(meta.get("generation") or 1),
            deleting=bool(meta.get("deletionTimestamp")),
            annotations=dict(meta.get("annotations") or {}),
        )

    @classmethod
    def named(cls, namespace: str, name: str, uid: str = "") -> Meta:
        """Just enough to find an object (an empty uid: whatever object has the name)."""
        return cls(namespace, name, uid, 1, False, {})

    @property
    def paused(self) -> bool:
        return str(self.annotations.get(PAUSED_ANNOTATION, "")).lower() == "true"

    def about(self) -> dict[str, str]:
        """The fields a log line or a status write needs to name the object."""
        return {"namespace": self.namespace, "name": self.name, "uid": self.uid}


@dataclass(frozen=True)
class Failure:
    code: str | None = None
    decline_code: str | None = None
    message: str | None = None

    @classmethod
    def parse(cls, failure: Mapping[str, Any] | None) -> Failure | None:
        if not failure:
            return None
        return cls(_opt_str(failure.get("code")), _opt_str(failure.get("declineCode")),
                   _opt_str(failure.get("message")))


@dataclass(frozen=True)
class IntentSpec:
    order_id: str
    amount: int
    currency: str
    user_id: str | None = None
    description: str | None = None
    capture_method: str = "automatic"
    metadata: Mapping[str, str] = field(default_factory=dict)
    deletion_policy: str = "Cancel"
    adopt: str | None = None  # stripePaymentIntentId: an intent made outside kubepay to take over
    capture: bool = False
    amount_to_capture: int | None = None
    ttl_seconds_after_finished: int | None = None

    @classmethod
    def parse(cls, spec: Mapping[str, Any]) -> IntentSpec:
        return cls(
            order_id=str(spec.get("orderId") or ""),
            amount=_int(spec.get("amount")),
            currency=str(spec.get("currency") or ""),
            user_id=_opt_str(spec.get("userId")),
            description=_opt_str(spec.get("description")),
            capture_method=str(spec.get("captureMethod") or "automatic"),
            metadata={str(k): str(v) for k, v in (spec.get("metadata") or {}).items()},
            deletion_policy=str(spec.get("deletionPolicy") or "Cancel"),
            adopt=_opt_str(spec.get("stripePaymentIntentId")),
            capture=bool(spec.get("capture")),
            amount_to_capture=_opt_int(spec.get("amountToCapture")),
            ttl_seconds_after_finished=_opt_int(spec.get("ttlSecondsAfterFinished")),
        )


@dataclass(frozen=True)
class StripeIntent:
    """status.stripe of a PaymentIntent: what Stripe last reported."""

    payment_intent_id: str | None = None
    status: str | None = None
    last_event_id: str | None = None
    last_event_created: int = 0
    amount: int | None = None
    payment_method: str | None = None
    last_synced_at: float | None = None  # when kubepay last wrote what Stripe said (webhook or read)

    @classmethod
    def parse(cls, block: Mapping[str, Any] | None) -> StripeIntent:
        block = block or {}
        return cls(
            payment_intent_id=_opt_str(block.get("paymentIntentId")),
            status=_opt_str(block.get("status")),
            last_event_id=_opt_str(block.get("lastEventId")),
            last_event_created=_int(block.get("lastEventCreated")),
            amount=_opt_int(block.get("amount")),
            payment_method=_opt_str(block.get("paymentMethod")),
            last_synced_at=epoch(block.get("lastSyncedAt")),
        )


P = TypeVar("P", Phase, RefundPhase)


@dataclass(frozen=True)
class Progress(Generic[P]):
    """What the status of both kinds has: a phase, the failure, the conditions and the Kafka watermark."""

    phase: P | None = None
    failure: Failure | None = None
    conditions: Conditions = field(default_factory=list)
    published: tuple[str, ...] = ()
    mirrored: str | None = None  # the digest of what the row holds (mirror.downstream)
    mirrored_at: float | None = None  # when the row last changed: the retention clock

    @property
    def final(self) -> bool:
        return self.phase is not None and self.phase.final

    @staticmethod
    def fields(status: Mapping[str, Any], phases: type[P]) -> dict[str, Any]:
        return {"phase": phases(status["phase"]) if status.get("phase") else None,
                "failure": Failure.parse(status.get("failure")),
                "conditions": list(status.get("conditions") or []),
                "published": tuple(status.get("published") or ()),
                "mirrored": _opt_str(status.get("mirrored")),
                "mirrored_at": epoch(status.get("mirroredAt"))}


@dataclass(frozen=True)
class IntentStatus(Progress[Phase]):
    stripe: StripeIntent = StripeIntent()
    payment_id: str | None = None
    client_secret_ref: tuple[str, str] | None = None  # (Secret name, key)
    amount_received: int = 0
    amount_refunded: int | None = None
    observed_generation: int | None = None

    @classmethod
    def parse(cls, status: Mapping[str, Any] | None) -> IntentStatus:
        status = status or {}
        return cls(
            **cls.fields(status, Phase),
            stripe=StripeIntent.parse(status.get("stripe")),
            payment_id=_opt_str(status.get("paymentId")),
            client_secret_ref=_secret_ref(status.get("clientSecretRef")),
            amount_received=_int(status.get("amountReceived")),
            amount_refunded=_opt_int(status.get("amountRefunded")),
            observed_generation=_opt_int(status.get("observedGeneration")),
        )


S = TypeVar("S")
T = TypeVar("T")


@dataclass(frozen=True)
class KubepayObject(Generic[S, T]):
    """One object of either kind: metadata, spec and status parsed, and the body as the API server sent it."""

    meta: Meta
    spec: S
    status: T
    raw: Mapping[str, Any]

    @staticmethod
    def parts(body: Mapping[str, Any], spec: Callable[[Mapping[str, Any]], S],
              status: Callable[[Mapping[str, Any] | None], T]) -> tuple[Meta, S, T, Mapping[str, Any]]:
        return Meta.parse(body.get("metadata") or {}), spec(body.get("spec") or {}), status(body.get("status")), body


@dataclass(frozen=True)
class PaymentIntent(KubepayObject[IntentSpec, IntentStatus]):
    """A PaymentIntent; `stripe_id` is its Stripe PaymentIntent's id once there is one."""

    kind: ClassVar[str] = "PaymentIntent"
    plural: ClassVar[str] = PAYMENT_INTENTS

    @classmethod
    def parse(cls, body: Mapping[str, Any]) -> PaymentIntent:
        return cls(*cls.parts(body, IntentSpec.parse, IntentStatus.parse))

    @property
    def stripe_id(self) -> str | None:
        return self.status.stripe.payment_intent_id

    @property
    def last_synced_at(self) -> float | None:
        return self.status.stripe.last_synced_at


@dataclass(frozen=True)
class RefundSpec:
    payment_intent_name: str
    amount: int | None = None
    reason: str | None = None
    ttl_seconds_after_finished: int | None = None

    @classmethod
    def parse(cls, spec: Mapping[str, Any]) -> RefundSpec:
        return cls(str(spec.get("paymentIntentName") or ""), _opt_int(spec.get("amount")),
                   _opt_str(spec.get("reason")), _opt_int(spec.get("ttlSecondsAfterFinished")))


@dataclass(frozen=True)
class StripeRefund:
    """status.stripe of a PaymentRefund."""

    refund_id: str | None = None
    payment_intent_id: str | None = None
    status: str | None = None
    last_event_id: str | None = None
    last_event_created: int = 0
    last_synced_at: float | None = None

    @classmethod
    def parse(cls, block: Mapping[str, Any] | None) -> StripeRefund:
        block = block or {}
        return cls(_opt_str(block.get("refundId")), _opt_str(block.get("paymentIntentId")),
                   _opt_str(block.get("status")), _opt_str(block.get("lastEventId")),
                   _int(block.get("lastEventCreated")), epoch(block.get("lastSyncedAt")))


@dataclass(frozen=True)
class RefundStatus(Progress[RefundPhase]):
    stripe: StripeRefund = StripeRefund()
    amount: int | None = None

    @classmethod
    def parse(cls, status: Mapping[str, Any] | None) -> RefundStatus:
        status = status or {}
        return cls(**cls.fields(status, RefundPhase), stripe=StripeRefund.parse(status.get("stripe")),
                   amount=_opt_int(status.get("amount")))


@dataclass(frozen=True)
class PaymentRefund(KubepayObject[RefundSpec, RefundStatus]):
    """A PaymentRefund; `stripe_id` is its Stripe refund's id once there is one."""

    kind: ClassVar[str] = "PaymentRefund"
    plural: ClassVar[str] = PAYMENT_REFUNDS

    @classmethod
    def parse(cls, body: Mapping[str, Any]) -> PaymentRefund:
        return cls(*cls.parts(body, RefundSpec.parse, RefundStatus.parse))

    @property
    def stripe_id(self) -> str | None:
        return self.status.stripe.refund_id

    @property
    def last_synced_at(self) -> float | None:
        return self.status.stripe.last_synced_at


Resource = PaymentIntent | PaymentRefund
