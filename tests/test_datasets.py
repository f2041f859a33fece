"""Tests of gradq.nn.datasets: built-ins, dataset files, labels, canonical bytes."""

from __future__ import annotations

import hashlib
import io
import json
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest
from gradq.nn import datasets as ds_mod
from gradq.nn.datasets import (
    BUILTIN,
    Dataset,
    DatasetError,
    content_hash,
    dataset_bytes,
    encode_labels,
    infer_task,
    load_builtin,
    load_file,
    make_mnist1d,
    parse_bytes,
    read_file,
)

# --------------------------------------------------------------------------- built-ins

# name -> (X shape, task, number of classes or None): one row per built-in.
EXPECTED = {
    "digits": ((1797, 64), "classification", 10),
    "iris": ((150, 4), "classification", 3),
    "wine": ((178, 13), "classification", 3),
    "breast_cancer": ((569, 30), "classification", 2),
    "diabetes": ((442, 10), "regression", None),
    "mnist": ((5000, 784), "classification", 10),
    "mnist1d": ((4000, 40), "classification", 10),
    "moons": ((1000, 2), "classification", 2),
    "circles": ((1000, 2), "classification", 2),
    "spirals": ((1000, 2), "classification", 2),
    "xor": ((1000, 2), "classification", 2),
}


def test_the_table_covers_every_builtin():
    assert set(EXPECTED) == set(BUILTIN) == set(ds_mod._LOADERS)
    assert all(isinstance(v, str) and v and "\n" not in v for v in BUILTIN.values())


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_builtin_loads_with_shape_task_and_classes(name):
    shape, task, n_classes = EXPECTED[name]
    ds = load_builtin(name)
    assert isinstance(ds, Dataset)
    assert (ds.name, ds.task, ds.X.shape) == (name, task, shape)
    assert ds.X.dtype == np.float64 and ds.X.flags.c_contiguous
    assert np.isfinite(ds.X).all() and np.isfinite(ds.y).all()
    assert ds.y.shape == (shape[0],)
    if task == "classification":
        assert ds.y.dtype == np.int64
        assert ds.n_classes == n_classes
        assert set(np.unique(ds.y)) == set(range(n_classes))  # every class present
    else:
        assert ds.y.dtype == np.float64 and ds.n_classes is None
    assert infer_task(ds.y) == task


def test_unknown_builtin_names_the_value_and_the_known_names():
    with pytest.raises(DatasetError) as err:
        load_builtin("mnits")
    msg = str(err.value)
    assert isinstance(err.value, ValueError)
    assert "'mnits'" in msg and "did you mean 'mnist'" in msg
    assert all(name in msg for name in BUILTIN)


@pytest.mark.parametrize("name", ["moons", "circles", "spirals", "xor", "mnist1d"])
def test_generated_builtins_are_deterministic(name):
    a, b = load_builtin(name), load_builtin(name)
    np.testing.assert_array_equal(a.X, b.X)
    np.testing.assert_array_equal(a.y, b.y)


def test_mnist1d_generator_is_seeded_balanced_and_standardized():
    state = np.random.get_state()[1].copy()
    X, y = make_mnist1d(n_samples=500, seed=7)
    X2, _ = make_mnist1d(n_samples=500, seed=7)
    X3, _ = make_mnist1d(n_samples=500, seed=8)
    np.testing.assert_array_equal(X, X2)
    assert not np.allclose(X, X3)
    np.testing.assert_array_equal(np.random.get_state()[1], state)  # global state untouched
    assert np.bincount(y).tolist() == [50] * 10
    assert abs(X.mean()) < 1e-12 and abs(X.std() - 1) < 1e-12


