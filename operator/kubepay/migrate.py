"""Apply the alembic migrations (the Helm hook Job's `kubepay migrate`, or at start-up).

alembic and SQLAlchemy are imported only when migrations run: every long-running process imports this module,
and they would cost each one tens of MiB it never uses (KUBEPAY_MIGRATE_ON_START is off by default).
"""

from __future__ import annotations

import os
from pathlib import Path


def migrations_dir() -> Path:
    """KUBEPAY_MIGRATIONS_DIR in images; the checkout's migrations/ folder otherwise."""
    configured = os.environ.get("KUBEPAY_MIGRATIONS_DIR")
    if configured:
        return Path(configured)
    return Path(__file__).resolve().parents[2] / "migrations"


def async_url(database_url: str) -> str:
    scheme, rest = database_url.split("://", 1)
    return f"postgresql+asyncpg://{rest}" if scheme in ("postgres", "postgresql") else database_url


def upgrade(database_url: str, revision: str = "head") -> None:
    """Idempotent: a database already at `revision` is left as it is. Blocking; run it off the event loop."""
    from alembic import command
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", str(migrations_dir()))
    cfg.set_main_option("sqlalchemy.url", async_url(database_url).replace("%", "%%"))
    command.upgrade(cfg, revision)
