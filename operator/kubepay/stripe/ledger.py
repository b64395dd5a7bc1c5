"""The `payment_events` ledger: every Stripe event received, once, with the outcome of applying it."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from kubepay.postgres import Database

# One round trip for a delivery and for a redelivery alike: the subquery reads the snapshot from before the
# INSERT, so it finds no row for a new event and the existing row's `processed` for a redelivery.
_RECORD_EVENT = """
WITH inserted AS (
    INSERT INTO payment_events (stripe_event_id, type, provider_payment_id, stripe_created, livemode, payload)
    VALUES ($1, $2, $3, $4, $5, $6::jsonb)
    ON CONFLICT (stripe_event_id) DO NOTHING
    RETURNING id
)
SELECT EXISTS (SELECT FROM inserted) AS new,
       (SELECT processed FROM payment_events WHERE stripe_event_id = $1) AS processed
"""


class Ledger:
    """An event is recorded before it is applied and marked processed only after: a crash replays it."""

    def __init__(self, db: Database) -> None:
        self._db = db

    async def unprocessed(self, older_than_seconds: float) -> int:
        """Events received more than `older_than_seconds` ago and not processed: a crash or an outage left them,
        and Stripe's retries or `kubepay replay-events` apply them (newer ones may be in flight)."""
        rows = await self._db.fetch(
            "SELECT count(*) FROM payment_events WHERE NOT processed "
            "AND received_at < now() - make_interval(secs => $1)", older_than_seconds)
        return int(rows[0][0])

    async def latest_created(self) -> int | None:
        rows = await self._db.fetch("SELECT max(stripe_created) FROM payment_events")
        return int(rows[0][0]) if rows and rows[0][0] is not None else None

    async def record(self, event: dict[str, Any], provider_payment_id: str | None) -> bool:
        """Insert the event into the ledger; whether to apply it: False if it was there and processed already
        (a redelivery), True if new or left unprocessed (a crash, or a concurrent delivery still applying it)."""
        rows = await self._db.fetch(
            _RECORD_EVENT, event["id"], event["type"], provider_payment_id, int(event.get("created") or 0),
            bool(event.get("livemode", False)), json.dumps(event),
        )
        return bool(rows[0]["new"]) or not rows[0]["processed"]

    async def record_invalid(self, event_id: str, event_type: str, error: str, body: str) -> None:
        """Ledger a signed event that failed validation: processed, outcome `invalid`, raw body kept as text."""
        await self._db.fetch(
            "INSERT INTO payment_events (stripe_event_id, type, stripe_created, livemode, body, error, processed, "
            "processed_at, outcome) VALUES ($1, $2, 0, false, $3, $4, true, now(), 'invalid') "
            "ON CONFLICT (stripe_event_id) DO NOTHING",
            event_id, event_type, body.replace("\x00", ""), error,
        )

    async def unapplied(self, event_ids: Sequence[str] = ()) -> list[tuple[str, str]]:
        """(event id, body) of ledgered events not applied: invalid ones, or ones a crash left unprocessed."""
        rows = await self._db.fetch(
            "SELECT stripe_event_id, COALESCE(body, payload::text) AS body FROM payment_events "
            "WHERE (outcome = 'invalid' OR NOT processed) AND (cardinality($1::text[]) = 0 "
            "OR stripe_event_id = ANY($1::text[])) ORDER BY id",
            list(event_ids),
        )
        return [(row["stripe_event_id"], row["body"]) for row in rows]

    async def reopen(self, event: dict[str, Any], provider_payment_id: str | None) -> None:
        """Put a replayed event back as received and unprocessed, now with its parsed payload."""
        await self._db.fetch(
            "UPDATE payment_events SET payload = $2::jsonb, body = NULL, error = NULL, processed = false, "
            "outcome = NULL, type = $3, stripe_created = $4, livemode = $5, provider_payment_id = $6 "
            "WHERE stripe_event_id = $1",
            event["id"], json.dumps(event), event["type"], int(event["created"]), bool(event.get("livemode")),
            provider_payment_id,
        )

    async def mark_processed(self, event_id: str, outcome: str) -> None:
        """Record the outcome; `applied` is never overwritten (a concurrent duplicate sees `stale`)."""
        await self._db.fetch(
            "UPDATE payment_events SET processed = true, processed_at = now(), outcome = $2 "
            "WHERE stripe_event_id = $1 AND outcome IS DISTINCT FROM 'applied'",
            event_id, outcome,
        )
