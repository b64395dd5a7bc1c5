"""Prometheus metrics of every kubepay process. Label values come from closed sets (kinds, phases, outcomes,
operations, topics, routes), never from payments, so series stay bounded."""

from __future__ import annotations

from collections.abc import Iterable

from prometheus_client import Counter, Gauge, Histogram, start_http_server

from kubepay import __version__
from kubepay.stripe.api_version import STRIPE_API_VERSION

# Stripe calls and webhook handling take tens of milliseconds to a few seconds (a 30 s timeout at worst).
_SECONDS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)

BUILD_INFO = Gauge("kubepay_build_info", "Always 1: the running kubepay version and the Stripe API version it pins.",
                   ["version", "stripe_api_version"])

# The controller
RECONCILE_DURATION = Histogram(
    "kubepay_reconcile_duration_seconds",
    "Time to handle a resource once, by kind and outcome: done (waits for its next change), requeued (read again "
    "later), retry (a dependency failed) or error (unexpected; see the log).", ["kind", "outcome"], buckets=_SECONDS)
TRANSITIONS = Counter("kubepay_phase_transitions_total", "PaymentIntent phase transitions seen.", ["phase"])
CONTROLLER_ACTIVE = Gauge("kubepay_controller_active",
                          "1 on the controller replica that works, 0 on a standby (or while starting).")
PAYMENTS_STUCK = Gauge(
    "kubepay_payments_stuck",
    "PaymentIntents in a non-final phase for longer than KUBEPAY_STUCK_SECONDS since their creation, by phase.",
    ["phase"])
OLDEST_UNPUBLISHED = Gauge(
    "kubepay_oldest_unpublished_milestone_age_seconds",
    "Seconds since the first failed attempt of the oldest message Kafka has not yet acknowledged (0: none waits).")
LEDGER_UNPROCESSED = Gauge(
    "kubepay_ledger_unprocessed_events",
    "Ledgered Stripe events older than a minute and not processed (a crash or an outage left them); "
    "Stripe's redelivery or `kubepay replay-events` applies them.")
REFUSED_WRITES = Counter(
    "kubepay_refused_writes_total",
    "Writes refused for good (left Synced=False, not retried), by target: kubernetes, postgres or kafka.", ["target"]
)
RETAINED_AWAY = Counter(
    "kubepay_retained_away_total",
    "Finished resources deleted by retention (their rows and history stay), by kind.", ["kind"]
)

# Stripe
STRIPE_REQUESTS = Counter(
    "kubepay_stripe_requests_total",
    "Stripe API calls by operation and outcome: ok, rate_limited (429), unavailable (network, 5xx) or rejected.",
    ["operation", "outcome"])
STRIPE_REQUEST_DURATION = Histogram(
    "kubepay_stripe_request_duration_seconds", "Duration of one Stripe API call, by operation and outcome.",
    ["operation", "outcome"], buckets=_SECONDS)
STRIPE_LIMITER_WAITING = Gauge(
    "kubepay_stripe_limiter_waiting",
    "Stripe calls waiting for the client-side rate limiter, by priority (urgent, background).", ["priority"])

# Kafka
KAFKA_MESSAGES = Counter("kubepay_kafka_messages_total", "Messages published to Kafka by topic.", ["topic"])
KAFKA_PUBLISH_FAILURES = Counter(
    "kubepay_kafka_publish_failures_total",
    "Messages Kafka did not acknowledge, by topic and reason: unavailable (retried) or rejected (for good).",
    ["topic", "reason"])
KAFKA_PUBLISH_RETRIES = Counter(
    "kubepay_kafka_publish_retries_total", "Messages sent again after an attempt Kafka did not acknowledge.",
    ["topic"])

# The receiver and the API
WEBHOOK_EVENTS = Counter(
    "kubepay_webhook_events_total", "Stripe webhook deliveries by event type and outcome.", ["type", "outcome"]
)
WEBHOOK_DURATION = Histogram(
    "kubepay_webhook_duration_seconds", "Time to handle one webhook delivery, by HTTP status answered.", ["status"],
    buckets=_SECONDS)
API_REQUEST_DURATION = Histogram(
    "kubepay_api_request_duration_seconds",
    "Payments API requests by method, route (the path pattern) and HTTP status.", ["method", "route", "status"],
    buckets=_SECONDS)


def preset(topics: Iterable[str]) -> None:
    """The controller's series an alert or a panel reads exist from the start, at 0, so rate() sees the first
    failure and a scrape shows every name."""
    for topic in topics:
        KAFKA_MESSAGES.labels(topic)
        KAFKA_PUBLISH_RETRIES.labels(topic)
        for reason in ("unavailable", "rejected"):
            KAFKA_PUBLISH_FAILURES.labels(topic, reason)
    for priority in ("urgent", "background"):
        STRIPE_LIMITER_WAITING.labels(priority)
    for target in ("kubernetes", "postgres", "kafka"):
        REFUSED_WRITES.labels(target)
    for kind in ("PaymentIntent", "PaymentRefund"):
        RETAINED_AWAY.labels(kind)


def serve(port: int) -> None:
    """`/metrics` on its own port (0: none), apart from any port the internet reaches; a thread serves it, so a
    scrape answers even while the event loop is busy."""
    BUILD_INFO.labels(__version__, STRIPE_API_VERSION).set(1)
    if port:
        start_http_server(port)
