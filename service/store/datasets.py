"""Datasets in the database: stored by content hash at submit, fetched by hash on workers.

The submitting client reads a user's file, checks it, and stores its canonical bytes; a
worker never opens a user's path. ``gradq datasets add NAME FILE`` registers a name.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import sqlalchemy as sa
from gradq.nn.datasets import BUILTIN, Dataset, content_hash, dataset_bytes, load_file
from gradq.service.errors import NotFound, UsageError
from gradq.service.store.create import store_dataset
from gradq.service.store.db import session_scope
from gradq.service.store.models import Dataset as DatasetRow
from gradq.service.store.models import DatasetName


class DatasetNotFound(NotFound):
    """A dataset hash that is not in the database."""


def read_user_file(path: str | Path, task: str, max_bytes: int) -> tuple[str, bytes, Dataset]:
    """Read and check a user's .npz/.csv; return (hash, canonical bytes, parsed dataset)."""
    _, ds = load_file(path, task=task, max_bytes=max_bytes)
    data = dataset_bytes(ds)
    return content_hash(data), data, ds


def registered(name: str, url: str | None = None) -> str | None:
    """The hash registered under ``name``, or None."""
    with session_scope(url) as s:
        return s.execute(sa.select(DatasetName.hash).where(DatasetName.name == name)).scalar()


def add(name: str, path: str | Path, max_bytes: int, url: str | None = None) -> dict[str, Any]:
    """Register a dataset file under ``name`` (re-registering replaces the name's target)."""
    if name in BUILTIN:
        raise UsageError(f"dataset name {name!r} is a built-in; choose another name")
    digest, data, ds = read_user_file(path, "auto", max_bytes)
    with session_scope(url) as s:
        store_dataset(s, digest, data, Path(path).name)
        s.execute(sa.delete(DatasetName).where(DatasetName.name == name))
        s.add(DatasetName(name=name, hash=digest))
    return {"name": name, "hash": digest, "samples": int(ds.X.shape[0]),
            "features": int(ds.X.shape[1]), "task": ds.task}


def fetch_dataset_bytes(digest: str, url: str | None = None) -> bytes:
    with session_scope(url) as s:
        data = s.execute(sa.select(DatasetRow.data).where(DatasetRow.hash == digest)).scalar()
    if data is None:
        raise DatasetNotFound(f"dataset {digest} is not in the database")
    return bytes(data)


def listing(url: str | None = None) -> list[dict[str, Any]]:
    """Built-ins and registered datasets, for ``gradq datasets``."""
    out: list[dict[str, Any]] = [{"name": n, "kind": "built-in", "description": d}
                                 for n, d in BUILTIN.items()]
    with session_scope(url) as s:
        rows = s.execute(sa.select(DatasetName.name, DatasetName.hash, DatasetRow.source,
                                   DatasetRow.n_bytes)
                         .join(DatasetRow, DatasetRow.hash == DatasetName.hash)
                         .order_by(DatasetName.name)).all()
    out += [{"name": r.name, "kind": "registered", "hash": r.hash, "source": r.source,
             "bytes": r.n_bytes} for r in rows]
    return out
