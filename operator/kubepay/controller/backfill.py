"""Catch-up at start: replay Stripe events that never arrived as webhooks (Stripe gives up after 3 days)."""

from __future__ import annotations

import logging
import time

from kubepay.controller.runtime import Runtime
from kubepay.retry import RETRYABLE
from kubepay.stripe import events as stripe_events
from kubepay.stripe.gateway import StripeRejected

log = logging.getLogger(__name__)

# Stripe keeps events for 30 days; look back as far as the newest ledger entry (minus clock slack), or 3 days.
DEFAULT_LOOKBACK = 3 * 24 * 3600
SLACK = 300


async def replay_missed_events(rt: Runtime) -> int:
    """Apply every handled event about our resources, created since the ledger's newest entry, that it lacks."""
    newest = await rt.store.ledger.latest_created()
    since = (newest - SLACK) if newest else int(time.time()) - DEFAULT_LOOKBACK
    applied = 0
    try:
        async for event in rt.gateway.events_since(since, stripe_events.HANDLED):
            if not await stripe_events.concerns(event, rt.store, rt.settings.namespace):
                continue
            outcome = await stripe_events.handle(event, rt.store, rt.kube, rt.settings.namespace)
            applied += outcome == "applied"
    except (StripeRejected, *RETRYABLE) as exc:
        log.warning("backfill from Stripe's Events API stopped early: %s", exc)
    log.info("backfill from Stripe's Events API applied %d missed event(s)", applied)
    return applied
