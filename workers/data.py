"""A job's data on the worker: from the package (built-ins) or the database, never a path.

Datasets stored by content hash, and built-ins once made, are cached on disk under
``GRADQ_HOME/cache``.
"""

from __future__ import annotations

from typing import Any

from gradq.nn.datasets import Dataset, content_hash, load_builtin, parse_bytes
from gradq.nn.datasets import _write_atomic as write_atomic  # the cache's one writer
from gradq.nn.preprocess import Splits, prepare
from gradq.service.settings import get_settings
from gradq.service.store.datasets import fetch_dataset_bytes


def load_dataset(spec: dict[str, Any], dataset_hash: str | None) -> Dataset:
    """The dataset of a job: a built-in by name, or stored bytes by hash."""
    task = spec["data"]["task"]
    cache_dir = get_settings().cache_dir
    if dataset_hash is None:
        # the same arrays as the client's, when ``gradq run`` runs the job in its process
        ds = load_builtin(spec["data"]["dataset"], cache_dir=cache_dir)
        if task not in ("auto", ds.task):
            raise ValueError(f"data.task: {spec['data']['dataset']} is a {ds.task} dataset")
        return ds
    cache = cache_dir / f"{dataset_hash}.npz"
    data: bytes | None = None
    if cache.exists():
        data = cache.read_bytes()
        if content_hash(data) != dataset_hash:
            data = None  # a damaged cache entry: fetch it again
    if data is None:
        data = fetch_dataset_bytes(dataset_hash)
        cache.parent.mkdir(parents=True, exist_ok=True)
        write_atomic(cache, data)
    return parse_bytes(data, "npz", name=f"dataset {dataset_hash[:12]}", task=task)


def prepare_splits(spec: dict[str, Any], ds: Dataset, fold: tuple[int, int] | None = None
                   ) -> Splits:
    d = spec["data"]
    return prepare(ds.X, ds.y, ds.task, validation=d["validation"], test=d["test"],
                   seed=spec["seed"], standardize=d["standardize"], pca=d["pca"], fold=fold)
