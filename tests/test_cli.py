"""Every ``gradq`` command through click's CliRunner: exit codes, the one-line errors and the
``--json`` documents of docs/cli.md, docs/results.md.

Training is real but small. One module-scoped database holds a finished quickstart run (an
MLP on digits) and a small comparison; the read-only commands are tested against it. Tests
that change a database get the per-test SQLite one; ``submit``/``retry`` need Redis.
"""

from __future__ import annotations

import base64
import csv
import json
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import sqlalchemy as sa
from _cli import invoke, private_redis_db
from gradq.cli.main import main
from gradq.service.store.db import dispose_engines, get_engine
from gradq.service.store.models import Base

ROOT = Path(__file__).resolve().parent.parent
QUICKSTART = ROOT / "examples" / "quickstart.yaml"
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
RESULT_KEYS = {"id", "kind", "status", "name", "parent", "seed", "optimizer", "device",
               "worker", "attempts", "params", "final", "timing", "error"}
FINAL_KEYS = {"train_loss", "val_loss", "test_loss", "test_accuracy", "epochs", "steps",
              "best_epoch"}
LS_KEYS = {"id", "kind", "status", "name", "parent", "created_at"}
BUILTINS = {"digits", "iris", "wine", "breast_cancer", "diabetes", "mnist", "mnist1d", "moons",
            "circles", "spirals", "xor"}

SMALL = """\
name: iris-small
device: cpu
data: {dataset: iris}
model: {hidden: [8]}
optimizer: {name: adam, lr: 0.01}
training: {epochs: 3, batch_size: 32}
"""
COMPARE = """\
name: iris-compare
kind: compare
device: cpu
data: {dataset: iris}
model: {hidden: [4]}
training: {epochs: 3, batch_size: 32}
compare: {optimizers: [sgd, adam], seeds: 2, metric: test_loss}
"""


class Out:
    """What a command did: exit code, standard output, standard error."""

    def __init__(self, code: int, stdout: str, stderr: str) -> None:
        self.code, self.stdout, self.stderr = code, stdout, stderr

    def json(self) -> Any:
        """The one JSON document on standard output (``json.loads`` refuses anything more)."""
        return json.loads(self.stdout)

    def one_error_line(self) -> str:
        lines = self.stderr.strip().splitlines()
        assert len(lines) == 1, self.stderr
        assert self.stdout == ""
        return lines[0]


def gradq(*args: Any) -> Out:
    return Out(*invoke(*args))


def write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def row_counts() -> dict[str, int]:
    with get_engine().connect() as c:
        return {t: c.execute(sa.select(sa.func.count()).select_from(Base.metadata.tables[t]))
                .scalar_one() for t in Base.metadata.tables}


def broker_messages(redis_url: str) -> list[tuple[str, str, dict[str, Any]]]:
    """(queue, job id, message) of every task message waiting in the broker."""
    import redis

    client = redis.Redis.from_url(redis_url)
    out = []
    for key in client.scan_iter():
        if client.type(key) != b"list":
            continue
        for raw in client.lrange(key, 0, -1):
            msg = json.loads(raw)
            args = json.loads(base64.b64decode(msg["body"]))[0]
            out.append((key.decode().split(":")[0], args[0], msg))
    return out


