"""The one clock that leases, heartbeats and sweeps are measured on: the database's.

Worker hosts' clocks may be minutes apart (a drifting NTP, a VM resumed from a snapshot).
A lease written on one host's clock and judged on another's is handed over while it is
healthy, or kept long after its worker died. So every time the queue reasons about
(``heartbeat_at``, ``enqueued_at``, ``started_at``, ``finished_at``) is the database
server's time: :func:`db_now` in the statement that writes it, :func:`read_now` where Python
needs the value (the sweeper's cut-offs, ``created_at``). A host's own clock is used only
for display and for ``--since``.
"""

from __future__ import annotations

from datetime import datetime, timezone

import sqlalchemy as sa
from gradq.service.store.encoding import to_utc
from sqlalchemy.orm import Session

# SQLite's CURRENT_TIMESTAMP has whole seconds; strftime's %f gives milliseconds, padded
# here to the microsecond text that SQLAlchemy writes, so stored times compare as strings.
_SQLITE_NOW = "%Y-%m-%d %H:%M:%f000"


def db_now(s: Session) -> sa.ColumnElement[datetime]:
    """The database server's current time, as an SQL expression for ``s``'s dialect."""
    if s.get_bind().dialect.name == "sqlite":
        return sa.type_coerce(sa.func.strftime(_SQLITE_NOW, "now"), sa.DateTime())
    return sa.func.now()


def read_now(s: Session) -> datetime:
    """The database server's current time (aware, UTC), read in ``s``'s transaction.

    SQLite is embedded: its clock is this process's, which Python reads to the microsecond
    (SQLite's own ``now`` has milliseconds), without a query."""
    if s.get_bind().dialect.name == "sqlite":
        return datetime.now(timezone.utc)
    now = to_utc(s.execute(sa.select(db_now(s))).scalar_one())
    assert now is not None
    return now