def test_mnist1d_is_learnable_but_not_linearly_separable():
    """Greydanus reports ~32% for logistic regression and much more for nonlinear models;
    with 3,000 training samples this generator gives 0.31 (linear) and 0.56 (5-NN)."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.neighbors import KNeighborsClassifier

    ds = load_builtin("mnist1d")
    Xtr, ytr, Xte, yte = ds.X[:3000], ds.y[:3000], ds.X[3000:], ds.y[3000:]

    linear = LogisticRegression(max_iter=1000).fit(Xtr, ytr).score(Xte, yte)
    knn = KNeighborsClassifier(5).fit(Xtr, ytr).score(Xte, yte)

    assert 0.25 < linear < 0.45  # far above chance (0.1), far from solved
    assert knn > linear + 0.15  # the shapes are there; a linear model cannot see them


@pytest.mark.parametrize("name", ["circles", "spirals", "xor"])
def test_synthetic_2d_sets_are_nonlinear_and_learnable(name):
    from sklearn.linear_model import LogisticRegression
    from sklearn.neighbors import KNeighborsClassifier

    ds = load_builtin(name)
    Xtr, ytr, Xte, yte = ds.X[:700], ds.y[:700], ds.X[700:], ds.y[700:]
    assert np.bincount(ds.y).tolist() == [500, 500]
    assert LogisticRegression().fit(Xtr, ytr).score(Xte, yte) < 0.7
    assert KNeighborsClassifier(5).fit(Xtr, ytr).score(Xte, yte) > 0.95


# --------------------------------------------------------------------------- the cache


@pytest.fixture
def made(monkeypatch):
    """Names of the built-ins made from their source (iris and wine are counted), with the
    per-process memo emptied before and after: each load below is a new process's first."""
    calls = []
    for name in ("iris", "wine"):
        real = ds_mod._LOADERS[name]
        monkeypatch.setitem(ds_mod._LOADERS, name,
                            lambda real=real, name=name: calls.append(name) or real())
    ds_mod._memo.clear()
    yield calls
    ds_mod._memo.clear()


def _fresh_process_load(name, cache):
    ds_mod._memo.clear()
    return load_builtin(name, cache_dir=cache)


def test_a_builtin_is_made_once_then_read_from_the_cache_by_content_hash(tmp_path, made):
    cache = tmp_path / "cache"
    first = _fresh_process_load("iris", cache)
    again = _fresh_process_load("iris", cache)
    assert made == ["iris"]  # the second load did not make it
    np.testing.assert_array_equal(again.X, first.X)
    np.testing.assert_array_equal(again.y, first.y)
    assert (again.task, again.name, again.y.dtype) == (first.task, "iris", np.int64)
    # keyed by the content hash of its canonical bytes: the hash the database uses
    digest = content_hash(dataset_bytes(first))
    assert (cache / f"{digest}.npz").read_bytes() == dataset_bytes(first)
    assert json.loads((cache / "builtin-iris.json").read_text())["hash"] == digest
    _fresh_process_load("wine", cache)
    assert made == ["iris", "wine"]  # another built-in, another entry


def test_in_one_process_every_load_shares_one_read_only_copy(made):
    a, b = load_builtin("iris"), load_builtin("iris")
    assert a is b and made == ["iris"]
    with pytest.raises(ValueError, match="read-only"):
        a.X[0, 0] = 1.0


@pytest.mark.parametrize("damage", ["flip a byte", "truncate", "remove", "bad index",
                                    "index names another hash"])
