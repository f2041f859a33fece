"""Bad input is refused cleanly (docs/cli.md, issue 6): a catalogue of what users get wrong.

Every case runs one ``gradq`` command in this process (click's CliRunner) against a
database that already holds a finished job, and must:

- exit 2 (bad usage, an invalid spec or data file, an unknown job) or 3 (a service that
  cannot be reached),
- print exactly one line on standard error, naming the problem (the key, the file or the
  value) and no password, and nothing on standard output,
- leave the database exactly as it was (every row of every table) and the broker's queues
  empty: nothing is stored or enqueued.
"""

from __future__ import annotations

import hashlib
import io
import shutil
import sqlite3
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml
from click.testing import CliRunner
from faultkit import free_port, queue_lengths
from gradq.cli.main import main as gradq_cli

pytestmark = pytest.mark.services

UNKNOWN_JOB = "0123456789abcdef0123456789abcdef"
SECRET = "hunter2-in-the-url"


# ------------------------------------------------------------------- file builders
def npz(**arrays: Any) -> bytes:
    buf = io.BytesIO()
    np.savez(buf, **{k: np.asarray(v) for k, v in arrays.items()})
    return buf.getvalue()


def blobs(n: int = 60, d: int = 3) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    y = np.arange(n) % 3
    return rng.normal(size=(n, d)) + y[:, None], y


def spec(dataset: str = "iris", **sections: Any) -> str:
    """A small valid train spec (as YAML) with ``sections`` merged in."""
    doc: dict[str, Any] = {"data": {"dataset": dataset}, "model": {"hidden": [4]},
                           "training": {"epochs": 1}}
    for key, value in sections.items():
        if isinstance(value, dict) and isinstance(doc.get(key), dict):
            doc[key] = {**doc[key], **value}
        else:
            doc[key] = value
    return yaml.safe_dump(doc, sort_keys=False)


def data_spec(name: str, **sections: Any) -> str:
    return spec(f"./{name}", **sections)


X_OK, Y_OK = blobs()
BOMB = "a: &a [x, x, x, x, x, x, x, x, x]\n" + "".join(
    f"{c}: &{c} [{', '.join(['*' + p] * 9)}]\n"
    for p, c in zip("abcdefgh", "bcdefghi", strict=True)) + "data: {dataset: iris}\n"


@dataclass(frozen=True)
class Bad:
    """One bad input: the files to write, the command, and what its error line names."""

    argv: tuple[str, ...]
    names: tuple[str, ...]  # each must appear in the one error line
    files: dict[str, str | bytes] = field(default_factory=dict)
    env: dict[str, str] = field(default_factory=dict)
    code: int = 2


def submit(text: str | bytes, *names: str, name: str = "spec.yaml", sets: tuple = (),
           files: dict[str, str | bytes] | None = None, env: dict | None = None,
           code: int = 2) -> Bad:
    argv = ("submit", name, *[a for s in sets for a in ("--set", s)])
    return Bad(argv, names, {name: text, **(files or {})}, env or {}, code)


