"""Prometheus metrics shared by the controller and the receiver."""

from __future__ import annotations

from prometheus_client import Counter, Histogram

STRIPE_REQUESTS = Counter(
    "kubepay_stripe_requests_total", "Stripe API calls by operation and outcome.", ["operation", "outcome"]
)
WEBHOOK_EVENTS = Counter(
    "kubepay_webhook_events_total", "Stripe webhook deliveries by event type and outcome.", ["type", "outcome"]
)
KAFKA_MESSAGES = Counter("kubepay_kafka_messages_total", "Messages published to Kafka by topic.", ["topic"])
TRANSITIONS = Counter("kubepay_phase_transitions_total", "PaymentIntent phase transitions seen.", ["phase"])
WEBHOOK_LATENCY = Histogram("kubepay_webhook_seconds", "Time to handle one webhook delivery.")
REFUSED_WRITES = Counter(
    "kubepay_refused_writes_total",
    "Writes refused for good (left Synced=False, not retried), by target: kubernetes, postgres or kafka.", ["target"]
)
RETAINED_AWAY = Counter(
    "kubepay_retained_away_total",
    "Finished resources deleted by retention (their rows and history stay), by kind.", ["kind"]
)
