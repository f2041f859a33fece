"""``NewJob``: a job to create, as planning (``service.compare``) hands it to storage
(``service.store.create``). Imports nothing, so both can use it without importing each other."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class NewJob:
    """A job to create: a normalised spec, where its children come from, its progress."""

    spec: dict[str, Any]
    kind: str
    name: str | None
    seed: int
    optimizer: dict[str, Any]
    queue: str
    children: Sequence[NewJob] = ()
    progress: dict[str, Any] = field(default_factory=dict)