CASES: dict[str, Bad] = {
    # ---- the spec file itself
    "yaml-unclosed-mapping": submit("data: {dataset: iris\n", "spec.yaml", "invalid YAML"),
    "yaml-bad-indentation": submit("data:\n  dataset: iris\n model: {}\n", "invalid YAML",
                                   "line 3"),
    "yaml-tab-indent": submit("data:\n\tdataset: iris\n", "spec.yaml", "invalid YAML"),
    "yaml-duplicate-key": submit("data: {dataset: iris}\ndata: {dataset: wine}\n",
                                 "duplicate key 'data'"),
    "yaml-alias-bomb": submit(BOMB, "spec.yaml", "aliases are not allowed"),
    "yaml-python-object-tag": submit(
        "data: !!python/object/apply:os.system ['touch pwned']\n", "spec.yaml",
        "invalid YAML"),
    "yaml-top-level-list": submit("- data\n- model\n", "top level must be a mapping"),
    "yaml-top-level-scalar": submit("just words\n", "top level must be a mapping"),
    "json-trailing-comma": submit('{"data": {"dataset": "iris"},}', "spec.json",
                                  "invalid JSON", name="spec.json"),
    "json-duplicate-key": submit('{"seed": 1, "seed": 2, "data": {"dataset": "iris"}}',
                                 "duplicate key 'seed'", name="spec.json"),
    "json-nested-too-deeply": submit("[" * 100_000 + "]" * 100_000, "spec.json",
                                     name="spec.json"),
    "spec-empty": submit("", "spec.yaml", "empty"),
    "spec-only-comments": submit("# nothing here\n", "spec.yaml", "empty"),
    "spec-not-utf8": submit(b"data: {dataset: \xff\xfe}\n", "spec.yaml", "not UTF-8"),
    "spec-missing": Bad(("submit", "no-such-spec.yaml"), ("no-such-spec.yaml", "not found")),
    "spec-oversized": submit(spec() + "#" * 5000 + "\n", "spec.yaml", "limit",
                             env={"GRADQ_MAX_SPEC_BYTES": "1000"}),
    # ---- keys, types and ranges
    "unknown-top-level-key": submit(spec(optimiser={"name": "sgd"}), "optimiser",
                                    "optimizer"),
    "unknown-nested-key": submit(spec(training={"epoch": 3}), "training.epoch"),
    "wrong-type-epochs": submit(spec(training={"epochs": "ten"}), "training.epochs", "ten"),
    "wrong-type-hidden": submit(spec(model={"hidden": 64}), "model.hidden"),
    "wrong-type-lr-bool": submit(spec(optimizer={"name": "sgd", "lr": True}), "optimizer.lr"),
    "wrong-type-section": submit(spec(training=[1, 2]), "training"),
    "negative-lr": submit(spec(optimizer={"name": "sgd", "lr": -0.1}), "optimizer.lr",
                          "-0.1"),
    "nan-lr": submit(spec(optimizer={"name": "adam", "lr": float("nan")}), "optimizer.lr"),
    "infinite-time-limit": submit(spec(training={"time_limit_s": float("inf")}),
                                  "training.time_limit_s"),
    # a message stays unacknowledged while its job runs: longer than the broker's
    # visibility timeout (1 day by default) and Redis would hand it to a second worker
    "time-limit-over-visibility": submit(spec(training={"time_limit_s": 80_000}),
                                         "training.time_limit_s", "80000 s",
                                         "GRADQ_BROKER_VISIBILITY_S"),
    "time-limit-over-set-visibility": submit(spec(training={"time_limit_s": 100}),
                                             "training.time_limit_s", "90 s",
                                             env={"GRADQ_BROKER_VISIBILITY_S": "100"}),
    "arm-time-limit-over-visibility": submit(
        spec(kind="compare", compare={"arms": [{"label": "sgd", "optimizer.name": "sgd"},
                               {"label": "adam", "optimizer.name": "adam",
                                "training.time_limit_s": 1e6}]}),
        "compare.arms[1]", "training.time_limit_s"),
    "visibility-below-minimum": submit(spec(), "GRADQ_BROKER_VISIBILITY_S", "minimum",
                                       env={"GRADQ_BROKER_VISIBILITY_S": "5"}),
    "validation-above-one": submit(spec(data={"validation": 1.5}), "data.validation", "1.5"),
    "no-training-data-left": submit(spec(data={"validation": 0.5, "test": 0.5}),
                                    "data.test"),
    "batch-size-zero": submit(spec(training={"batch_size": 0}), "training.batch_size"),
    "dropout-one": submit(spec(model={"dropout": {"hidden": 1.0}}), "model.dropout.hidden"),
    "negative-seed": submit(spec(seed=-1), "seed", "-1"),
    "dtype-float16": submit(spec(dtype="float16"), "dtype", "float16"),
    "huge-layer": submit(spec(model={"hidden": [100_000]}), "model.hidden[0]", "100000"),
    "huge-layer-product": submit(spec(model={"hidden": [60_000, 60_000]}), "model.hidden",
                                 "parameters"),
    "zero-width-layer": submit(spec(model={"hidden": [8, 0]}), "model.hidden[1]"),
    "activation-count-mismatch": submit(spec(model={"hidden": [4, 4],
                                                    "activation": ["relu"]}),
                                        "model.activation"),
    "unknown-activation": submit(spec(model={"activation": "swish"}), "model.activation",
                                 "swish"),
    "unknown-optimizer": submit(spec(optimizer={"name": "adamw"}), "optimizer.name", "adamw"),
    "unknown-hyperparameter": submit(spec(optimizer={"name": "adam", "momentum": 0.9}),
                                     "optimizer.momentum"),
    "unknown-dataset": submit(spec("digitz"), "data.dataset", "digitz"),
    "missing-dataset-key": submit("model: {hidden: [4]}\n", "data.dataset"),
    "compare-unknown-optimizer": submit(
        spec(kind="compare", compare={"optimizers": ["sgd", "adamz"], "seeds": 2}),
        "compare.optimizers[1]", "adamz"),
    "compare-block-on-train-job": submit(spec(compare={"optimizers": ["sgd"]}), "compare"),
    "sigmoid-on-three-classes": submit(spec(model={"output": "sigmoid"}), "model.output",
                                       "sigmoid"),
    "closed-form-on-classification": submit(spec(model={"hidden": []},
                                                 optimizer={"name": "closed_form"}),
                                            "optimizer.name", "closed_form"),
    "closed-form-arm-on-classification": submit(
        spec(kind="compare", model={"hidden": []},
             compare={"optimizers": ["sgd", "closed_form"], "seeds": 2}),
        "compare.optimizers[1]", "closed_form"),
    "pca-above-features": submit(spec(data={"pca": 9}), "data.pca", "9"),
    # ---- cross-field rules: specs that could only fail (or mislead) later on a worker
    "newton-above-max-params": submit(spec("mnist", model={"hidden": [512, 512]},
                                           optimizer={"name": "newton"}),
                                      "optimizer.max_params", "newton", "5,000", "669,706"),
    "newton-arm-above-max-params": submit(
        spec("digits", kind="compare", model={"hidden": [64]},
             compare={"optimizers": ["sgd", {"name": "newton", "max_params": [100, 200]}],
                      "seeds": 2}),
        "compare.optimizers[1].max_params", "4,810"),
    "early-stopping-without-validation": submit(
        spec(data={"validation": 0}, regularization={"early_stopping": {"metric": "val_loss"}}),
        "regularization.early_stopping.metric", "data.validation"),
    "early-stopping-on-zero-validation-samples": submit(
        spec(data={"validation": 0.001},
             regularization={"early_stopping": {"metric": "val_loss"}}),
        "regularization.early_stopping.metric", "0 samples"),
    "early-stopping-accuracy-on-regression": submit(
        spec("diabetes", regularization={"early_stopping": {"metric": "val_accuracy"}}),
        "regularization.early_stopping.metric", "val_accuracy", "regression"),
    "compare-test-metric-without-test-part": submit(
        spec(kind="compare", data={"test": 0}, compare={"optimizers": ["sgd"], "seeds": 2}),
        "compare.metric", "data.test"),
    "compare-val-metric-without-validation": submit(
        spec(kind="compare", data={"validation": 0},
             compare={"optimizers": ["sgd"], "seeds": 2, "metric": "val_loss"}),
        "compare.metric", "data.validation"),
    "compare-accuracy-on-regression": submit(
        spec("diabetes", kind="compare",
             compare={"optimizers": ["sgd"], "seeds": 2, "metric": "test_accuracy"}),
        "compare.metric", "test_accuracy", "regression"),
    "compare-target-not-an-accuracy": submit(
        spec(kind="compare",
             compare={"optimizers": ["sgd"], "seeds": 2, "metric": "test_accuracy",
                      "target": 1.5}), "compare.target", "1.5"),
    "compare-target-negative-loss": submit(
        spec(kind="compare", compare={"optimizers": ["sgd"], "seeds": 2, "target": -0.1}),
        "compare.target", "-0.1"),
    "grid-without-validation": submit(
        spec(kind="compare", data={"validation": 0},
             compare={"optimizers": [{"name": "sgd", "lr": [0.1, 0.01]}], "seeds": 2,
                      "metric": "train_loss"}),
        "compare.optimizers[0].lr", "data.validation"),
    "batch-norm-on-one-sample-batches": submit(
        spec(model={"hidden": [4], "batch_norm": True}, training={"batch_size": 1}),
        "training.batch_size", "batch_norm"),
    "schedule-on-delta-bar-delta": submit(
        spec(optimizer={"name": "delta_bar_delta",
                        "schedule": {"final_lr": 0.001, "steps": 10}}),
        "optimizer.schedule", "delta_bar_delta"),
    "bagging-a-kernel-svm": submit(spec(model={"kind": "kernel_svm"},
                                        regularization={"bagging": {"models": 3}}),
                                   "regularization.bagging", "kernel_svm"),
    "folds-above-samples": submit(spec(data={"folds": 151}), "data.folds", "151", "150"),
    "no-training-sample-after-rounding": submit(spec(data={"validation": 0.5, "test": 0.495}),
                                                "data.validation", "training"),
    # ---- --set overrides
    "set-without-equals": submit(spec(), "--set", "optimizer.lr", sets=("optimizer.lr",)),
    "set-empty-path-part": submit(spec(), "--set", "optimizer..lr", sets=("optimizer..lr=1",)),
    "set-into-a-scalar": submit(spec(seed=3), "seed", sets=("seed.value=1",)),
    "set-unknown-key": submit(spec(), "optimizer.lrr", sets=("optimizer.lrr=0.1",)),
    "set-malformed-value": submit(spec(), "--set", "optimizer.lr", sets=("optimizer.lr=[1,",)),
    "set-wrong-type": submit(spec(), "training.epochs", sets=("training.epochs=many",)),
    # ---- data files
    "data-file-missing": submit(data_spec("absent.npz"), "data.dataset", "absent.npz",
                                "not found"),
    "data-file-empty": submit(data_spec("empty.csv"), "empty.csv", "empty",
                              files={"empty.csv": b""}),
    "data-file-wrong-suffix": submit(data_spec("data.txt"), "data.dataset", "data.txt",
                                     files={"data.txt": "1,2,0\n"}),
    "data-npz-corrupt": submit(data_spec("corrupt.npz"), "corrupt.npz", "npz",
                               files={"corrupt.npz": b"PK\x03\x04 this is not a zip" * 10}),
    "data-npz-without-y": submit(data_spec("noy.npz"), "noy.npz", "y",
                                 files={"noy.npz": npz(X=X_OK)}),
    "data-npz-pickled-object": submit(
        data_spec("objects.npz"), "objects.npz",
        files={"objects.npz": npz(X=np.array([{"a": 1}] * 6, dtype=object), y=[0, 1] * 3)}),
    "data-csv-ragged-row": submit(data_spec("ragged.csv"), "ragged.csv", "row 3",
                                  files={"ragged.csv": "1,2,0\n3,4,1\n5,0\n7,8,1\n"}),
    "data-csv-text-cell": submit(data_spec("text.csv"), "text.csv", "row 2",
                                 files={"text.csv": "1,2,0\n3,abc,1\n5,6,0\n7,8,1\n"}),
    "data-oversized": submit(data_spec("big.npz"), "big.npz", "limit",
                             files={"big.npz": npz(X=X_OK, y=Y_OK)},
                             env={"GRADQ_MAX_DATASET_BYTES": "500"}),
    "data-nan-in-X": submit(data_spec("nan.npz"), "nan.npz", "NaN",
                            files={"nan.npz": npz(X=np.where(X_OK > 2, np.nan, X_OK),
                                                  y=Y_OK)}),
    "data-inf-in-X": submit(data_spec("inf.csv"), "inf.csv", "infinite",
                            files={"inf.csv": "1,2,0\n3,inf,1\n5,6,0\n7,8,1\n"}),
    "data-non-integer-labels": submit(
        data_spec("half.npz", data={"task": "classification"}), "half.npz", "integers", "0.5",
        files={"half.npz": npz(X=X_OK, y=Y_OK + 0.5)}),
    "data-negative-labels": submit(
        data_spec("neg.npz", data={"task": "classification"}), "neg.npz", ">= 0", "-1",
        files={"neg.npz": npz(X=X_OK, y=Y_OK - 1)}),
    "data-X-y-length-mismatch": submit(data_spec("short.npz"), "short.npz", "60", "59",
                                       files={"short.npz": npz(X=X_OK, y=Y_OK[:-1])}),
    "data-one-sample": submit(data_spec("one.csv"), "one.csv", "2 samples",
                              files={"one.csv": "1,2,0\n"}),
    "data-registered-name-unknown-file": Bad(("datasets", "add", "mine", "absent.npz"),
                                             ("absent.npz", "not found")),
    "data-register-builtin-name": Bad(("datasets", "add", "iris", "ok.npz"),
                                      ("iris", "built-in"), {"ok.npz": npz(X=X_OK, y=Y_OK)}),
    # ---- job ids: every command that reads or changes one job
    "status-unknown-job": Bad(("status", UNKNOWN_JOB), (UNKNOWN_JOB,)),
    "results-unknown-job": Bad(("results", UNKNOWN_JOB, "--json"), (UNKNOWN_JOB,)),
    "curves-unknown-job": Bad(("curves", UNKNOWN_JOB), (UNKNOWN_JOB,)),
    "report-unknown-job": Bad(("report", UNKNOWN_JOB), (UNKNOWN_JOB,)),
    "cancel-unknown-job": Bad(("cancel", UNKNOWN_JOB), (UNKNOWN_JOB,)),
    "retry-unknown-job": Bad(("retry", UNKNOWN_JOB), (UNKNOWN_JOB,)),
    "export-unknown-job": Bad(("export", UNKNOWN_JOB, "--out", "model.npz"), (UNKNOWN_JOB,)),
    "rm-unknown-job": Bad(("rm", "{job}", UNKNOWN_JOB), (UNKNOWN_JOB,)),  # nothing deleted
    "status-prefix-too-short": Bad(("status", "abc"), ("abc",)),
    "curves-unknown-metric": Bad(("curves", "{job}", "--metric", "val_lossy"),
                                 ("val_lossy",)),
    "cancel-finished-job": Bad(("cancel", "{job}"), ("{job}", "succeeded")),
    "retry-succeeded-job": Bad(("retry", "{job}"), ("{job}", "succeeded")),
    # ---- services out of reach (exit 3, the URL shown without its password)
    "broker-unreachable": submit(spec(), "redis://:***@127.0.0.1:{port}", "start Redis",
                                 env={"GRADQ_BROKER_URL":
                                      f"redis://:{SECRET}@127.0.0.1:{{port}}/0"},
                                 code=3),
    "database-unreachable": Bad(
        ("ls",), ("postgresql+psycopg://gradq:***@127.0.0.1:{port}", "start PostgreSQL"),
        env={"GRADQ_DATABASE_URL": f"postgresql+psycopg://gradq:{SECRET}@127.0.0.1:{{port}}/g"},
        code=3),
    "database-unreachable-on-submit": submit(
        spec(), "127.0.0.1:{port}", code=3,
        env={"GRADQ_DATABASE_URL": f"postgresql+psycopg://gradq:{SECRET}@127.0.0.1:{{port}}/g"}),
}