@pytest.fixture
def broker(monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """The real Redis on database 12, these tests' own."""
    yield from private_redis_db(monkeypatch, 12)


# ---------------------------------------------------------- the shared database
@pytest.fixture(scope="module")
def shared(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    """A database with a finished quickstart run and a finished comparison."""
    home = tmp_path_factory.mktemp("shared-home")
    specs = tmp_path_factory.mktemp("specs")
    with pytest.MonkeyPatch.context() as m:
        m.setenv("GRADQ_HOME", str(home))
        m.delenv("GRADQ_DATABASE_URL", raising=False)
        m.setenv("GRADQ_DEVICE", "cpu")
        dispose_engines()
        run = gradq("run", QUICKSTART, "--json")
        compare = gradq("run", write(specs / "compare.yaml", COMPARE), "--json")
        dispose_engines()
    assert run.code == 0, run.stderr
    assert compare.code == 0, compare.stderr
    yield {"home": home, "run": run, "train": run.json(), "compare_run": compare,
           "report": compare.json()}


@pytest.fixture
def db(shared: dict[str, Any], monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    """Point this test at the shared database (read only: do not change it)."""
    monkeypatch.setenv("GRADQ_HOME", str(shared["home"]))
    return shared


@pytest.fixture
def small(tmp_path: Path) -> Path:
    return write(tmp_path / "small.yaml", SMALL)


# --------------------------------------------------------------------- run
def test_run_json_is_the_result_document(db: dict[str, Any]) -> None:
    out, doc = db["run"], db["train"]
    assert out.code == 0
    assert out.stdout.lstrip().startswith("{")  # progress went to stderr, not stdout
    assert set(doc) >= RESULT_KEYS
    assert doc["kind"] == "train" and doc["status"] == "succeeded"
    assert doc["name"] == "digits-mlp" and doc["parent"] is None and doc["seed"] == 0
    assert doc["optimizer"]["name"] == "adam" and doc["optimizer"]["lr"] == 0.001
    assert doc["device"] == "cpu (numpy)"
    assert doc["worker"] and doc["attempts"] == 1 and doc["error"] is None
    assert doc["params"] == (64 * 64 + 64) + (64 * 64 + 64) + (64 * 10 + 10)
    assert set(doc["final"]) >= FINAL_KEYS
    assert doc["final"]["epochs"] == 30 and doc["final"]["steps"] > 0
    assert set(doc["timing"]) == {"queued_s", "run_s", "samples_per_s", "stacked"}
    assert doc["timing"]["stacked"] == 1  # a train job trains alone
    assert doc["timing"]["run_s"] > 0 and doc["timing"]["samples_per_s"] > 0


def test_an_mlp_on_digits_reaches_95_percent_test_accuracy(db: dict[str, Any]) -> None:
    final = db["train"]["final"]
    assert final["test_accuracy"] >= 0.95
    assert final["test_loss"] < final["train_loss"] + 1.0  # finite, and no blow-up
    assert final["train_loss"] < 0.5


def test_run_prints_a_table_for_people(small: Path) -> None:
    out = gradq("run", small)
    assert out.code == 0, out.stderr
    lines = dict(line.split(None, 1) for line in out.stdout.splitlines() if line.strip())
    assert lines["status"].strip() == "succeeded"
    assert lines["name"].strip() == "iris-small"
    # the table shows the stored figure (4 significant digits), and the figure is learned:
    # seed 0 reaches 23 of 30 test flowers, far above the 1/3 of always guessing one class
    stored = gradq("results", lines["id"].strip(), "--json").json()["final"]
    assert float(lines["test_accuracy"]) == pytest.approx(stored["test_accuracy"], abs=5e-4)
    assert stored["test_accuracy"] >= 0.7
    assert out.stderr.startswith(f"job {lines['id'].strip()}")


def test_a_diverged_run_exits_1(small: Path) -> None:
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        out = gradq("run", small, "--set", "optimizer.name=sgd", "--set", "optimizer.lr=1e6",
                    "--json")
    assert out.code == 1
    # the status and the step say it; NumPy's overflow warnings do not bury that line
    assert [str(w.message) for w in seen if issubclass(w.category, RuntimeWarning)] == []
    doc = out.json()
    assert doc["status"] == "diverged"
    assert "step" in doc["error"]
    values = gradq("curves", doc["id"], "--json").json()["metrics"]["train_loss"]["value"]
    assert values[-1] is None  # JSON has no NaN: a non-finite loss prints as null
    assert gradq("results", doc["id"], "--json").json()["status"] == "diverged"
    assert gradq("run", small, "--set", "optimizer.name=sgd", "--set",
                 "optimizer.lr=1e6").code == 1


def test_set_overrides_keys_of_the_spec(small: Path) -> None:
    out = gradq("run", small, "--set", "training.epochs=2", "--set", "model.hidden=[3]",
                "--set", "optimizer.lr=0.05", "--set", "name=overridden", "--json")
    assert out.code == 0, out.stderr
    doc = out.json()
    assert doc["final"]["epochs"] == 2
    assert doc["params"] == (4 * 3 + 3) + (3 * 3 + 3)
    assert doc["optimizer"]["lr"] == 0.05 and doc["name"] == "overridden"


def test_run_a_comparison_prints_its_report(db: dict[str, Any]) -> None:
    rep = db["report"]
    assert db["compare_run"].code == 0
    assert {"id", "metric", "lower_is_better", "arms", "better"} <= set(rep)
    assert rep["metric"] == "test_loss" and rep["lower_is_better"] is True
    assert [a["optimizer"] for a in rep["arms"]] == ["sgd", "adam"]
    for arm in rep["arms"]:
        assert arm["n"] == 2 and len(arm["runs"]) == 2
        assert {"mean", "std", "se", "ci95"} <= set(arm)
        lo, hi = arm["ci95"]
        assert lo <= arm["mean"] <= hi
    assert gradq("report", rep["id"], "--json").json() == rep


def test_report_writes_plots(db: dict[str, Any], tmp_path: Path) -> None:
    out = gradq("report", db["report"]["id"], "--png", tmp_path / "r.png")
    assert out.code == 0, out.stderr
    assert "metric test_loss" in out.stdout
    pngs = sorted(tmp_path.glob("*.png"))
    assert tmp_path / "r.png" in pngs
    for p in pngs:
        assert p.read_bytes().startswith(PNG_MAGIC)


# ------------------------------------------------------------------ read side
def test_ls_json_lists_jobs_newest_first(db: dict[str, Any]) -> None:
    rows = gradq("ls", "--json").json()
    assert isinstance(rows, list) and len(rows) == 6  # quickstart, comparison, 4 children
    assert all(set(r) == LS_KEYS for r in rows)
    assert [r["created_at"] for r in rows] == sorted((r["created_at"] for r in rows),
                                                     reverse=True)
    parent = db["report"]["id"]
    assert [r["id"] for r in gradq("ls", "--kind", "compare", "--json").json()] == [parent]
    kids = gradq("ls", "--parent", parent, "--json").json()
    assert len(kids) == 4 and {k["parent"] for k in kids} == {parent}
    assert len(gradq("ls", "--limit", "2", "--json").json()) == 2
    assert len(gradq("ls", "--status", "succeeded", "--json").json()) == 6
    assert gradq("ls", "--status", "failed", "--json").json() == []


def test_ls_table(db: dict[str, Any]) -> None:
    out = gradq("ls")
    assert out.code == 0
    header, *rows = out.stdout.splitlines()
    assert header.split()[:3] == ["ID", "KIND", "STATUS"]
    assert len(rows) == 6
    assert gradq("ls", "--status", "nonsense").code == 2


def test_status_json_adds_progress(db: dict[str, Any]) -> None:
    doc = gradq("status", db["train"]["id"], "--json").json()
    assert set(doc) >= RESULT_KEYS | {"progress"}
    p = doc["progress"]
    assert (p["epoch"], p["epochs"]) == (30, 30) and p["step"] == doc["final"]["steps"]
    cmp = gradq("status", db["report"]["id"], "--json").json()
    assert cmp["kind"] == "compare" and cmp["status"] == "succeeded"
    assert cmp["progress"]["children"]["succeeded"] == 4
    table = gradq("status", db["train"]["id"])
    assert table.code == 0 and "epoch 30/30" in table.stdout


def test_results_json_matches_what_run_printed(db: dict[str, Any]) -> None:
    jid = db["train"]["id"]
    assert gradq("results", jid, "--json").json() == db["train"]
    assert gradq("results", jid[:8], "--json").json()["id"] == jid  # a unique prefix
    table = gradq("results", jid)
    assert table.code == 0 and "test_accuracy" in table.stdout
    assert "test_loss" in gradq("results", db["report"]["id"]).stdout  # a comparison: report


def test_curves_json_shape(db: dict[str, Any]) -> None:
    doc = gradq("curves", db["train"]["id"], "--json").json()
    assert set(doc) == {"id", "metrics"} and doc["id"] == db["train"]["id"]
    assert {"train_loss", "val_loss"} <= set(doc["metrics"])
    for m in doc["metrics"].values():
        assert set(m) == {"step", "epoch", "time_s", "value"}
        assert len(m["step"]) == len(m["epoch"]) == len(m["time_s"]) == len(m["value"])
    loss = doc["metrics"]["train_loss"]
    assert loss["step"][0] == 0 and loss["epoch"][0] == 0  # the loss before the first update
    assert loss["step"] == sorted(set(loss["step"]))
    assert loss["epoch"][-1] == 30 and len(loss["step"]) == 31
    assert loss["value"][-1] < loss["value"][0]


def test_curves_metric_filter(db: dict[str, Any]) -> None:
    jid = db["train"]["id"]
    doc = gradq("curves", jid, "--metric", "val_loss", "--json").json()
    assert set(doc["metrics"]) == {"val_loss"}
    out = gradq("curves", jid, "--metric", "no_such_metric")
    assert out.code == 2 and "no_such_metric" in out.one_error_line()


def test_curves_csv(db: dict[str, Any], tmp_path: Path) -> None:
    jid = db["train"]["id"]
    out = gradq("curves", jid, "--csv", tmp_path / "c.csv")
    assert out.code == 0
    with (tmp_path / "c.csv").open() as f:
        rows = list(csv.DictReader(f))
    doc = gradq("curves", jid, "--json").json()
    assert len(rows) == sum(len(m["step"]) for m in doc["metrics"].values())
    assert set(rows[0]) == {"job", "metric", "step", "epoch", "time_s", "value"}
    assert {r["job"] for r in rows} == {jid}
    first = next(r for r in rows if r["metric"] == "train_loss")
    assert int(first["step"]) == 0
    assert float(first["value"]) == pytest.approx(doc["metrics"]["train_loss"]["value"][0])


def test_curves_png(db: dict[str, Any], tmp_path: Path) -> None:
    out = gradq("curves", db["train"]["id"], "--png", tmp_path / "c.png")
    assert out.code == 0
    assert (tmp_path / "c.png").read_bytes().startswith(PNG_MAGIC)
    # several jobs are overlaid in one figure
    kids = [k["id"] for k in gradq("ls", "--parent", db["report"]["id"], "--json").json()]
    assert gradq("curves", *kids, "--png", tmp_path / "all.png").code == 0
    assert (tmp_path / "all.png").read_bytes().startswith(PNG_MAGIC)


def test_export_writes_the_parameters_in_layer_order(db: dict[str, Any],
                                                     tmp_path: Path) -> None:
    out = gradq("export", db["train"]["id"], "--out", tmp_path / "m.npz")
    assert out.code == 0, out.stderr
    with np.load(tmp_path / "m.npz", allow_pickle=False) as z:
        arrays = {k: z[k] for k in z.files}
    assert set(arrays) == {"W0", "b0", "W1", "b1", "W2", "b2"}
    widths = [64, 64, 64, 10]  # digits: 64 inputs, hidden [64, 64], 10 classes
    for i in range(3):
        assert arrays[f"W{i}"].shape == (widths[i], widths[i + 1])  # (inputs, outputs)
        assert arrays[f"b{i}"].size == widths[i + 1]
        assert np.all(np.isfinite(arrays[f"W{i}"]))
    assert sum(a.size for a in arrays.values()) == db["train"]["params"]
    # the parameters are the trained ones: a forward pass separates the digits classes
    from sklearn.datasets import load_digits

    X, y = load_digits(return_X_y=True)
    X = (X - X.mean(0)) / np.where(X.std(0) > 0, X.std(0), 1.0)
    h = X
    for i in range(3):
        h = h @ arrays[f"W{i}"] + arrays[f"b{i}"].reshape(-1)
        if i < 2:
            h = np.maximum(h, 0.0)
    assert (h.argmax(1) == y).mean() > 0.9


def test_export_of_a_job_without_parameters_is_refused(small: Path, tmp_path: Path) -> None:
    from gradq.service import submit as submit_service

    [queued] = submit_service.create(submit_service.prepare(small))  # stored, never run
    refused = gradq("export", queued, "--out", tmp_path / "never.npz")
    assert refused.code == 2 and queued in refused.one_error_line()
    assert not (tmp_path / "never.npz").exists()


# ------------------------------------------------------------------ datasets
def test_datasets_lists_the_built_ins(tmp_path: Path) -> None:
    rows = gradq("datasets", "--json").json()
    names = {r["name"] for r in rows if r["kind"] == "built-in"}
    assert names >= BUILTINS
    out = gradq("datasets")
    assert out.code == 0 and "digits" in out.stdout


def test_datasets_add_registers_a_name_that_a_spec_can_use(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    X = rng.normal(size=(120, 3))
    y = (X[:, 0] + X[:, 1] > 0).astype(np.int64)
    np.savez(tmp_path / "blobs.npz", X=X, y=y)
    doc = gradq("datasets", "add", "blobs", tmp_path / "blobs.npz", "--json").json()
    assert doc["name"] == "blobs" and doc["samples"] == 120 and doc["features"] == 3
    assert doc["task"] == "classification" and len(doc["hash"]) == 64
    listed = {r["name"]: r for r in gradq("datasets", "--json").json()}
    assert listed["blobs"]["kind"] == "registered" and listed["blobs"]["hash"] == doc["hash"]
    # a CSV: the last column is y
    np.savetxt(tmp_path / "line.csv", np.c_[X, X @ [1.0, 2.0, 3.0]], delimiter=",")
    out = gradq("datasets", "add", "line", tmp_path / "line.csv")
    assert out.code == 0 and "regression" in out.stdout
    # a spec names it, and runs without the file
    spec = write(tmp_path / "s.yaml", SMALL.replace("iris", "blobs"))
    (tmp_path / "blobs.npz").unlink()
    run = gradq("run", spec, "--json")
    assert run.code == 0, run.stderr
    assert run.json()["params"] == (3 * 8 + 8) + (8 * 1 + 1)  # two classes: one sigmoid unit


@pytest.mark.parametrize(("name", "content", "says"), [
    ("digits", None, "built-in"),
    ("mine", "missing", "mine"),
    ("mine", b"not an npz", "mine"),
])
def test_datasets_add_refuses_bad_input(tmp_path: Path, name: str, content: Any,
                                        says: str) -> None:
    path = tmp_path / "mine.npz"
    if content is None:
        np.savez(path, X=np.zeros((4, 2)), y=np.arange(4) % 2)
    elif isinstance(content, bytes):
        path.write_bytes(content)
    out = gradq("datasets", "add", name, path)
    assert out.code == 2
    assert says in out.one_error_line()


# ------------------------------------------------------------------------ db
def test_db_upgrade_and_current() -> None:
    out = gradq("db", "upgrade")
    assert out.code == 0 and "is at revision" in out.stdout
    rev = out.stdout.split()[-1]
    assert gradq("db", "current").stdout.strip() == f"current {rev}, head {rev}"


# --------------------------------------------------------------- the queue
def test_submit_json_then_cancel_and_retry(broker: str, small: Path) -> None:
    out = gradq("submit", small, "--priority", "5", "--json")
    assert out.code == 0, out.stderr
    doc = out.json()
    assert set(doc) == {"id", "status"} and doc["status"] == "queued"
    jid = doc["id"]
    [(queue, sent, msg)] = broker_messages(broker)
    assert (queue, sent) == ("cpu", jid)
    assert msg["content-type"] == "application/json"  # JSON only, never pickle
    assert gradq("status", jid, "--json").json()["status"] == "queued"
    # cancel a queued job: cancelled at once
    cancelled = gradq("cancel", jid)
    assert cancelled.code == 0, cancelled.stderr
    assert gradq("status", jid, "--json").json()["status"] == "cancelled"
    again = gradq("cancel", jid)
    assert again.code == 2 and "cancelled" in again.one_error_line()
    # retry it: queued again and published again
    retried = gradq("retry", jid, "--json")
    assert retried.code == 0, retried.stderr
    assert retried.json()["status"] == "queued"
    assert gradq("status", jid, "--json").json()["status"] == "queued"
    assert [m[1] for m in broker_messages(broker)] == [jid, jid]
    refused = gradq("retry", jid)
    assert refused.code == 2 and "queued" in refused.one_error_line()


def test_submit_prints_the_id_for_people(broker: str, small: Path) -> None:
    out = gradq("submit", small)
    assert out.code == 0
    jid = out.stdout.strip()
    assert len(jid) == 32 and gradq("ls", "--json").json()[0]["id"] == jid


def test_submit_a_comparison_lists_its_children(broker: str, tmp_path: Path) -> None:
    out = gradq("submit", write(tmp_path / "c.yaml", COMPARE), "--json")
    assert out.code == 0, out.stderr
    doc = out.json()
    assert set(doc) == {"id", "status", "children"} and doc["status"] == "queued"
    assert len(doc["children"]) == 2 * 2  # optimizers x seeds
    kids = gradq("ls", "--parent", doc["id"], "--json").json()
    assert {k["id"] for k in kids} == set(doc["children"])
    # only the children are sent to workers
    assert sorted(m[1] for m in broker_messages(broker)) == sorted(doc["children"])
    # cancelling the comparison cancels every queued child at once
    assert gradq("cancel", doc["id"]).code == 0
    statuses = {r["status"] for r in gradq("ls", "--json").json()}
    assert statuses == {"cancelled"}


# ------------------------------------------------------------------ errors
READ_COMMANDS = [["status"], ["results"], ["curves"], ["report"], ["cancel"],
                 ["export", "--out", "x.npz"], ["ls", "--parent"], ["status", "--json"],
                 ["results", "--json"], ["curves", "--json"]]


@pytest.mark.parametrize("command", READ_COMMANDS, ids=" ".join)
def test_an_unknown_job_id_is_exit_2_naming_it(command: list[str]) -> None:
    gradq("ls")  # the database exists and is empty
    jid = "feedc0ffee"
    args = [*command[:1], jid, *command[1:]] if command[0] != "ls" else [*command, jid]
    out = gradq(*args)
    assert out.code == 2
    line = out.one_error_line()
    assert f"'{jid}'" in line  # the whole id, quoted
    assert line.startswith("error: ")


def test_retry_of_an_unknown_job_is_exit_2(broker: str) -> None:
    out = gradq("retry", "feedc0ffee")
    assert out.code == 2 and "'feedc0ffee'" in out.one_error_line()


BAD_SPECS = [
    ("unknown key", "data: {dataset: iris}\nbogus: 1\n", (), "bogus"),
    ("unknown nested key", "data: {dataset: iris}\nmodel: {hiden: [3]}\n", (), "model.hiden"),
    ("wrong type", "data: {dataset: iris}\ntraining: {epochs: many}\n", (),
     "training.epochs"),
    ("out of range", "data: {dataset: iris, validation: 1.5}\n", (), "data.validation"),
    ("negative lr", "data: {dataset: iris}\noptimizer: {name: sgd, lr: -1}\n", (),
     "optimizer.lr"),
    ("unknown optimizer", "data: {dataset: iris}\noptimizer: {name: adamw}\n", (),
     "optimizer.name"),
    ("missing dataset file", "data: {dataset: nothere.npz}\n", (), "data.dataset"),
    ("unknown dataset", "data: {dataset: no_such_set}\n", (), "data.dataset"),
    ("no dataset", "model: {hidden: [3]}\n", (), "data"),
    ("not yaml", "data: [iris\n", (), "spec.yaml"),
    ("not a mapping", "- 1\n- 2\n", (), "mapping"),
    ("bad --set", SMALL, ("training.epochs",), "--set"),
    ("--set unknown key", SMALL, ("optimizer.momentum=0.9",), "optimizer.momentum"),
    ("--set wrong type", SMALL, ("model.hidden=abc",), "model.hidden"),
]


@pytest.fixture
def populated(tmp_path: Path) -> dict[str, int]:
    """A database with something in every table a submission writes to."""
    np.savez(tmp_path / "reg.npz", X=np.arange(40.0).reshape(20, 2), y=np.arange(20) % 2)
    assert gradq("datasets", "add", "reg", tmp_path / "reg.npz").code == 0
    assert gradq("run", write(tmp_path / "ok.yaml", SMALL), "--set",
                 "training.epochs=1").code == 0
    counts = row_counts()
    assert counts["jobs"] == 1 and counts["datasets"] == 1
    return counts


@pytest.mark.parametrize("command", ["run", "submit"])
@pytest.mark.parametrize(("case", "text", "sets", "key"), BAD_SPECS,
                         ids=[c[0] for c in BAD_SPECS])
def test_a_bad_spec_is_exit_2_one_line_and_stores_nothing(
        broker: str, populated: dict[str, int], tmp_path: Path, command: str, case: str,
        text: str, sets: tuple[str, ...], key: str) -> None:
    spec = write(tmp_path / "spec.yaml", text)
    args = [a for s in sets for a in ("--set", s)]
    out = gradq(command, spec, *args, "--json")
    assert out.code == 2, (out.stdout, out.stderr)
    line = out.one_error_line()
    assert key in line, line
    assert row_counts() == populated
    assert broker_messages(broker) == []


def test_a_missing_spec_file_is_exit_2(tmp_path: Path) -> None:
    out = gradq("run", tmp_path / "nope.yaml")
    assert out.code == 2 and "nope.yaml" in out.one_error_line()


# -------------------------------------------------------------------- misc
def test_every_command_has_help() -> None:
    assert gradq("--help").code == 0
    assert gradq("--version").code == 0
    for name, command in main.commands.items():
        assert gradq(name, "--help").code == 0, name
        for sub in getattr(command, "commands", {}):
            assert gradq(name, sub, "--help").code == 0, (name, sub)


def test_spec_schema_prints_the_json_schema_an_editor_checks_job_files_with() -> None:
    import jsonschema
    import yaml
    from gradq.service.spec import json_schema

    # When a user asks for the schema
    out = gradq("spec", "--schema")
    # Then it is the service's schema, as one JSON document on stdout, nothing else
    assert out.code == 0 and out.stderr == ""
    assert out.stdout == json.dumps(json_schema(), indent=2) + "\n"
    schema = json.loads(out.stdout)
    assert {"data", "model", "optimizer", "training"} <= set(schema["properties"])
    # and an editor's checker accepts every example job file and flags a wrong value
    checker = jsonschema.validators.validator_for(schema)(schema)
    for example in sorted((Path(__file__).parent.parent / "examples").glob("*.yaml")):
        doc = yaml.safe_load(example.read_text())
        errors = [e.message for e in checker.iter_errors(doc)]
        assert errors == [], (example.name, errors)
    assert not checker.is_valid({"training": {"epochs": "many"}})
    # and without --schema it says what is missing (exit 2)
    bare = gradq("spec")
    assert bare.code == 2 and "--schema" in bare.stderr


def test_worker_refuses_a_bad_gpu_list() -> None:
    out = gradq("worker", "--gpus", "zero,one")
    assert out.code == 2 and "--gpus" in out.stderr


def test_json_documents_are_strict_json(db: dict[str, Any]) -> None:
    """No NaN or Infinity tokens, one document, whatever the command."""
    jid, cid = db["train"]["id"], db["report"]["id"]
    for args in (["ls"], ["status", jid], ["results", jid], ["curves", jid], ["datasets"],
                 ["report", cid], ["status", cid]):
        out = gradq(*args, "--json")
        assert out.code == 0, args
        json.loads(out.stdout, parse_constant=_refuse_constant)


def _refuse_constant(token: str) -> None:
    pytest.fail(f"{token} is not JSON")


# ------------------------------------------------------- a comparison's progress
def test_run_of_a_comparison_prints_a_line_per_phase_not_per_child(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GRADQ_MAX_REPLICAS", "1")  # every child runs on its own
    spec = {"kind": "compare", "data": {"dataset": "iris"}, "model": {"hidden": [4]},
            "training": {"epochs": 1}, "device": "cpu",
            "compare": {"optimizers": [{"name": "sgd", "lr": [0.01, 0.1, 0.3]}], "seeds": 3}}
    # When a comparison of 3 tuning runs and 3 final runs runs with its output in a file
    out = gradq("run", write(tmp_path / "grid.json", json.dumps(spec)))
    assert out.code == 0, out.stderr
    # Then standard error has one plain line per phase, none per child
    lines = out.stderr.splitlines()
    assert [ln for ln in lines if "children queued" in ln] == [
        "tuning: 3 children queued", "final runs: 3 children queued"]
    assert not [ln for ln in lines if ln.startswith("child ")]


def test_on_a_terminal_the_children_share_one_line_redrawn_in_place(
        capsys: pytest.CaptureFixture[str]) -> None:
    from gradq.cli.output import Progress

    p = Progress(tty=True)
    for ran in range(50):
        p.child({"child": f"c{ran}", "phase": "final" if ran >= 20 else "tune",
                 "queued": 50 - ran, "ran": ran})
        p({"epoch": 1, "epochs": 2, "step": 3, "steps": 6, "train_loss": 0.5})
    p.done()
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.endswith("\n")  # one line, ended once
    last = err.rstrip("\n").rsplit("\r", 1)[-1].rstrip()
    assert last == "final runs: child 50 of 50 · epoch 1/2  step 3/6  train_loss 0.5"
