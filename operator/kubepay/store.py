"""kubepay's PostgreSQL: one pool, the mirror's rows and the Stripe event ledger on it."""

from __future__ import annotations

from kubepay.mirror.rows import Rows
from kubepay.postgres import Database
from kubepay.stripe.ledger import Ledger


class Store:
    def __init__(self, db: Database) -> None:
        self.db = db
        self.rows = Rows(db)
        self.ledger = Ledger(db)

    @classmethod
    async def connect(cls, dsn: str) -> Store:
        return cls(await Database.connect(dsn))

    async def ping(self) -> None:
        await self.db.ping()

    async def close(self) -> None:
        await self.db.close()