# ------------------------------------------------------------------------ fixtures
@pytest.fixture(scope="module")
def seeded_home(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    """A GRADQ_HOME whose SQLite database holds a finished job (curves, checkpoint, result,
    artifacts, its dataset) and a registered dataset name: the rows a refused command
    must leave alone."""
    from gradq.service.store.db import dispose_engines

    home = tmp_path_factory.mktemp("seeded") / "home"
    work = home.parent
    (work / "d.npz").write_bytes(npz(X=X_OK, y=Y_OK))
    (work / "s.yaml").write_text(data_spec("d.npz", training={"epochs": 2, "batch_size": 16}))
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("GRADQ_HOME", str(home))
        mp.setenv("GRADQ_DEVICE", "cpu")
        mp.delenv("GRADQ_DATABASE_URL", raising=False)
        runner = CliRunner()
        ran = runner.invoke(gradq_cli, ["run", str(work / "s.yaml"), "--json"])
        assert ran.exit_code == 0, ran.output
        added = runner.invoke(gradq_cli, ["datasets", "add", "seeded", str(work / "d.npz")])
        assert added.exit_code == 0, added.output
        job = yaml.safe_load(ran.stdout)["id"]
        dispose_engines()
    return home, job


def snapshot(db: Path) -> dict[str, tuple[int, str]]:
    """(rows, digest of every row) for each table of the SQLite database."""
    con = sqlite3.connect(db)
    try:
        tables = [r[0] for r in con.execute(
            "SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY name")]
        out = {}
        for t in tables:
            rows = sorted(repr(r) for r in con.execute(f'SELECT * FROM "{t}"'))
            out[t] = (len(rows), hashlib.sha256("\n".join(rows).encode()).hexdigest()[:16])
        return out
    finally:
        con.close()


def fill(text: str, values: dict[str, str]) -> str:
    for k, v in values.items():
        text = text.replace("{" + k + "}", v)
    return text


# --------------------------------------------------------------------------- tests
def test_the_catalogue_is_big_enough() -> None:
    assert len(CASES) >= 40


@pytest.mark.parametrize("case", list(CASES.values()), ids=list(CASES))
def test_bad_input_is_refused_with_one_line_and_changes_nothing(
        case: Bad, seeded_home: tuple[Path, str], gradq_home: Path, redis_url: str,
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import redis
    from gradq.service.store.db import dispose_engines

    # Given a database with a finished job in it, and an empty broker
    template, job = seeded_home
    shutil.copytree(template, gradq_home)
    db = gradq_home / "gradq.db"
    work = tmp_path / "work"
    work.mkdir()
    values = {"job": job, "port": str(free_port())}
    for name, content in case.files.items():
        content = fill(content, values) if isinstance(content, str) else content
        (work / name).write_bytes(content.encode() if isinstance(content, str) else content)
    for k, v in case.env.items():
        monkeypatch.setenv(k, fill(v, values))
    monkeypatch.chdir(work)
    before = snapshot(db)
    client = redis.Redis.from_url(redis_url)
    assert queue_lengths(client) == {}

    # When the command runs
    result = CliRunner().invoke(gradq_cli, [fill(a, values) for a in case.argv])
    dispose_engines()

    # Then it exits 2 (or 3) with one line on stderr that names the problem
    lines = result.stderr.strip().splitlines()
    assert result.exit_code == case.code, (result.exit_code, result.output, result.exception)
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("error: ")
    for name in case.names:
        assert fill(name, values) in lines[0], lines[0]
    assert SECRET not in result.output
    assert result.stdout == ""
    # ... and nothing was stored or enqueued, and nothing was unpickled or executed
    assert snapshot(db) == before
    assert queue_lengths(client) == {}
    assert not (work / "pwned").exists()

