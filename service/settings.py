"""Settings from the environment (docs/settings.md), and the one function that hides URL
passwords."""

from __future__ import annotations

import math
import os
import re
from dataclasses import dataclass
from pathlib import Path

from gradq.service.errors import SettingsError


@dataclass(frozen=True)
class Settings:
    """Everything gradq reads from the environment, resolved once."""

    home: Path
    database_url: str
    broker_url: str
    device: str
    lease_s: float
    max_attempts: int
    max_spec_bytes: int
    max_dataset_bytes: int
    max_replicas: int
    keep_checkpoints: bool = False
    checkpoint_interval_s: float = 10.0
    visibility_s: float | None = None  # None: max(1 day, 10 leases)
    worker_events: bool = True

    @property
    def broker_visibility_s(self) -> float:
        """Redis redelivers a message not acknowledged for this long (docs/queue.md)."""
        return self.visibility_s if self.visibility_s is not None else max(86400.0,
                                                                            10 * self.lease_s)

    @property
    def max_time_limit_s(self) -> float:
        """The longest ``training.time_limit_s`` that ``gradq submit`` accepts: 90% of the
        visibility timeout, which leaves room for data loading, evaluation and the writes."""
        return 0.9 * self.broker_visibility_s

    @property
    def cache_dir(self) -> Path:
        """Datasets kept on disk by content hash: stored ones fetched, built-ins made once."""
        return self.home / "cache"

    @classmethod
    def from_env(cls) -> Settings:
        # an empty variable means unset, as for the numbers below
        home = Path(os.environ.get("GRADQ_HOME") or "~/.gradq").expanduser()
        device = os.environ.get("GRADQ_DEVICE", "auto")
        if device not in ("auto", "cuda", "cpu"):
            raise SettingsError(f"GRADQ_DEVICE: {device!r} is not one of auto, cuda, cpu")
        return cls(
            home=home,
            database_url=os.environ.get("GRADQ_DATABASE_URL") or f"sqlite:///{home / 'gradq.db'}",
            broker_url=os.environ.get("GRADQ_BROKER_URL") or "redis://localhost:6379/0",
            device=device,
            lease_s=_number("GRADQ_LEASE_S", 60.0, float, 0.5),
            max_attempts=_number("GRADQ_MAX_ATTEMPTS", 3, int, 1),
            max_spec_bytes=_number("GRADQ_MAX_SPEC_BYTES", 1 << 20, int, 1),
            max_dataset_bytes=_number("GRADQ_MAX_DATASET_BYTES", 256 << 20, int, 1),
            max_replicas=_number("GRADQ_MAX_REPLICAS", 64, int, 1),
            keep_checkpoints=_flag("GRADQ_KEEP_CHECKPOINTS"),
            checkpoint_interval_s=_number("GRADQ_CHECKPOINT_INTERVAL_S", 10.0, float, 0.0),
            visibility_s=(_number("GRADQ_BROKER_VISIBILITY_S", 86400.0, float, 60.0)
                          if os.environ.get("GRADQ_BROKER_VISIBILITY_S") else None),
            worker_events=_flag("GRADQ_WORKER_EVENTS", default=True),
        )


def _number(name: str, default: float, kind: type, minimum: float) -> float:
    raw = os.environ.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = kind(raw)
    except ValueError:
        article = "an" if kind is int else "a"
        raise SettingsError(f"{name}: {raw!r} is not {article} {kind.__name__}") from None
    if not math.isfinite(value):  # nan would pass the minimum check; inf breaks timedelta
        raise SettingsError(f"{name}: {raw!r} is not a finite number")
    if value < minimum:
        raise SettingsError(f"{name}: {raw} is below the minimum {minimum}")
    return value


_TRUE, _FALSE = ("1", "true", "yes", "on"), ("0", "false", "no", "off")


def _flag(name: str, default: bool = False) -> bool:
    """A yes/no variable: 1/true/yes/on or 0/false/no/off (empty or unset: ``default``)."""
    raw = (os.environ.get(name) or "").strip().lower()
    if raw == "":
        return default
    if raw in _FALSE:
        return False
    if raw in _TRUE:
        return True
    raise ValueError(f"{name}: {raw!r} is not one of 1, true, yes, on, 0, false, no, off")


def get_settings() -> Settings:
    """Settings as the environment says now (cheap; not cached, so tests can change it)."""
    return Settings.from_env()


# The password runs to the last "@" of the authority (urllib and redis-py read
# "redis://:p@ss@host" as password "p@ss"), so it may hold a raw "@" but no "/".
_PASSWORD = re.compile(r"(?P<head>[a-zA-Z][a-zA-Z0-9+.-]*://[^:/@\s]*:)(?P<pw>[^/\s]*)@")


def redact(text: str) -> str:
    """Replace the password of every URL in ``text`` by ``***``."""
    return _PASSWORD.sub(lambda m: f"{m.group('head')}***@", text)
