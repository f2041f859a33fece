"""How values go into job rows and come out: ids, JSON documents, UTC timestamps."""

from __future__ import annotations

import math
import uuid
from datetime import datetime, timezone
from typing import Any


def new_id() -> str:
    """A new job id: 32 hex digits."""
    return uuid.uuid4().hex


def json_safe(obj: Any) -> Any:
    """JSON has no NaN or infinity: a diverged loss in a progress or result document is
    stored (and printed) as null; the metrics table keeps the exact value."""
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if isinstance(obj, dict):
        return {k: json_safe(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [json_safe(v) for v in obj]
    return obj


def dumps(obj: Any) -> str:
    # spec pulls in YAML and NumPy: imported here, so the read commands never load them
    from gradq.service.spec import canonical_json

    return canonical_json(json_safe(obj))



def to_utc(dt: datetime | None) -> datetime | None:
    """SQLite returns naive datetimes: they are UTC."""
    if dt is None:
        return None
    return dt if dt.tzinfo else dt.replace(tzinfo=timezone.utc)