def test_a_damaged_cache_entry_is_ignored_and_made_again(tmp_path, made, damage):
    cache = tmp_path / "cache"
    good = _fresh_process_load("iris", cache)
    index = cache / "builtin-iris.json"
    npz = cache / f"{json.loads(index.read_text())['hash']}.npz"
    data = npz.read_bytes()
    if damage == "flip a byte":
        npz.write_bytes(data[:100] + bytes([data[100] ^ 0xFF]) + data[101:])
    elif damage == "truncate":
        npz.write_bytes(data[: len(data) // 2])
    elif damage == "remove":
        npz.unlink()
    elif damage == "bad index":
        index.write_text("{not json")
    else:
        index.write_text(json.dumps({**json.loads(index.read_text()), "hash": "0" * 64}))
    again = _fresh_process_load("iris", cache)
    assert made == ["iris", "iris"]
    np.testing.assert_array_equal(again.X, good.X)
    assert npz.read_bytes() == data  # rewritten whole
    _fresh_process_load("iris", cache)
    assert made == ["iris", "iris"]  # and used again


def test_an_entry_made_from_another_package_version_is_stale(tmp_path, made, monkeypatch):
    cache = tmp_path / "cache"
    _fresh_process_load("iris", cache)
    real = ds_mod.builtin_source
    monkeypatch.setattr(ds_mod, "builtin_source",
                        lambda name: {**real(name), "packages": {"scikit-learn": "99.0"}})
    _fresh_process_load("iris", cache)
    assert made == ["iris", "iris"]
    assert json.loads((cache / "builtin-iris.json").read_text())["source"]["packages"] == {
        "scikit-learn": "99.0"}


def test_an_unwritable_cache_still_loads(tmp_path, made):
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    ds = _fresh_process_load("iris", blocker / "cache")
    assert ds.X.shape == (150, 4) and made == ["iris"]


def _stored(monkeypatch, tmp_path):
    """A worker whose cache is ``tmp_path/cache``, with iris stored in the database."""
    from gradq.workers import data as worker_data

    blob = dataset_bytes(load_builtin("iris"))
    monkeypatch.setenv("GRADQ_HOME", str(tmp_path))
    monkeypatch.setattr(worker_data, "fetch_dataset_bytes", lambda digest: blob)
    spec = {"data": {"task": "auto", "dataset": "iris.npz"}}
    return worker_data, spec, blob, content_hash(blob)


def test_a_stored_dataset_is_cached_whole_with_no_temporary_file_left(tmp_path, monkeypatch):
    worker_data, spec, blob, digest = _stored(monkeypatch, tmp_path)
    ds = worker_data.load_dataset(spec, digest)
    assert ds.X.shape == (150, 4)
    cache = worker_data.get_settings().cache_dir
    assert sorted(p.name for p in cache.iterdir()) == [f"{digest}.npz"]
    assert (cache / f"{digest}.npz").read_bytes() == blob


def test_a_failed_cache_write_leaves_no_temporary_file(tmp_path, monkeypatch):
    # Given a cache whose final rename fails (a full disk, a read-only directory)
    worker_data, spec, _, digest = _stored(monkeypatch, tmp_path)

    def refuse(self, target):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(Path, "replace", refuse)
    # When a worker loads the stored dataset
    with pytest.raises(OSError, match="No space left"):
        worker_data.load_dataset(spec, digest)
    # Then neither the entry nor a temporary file is left in the cache
    assert list(worker_data.get_settings().cache_dir.iterdir()) == []


# --------------------------------------------------------------------------- labels


@pytest.mark.parametrize(
    ("y", "task"),
    [
        (np.array([0, 1, 1, 0]), "classification"),
        (np.array([3.0, 7.0, 3.0]), "classification"),  # whole floats count as integers
        (np.array([True, False]), "classification"),
        (np.arange(100), "classification"),
        (np.arange(101), "regression"),  # too many distinct values
        (np.array([2, 2, 2]), "regression"),  # a single value
        (np.array([0.0, 1.5]), "regression"),
        (np.array([0.0, np.nan]), "regression"),
        (np.array([[0, 1], [1, 0]]), "regression"),  # 2-D targets
    ],
)
def test_infer_task(y, task):
    assert infer_task(y) == task


def test_encode_labels_maps_to_0_k_and_keeps_the_classes():
    y = np.array([7.0, 1.0, 3.0, 7.0])
    labels, classes = encode_labels(y, "classification")
    assert labels.dtype == np.int64 and labels.tolist() == [2, 0, 1, 2]
    assert classes == [1, 3, 7]
    np.testing.assert_array_equal(np.asarray(classes)[labels], y)
    target, none = encode_labels(np.array([1, 2]), "regression")
    assert target.dtype == np.float64 and none == []


@pytest.mark.parametrize(
    ("y", "fragment"),
    [
        (np.array([0.0, 1.5, 2.5]), "found 1.5 (and 1 more)"),
        (np.array([0, -1, 2]), "found -1"),
        (np.array([4, 4]), "at least 2 classes"),
        (np.array([[0], [1]]).reshape(1, 2), "1-D"),
    ],
)
def test_encode_labels_refuses_bad_classification_labels(y, fragment):
    with pytest.raises(DatasetError) as err:
        encode_labels(y, "classification")
    assert fragment in str(err.value)


# --------------------------------------------------------------------------- bytes


def test_content_hash_is_sha256_hex():
    assert content_hash(b"abc") == hashlib.sha256(b"abc").hexdigest()
    assert content_hash(b"abc").startswith("ba7816bf")


def test_dataset_bytes_are_canonical_and_round_trip():
    a, b = dataset_bytes(load_builtin("iris")), dataset_bytes(load_builtin("iris"))
    assert a == b and content_hash(a) == content_hash(b)
    assert content_hash(a) != content_hash(dataset_bytes(load_builtin("wine")))
    with np.load(io.BytesIO(a), allow_pickle=False) as npz:
        assert sorted(npz.files) == ["X", "y"]

    for name in ("iris", "diabetes"):
        ds = load_builtin(name)
        back = parse_bytes(dataset_bytes(ds), "npz", name=name)
        np.testing.assert_array_equal(back.X, ds.X)
        np.testing.assert_array_equal(back.y, ds.y)
        assert (back.task, back.y.dtype, back.name) == (ds.task, ds.y.dtype, name)


def test_npz_file_round_trip_flattens_column_y(tmp_path):
    path = tmp_path / "data.npz"
    X = np.arange(12, dtype=np.float32).reshape(6, 2)
    np.savez(path, X=X, y=np.array([[5], [9], [5], [9], [5], [9]]))
    data, ds = load_file(path)
    assert data == path.read_bytes() and read_file(path) == data
    assert ds.X.dtype == np.float64 and ds.task == "classification" and ds.name == str(path)
    np.testing.assert_array_equal(ds.X, X)
    assert ds.y.tolist() == [0, 1, 0, 1, 0, 1]


def test_explicit_task_overrides_inference(tmp_path):
    path = tmp_path / "data.npz"
    np.savez(path, X=np.eye(4), y=np.array([1, 2, 1, 2]))
    _, ds = load_file(path, task="regression")
    assert ds.task == "regression" and ds.y.tolist() == [1.0, 2.0, 1.0, 2.0]


def test_csv_round_trip_with_and_without_header(tmp_path):
    X = np.array([[0.5, -1.0], [2.0, 3.25], [1e-3, 4.0], [7.0, 8.0]])
    y = np.array([3, 1, 3, 1])
    body = "\n".join(",".join(repr(float(v)) for v in row) for row in np.c_[X, y])
    plain, headed = tmp_path / "plain.csv", tmp_path / "headed.csv"
    plain.write_text(body + "\n")
    headed.write_bytes(("\ufeff0,1,label\r\n" + body.replace("\n", "\r\n") + "\r\n\r\n").encode())

    for path in (plain, headed):
        _, ds = load_file(path)
        np.testing.assert_array_equal(ds.X, X)
        assert ds.task == "classification" and ds.y.tolist() == [1, 0, 1, 0]

    regression = tmp_path / "r.csv"
    regression.write_text('a,"b",t\n1,2,0.5\n3, 4 ,"1.5"\n')
    _, ds = load_file(regression)
    assert ds.task == "regression" and ds.y.tolist() == [0.5, 1.5]
    assert ds.X.tolist() == [[1.0, 2.0], [3.0, 4.0]]


# --------------------------------------------------------------------------- bad files


def _npz(path: Path, **arrays) -> Path:
    np.savez(path, **arrays)
    return path


def _corrupt_middle(path: Path) -> Path:
    raw = bytearray(path.read_bytes())
    raw[len(raw) // 2 : len(raw) // 2 + 16] = b"\xff" * 16
    path.write_bytes(bytes(raw))
    return path


GOOD_X, GOOD_Y = np.ones((5, 3)), np.array([0, 1, 0, 1, 1])

# case id -> (make the file under tmp_path, fragment of the message, load_file kwargs)
BAD_FILES = {
    "missing": (lambda d: d / "nope.npz", "file not found", {}),
    "directory": (lambda d: (d / "dir.npz").mkdir() or d / "dir.npz", "directory", {}),
    "empty npz": (lambda d: _write(d / "e.npz", b""), "empty", {}),
    "empty csv": (lambda d: _write(d / "e.csv", b""), "empty", {}),
    "blank csv": (lambda d: _write(d / "b.csv", "\n \n"), "no data rows", {}),
    "header only": (lambda d: _write(d / "h.csv", "a,y\n"), "header", {}),
    "suffix": (lambda d: _write(d / "x.txt", "1,2\n"), "'.txt'", {}),
    "not a zip": (
        lambda d: _write(d / "r.npz", b"\x93NUMPY junk" * 10),
        "not a valid npz",
        {},
    ),
    "truncated npz": (
        lambda d: _truncate(_npz(d / "t.npz", X=GOOD_X, y=GOOD_Y)),
        "not a valid npz",
        {},
    ),
    "corrupt npz": (
        lambda d: _corrupt_middle(_npz(d / "c.npz", X=np.ones((50, 3)), y=np.ones(50))),
        "corrupt npz",
        {},
    ),
    "missing X": (lambda d: _npz(d / "m.npz", y=GOOD_Y, Z=GOOD_X), "missing array X", {}),
    "missing y": (lambda d: _npz(d / "m.npz", X=GOOD_X), "missing array y", {}),
    "pickled": (
        lambda d: _pickled(d / "p.npz"),
        "pickled",
        {},
    ),
    "text X": (lambda d: _npz(d / "s.npz", X=np.array([["a"]] * 5), y=GOOD_Y), "dtype", {}),
    "X 1-D": (lambda d: _npz(d / "v.npz", X=np.ones(5), y=GOOD_Y), "X must be 2-D", {}),
    "y 3-D": (
        lambda d: _npz(d / "v.npz", X=GOOD_X, y=np.ones((5, 2, 2))),
        "y must be 1-D or 2-D",
        {},
    ),
    "no features": (lambda d: _npz(d / "f.npz", X=np.ones((5, 0)), y=GOOD_Y), "no feature", {}),
    "lengths": (
        lambda d: _npz(d / "l.npz", X=GOOD_X, y=GOOD_Y[:4]),
        "X has 5 samples but y has 4",
        {},
    ),
    "NaN in X": (
        lambda d: _npz(d / "n.npz", X=np.array([[np.nan, 1], [2, np.nan], [3, 4]]), y=np.ones(3)),
        "X contains 2 NaN values",
        {},
    ),
    "inf in y": (
        lambda d: _npz(d / "i.npz", X=np.ones((3, 1)), y=np.array([1.0, -np.inf, 2.0])),
        "y contains 1 infinite value",
        {},
    ),
    "one sample": (lambda d: _npz(d / "o.npz", X=np.ones((1, 2)), y=np.ones(1)), "at least 2", {}),
    "too big": (
        lambda d: _npz(d / "b.npz", X=GOOD_X, y=GOOD_Y),
        "above the limit",
        {"max_bytes": 64},
    ),
    "inflates": (
        lambda d: _compressed(d / "z.npz"),
        "uncompressed, above the limit",
        {"max_bytes": 50_000},
    ),
    "csv cell": (
        lambda d: _write(d / "c.csv", "a,b,y\n1,2,0\n3,oops,1\n"),
        "row 3, column 2: 'oops' is not a number",
        {},
    ),
    "csv empty cell": (
        lambda d: _write(d / "c.csv", "1,2,0\n3,4,1\n5,,1\n"),
        "row 3, column 2: empty cell",
        {},
    ),
    "csv ragged": (
        lambda d: _write(d / "c.csv", "1,2,0\n3,1\n"),
        "row 2 has 2 columns, expected 3",
        {},
    ),
    "csv one column": (
        lambda d: _write(d / "c.csv", "1\n2\n"),
        "at least 2 columns",
        {},
    ),
    "csv NaN": (
        lambda d: _write(d / "c.csv", "1,2,0\nnan,4,1\n"),
        "X contains 1 NaN value",
        {},
    ),
    "csv not utf-8": (
        lambda d: _write(d / "c.csv", b"1,2\n\xff\xfe,3\n"),
        "not UTF-8",
        {},
    ),
    "label 1.5": (
        lambda d: _npz(d / "c.npz", X=np.ones((3, 1)), y=np.array([0.0, 1.5, 1.0])),
        "found 1.5",
        {"task": "classification"},
    ),
    "label -1": (
        lambda d: _npz(d / "c.npz", X=np.ones((3, 1)), y=np.array([0, -1, 1])),
        "found -1",
        {"task": "classification"},
    ),
}


def _write(path: Path, content: str | bytes) -> Path:
    if isinstance(content, bytes):
        path.write_bytes(content)
    else:
        path.write_text(content)
    return path


def _truncate(path: Path) -> Path:
    path.write_bytes(path.read_bytes()[:100])
    return path


def _pickled(path: Path) -> Path:
    np.savez(path, X=np.array([{"a": 1}] * 2, dtype=object), y=np.ones(2))
    return path


def _compressed(path: Path) -> Path:
    np.savez_compressed(path, X=np.zeros((10_000, 2)), y=np.zeros(10_000))
    assert path.stat().st_size < 50_000
    return path


@pytest.mark.parametrize("case", list(BAD_FILES))
def test_bad_file_raises_one_line_naming_the_file(tmp_path, case):
    make, fragment, kwargs = BAD_FILES[case]
    path = make(tmp_path)
    with pytest.raises(DatasetError) as err:
        load_file(path, **kwargs)
    msg = str(err.value)
    assert msg.startswith(f"{path}: "), msg
    assert fragment in msg, msg
    assert "\n" not in msg


def test_parse_bytes_refuses_unknown_format_and_task():
    with pytest.raises(DatasetError, match="unknown format 'json'"):
        parse_bytes(b"{}", "json", name="d.json")
    with pytest.raises(DatasetError, match="unknown task 'ranking'"):
        parse_bytes(b"1,2\n3,4\n", "csv", task="ranking")


def test_npz_of_a_plain_zip_without_arrays(tmp_path):
    path = tmp_path / "z.npz"
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("readme.txt", "hello")
    with pytest.raises(DatasetError, match=r"missing array X and y in npz \(found: readme.txt\)"):
        load_file(path)


def test_module_imports_nothing_heavy_or_of_gradq():
    code = (
        "import sys, gradq.nn.datasets; "
        "bad = [m for m in sys.modules if m.split('.')[0] in "
        "('sklearn', 'mlxtend', 'sqlalchemy', 'celery', 'click', 'redis') "
        "or m.startswith(('gradq.service', 'gradq.workers', 'gradq.cli'))]; "
        "print(bad)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
