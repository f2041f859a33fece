"""The failure policy in one place: ``service.failure_policy.decide`` decides retry, fail or
hand over; ``workers.failures`` classifies errors and describes them."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner
from gradq.cli.main import main
from gradq.service.failure_policy import Action, Decision, Failure, decide
from gradq.service.store import leases
from gradq.service.store.db import SchemaError, ServiceUnavailable
from gradq.train import methods
from gradq.workers import failures


def _spec(tmp_path: Path) -> Path:
    p = tmp_path / "s.yaml"
    p.write_text("data: {dataset: iris}\nmodel: {hidden: [4]}\ntraining: {epochs: 2}\n")
    return p


def test_out_of_memory_fails_at_once_with_a_hint(tmp_path: Path,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    # Given a model that does not fit the device
    def too_big(*args: object, **kwargs: object) -> None:
        raise MemoryError("Unable to allocate 512. GiB for an array")

    monkeypatch.setattr(methods.Trainer, "run", too_big)
    # When it runs
    res = CliRunner().invoke(main, ["run", str(_spec(tmp_path)), "--json"])
    # Then it fails once, not retried, with what to change, and the traceback is kept
    assert res.exit_code == 1
    doc = json.loads(res.stdout)
    assert doc["status"] == "failed" and doc["attempts"] == 1
    assert "lower training.batch_size" in doc["error"] and "model.hidden" in doc["error"]
    status = json.loads(CliRunner().invoke(main, ["status", doc["id"], "--json"]).stdout)
    assert "MemoryError" in status["traceback"]


def test_a_bare_memory_error_fails_the_job_with_a_message(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # Given a run that raises MemoryError() with no message at all
    def bare(*args: object, **kwargs: object) -> None:
        raise MemoryError()

    monkeypatch.setattr(methods.Trainer, "run", bare)
    # When it runs under gradq run
    res = CliRunner().invoke(main, ["run", str(_spec(tmp_path)), "--json"])
    # Then the handler itself does not fail: the job ends failed (exit 1, not a usage
    # error's 2) and its error names what happened
    assert res.exit_code == 1, res.output
    doc = json.loads(res.stdout)
    assert doc["status"] == "failed"
    assert doc["error"].startswith("out of memory") and "MemoryError" in doc["error"]


def test_describe_never_fails_on_an_empty_message() -> None:
    assert failures.describe(MemoryError()).endswith("(MemoryError)")
    assert failures.describe(ValueError()) == "ValueError"
    assert failures.describe(RuntimeError("")) == "RuntimeError"
    assert failures.describe(RuntimeError("\n\nboom\nmore")) == "RuntimeError: \n\nboom\nmore"


def test_a_transient_error_is_retried(tmp_path: Path,
                                      monkeypatch: pytest.MonkeyPatch) -> None:
    # Given a database blip in the middle of the first attempt only
    real = methods.Trainer.run
    calls: list[int] = []

    def blip_once(self: methods.Trainer, *args: object, **kwargs: object) -> object:
        calls.append(1)
        if len(calls) == 1:
            raise ServiceUnavailable("database postgresql://u:***@h/db is unreachable")
        return real(self, *args, **kwargs)

    monkeypatch.setattr(methods.Trainer, "run", blip_once)
    monkeypatch.setattr("gradq.workers.local.time.sleep", lambda s: None)
    res = CliRunner().invoke(main, ["run", str(_spec(tmp_path)), "--json"])
    # Then the job went back to the queue and ran again: two attempts, one result
    doc = json.loads(res.stdout)
    assert res.exit_code == 0 and doc["status"] == "succeeded" and doc["attempts"] == 2
    assert len(calls) == 2


def test_out_of_attempts_a_transient_error_fails(tmp_path: Path,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GRADQ_MAX_ATTEMPTS", "1")

    def blip(*args: object, **kwargs: object) -> None:
        raise ConnectionError("reset by peer")

    monkeypatch.setattr(methods.Trainer, "run", blip)
    res = CliRunner().invoke(main, ["run", str(_spec(tmp_path)), "--json"])
    doc = json.loads(res.stdout)
    assert res.exit_code == 1 and doc["status"] == "failed"
    assert "gave up after 1 attempts" in doc["error"]


def test_with_retries_backs_off_then_succeeds(monkeypatch: pytest.MonkeyPatch) -> None:
    sleeps: list[float] = []
    monkeypatch.setattr(failures.time, "sleep", sleeps.append)
    calls = iter([ServiceUnavailable("down"), ServiceUnavailable("down"), "ok"])

    def flaky() -> str:
        v = next(calls)
        if isinstance(v, Exception):
            raise v
        return v

    assert failures.with_retries(flaky, deadline_s=60, what="x") == "ok"
    assert sleeps == [0.25, 0.5]  # exponential backoff


def test_with_retries_never_retries_a_lost_lease_or_a_bug() -> None:
    def lost() -> None:
        raise leases.LeaseLost("gone")

    with pytest.raises(leases.LeaseLost):
        failures.with_retries(lost, deadline_s=60, what="x")

    def bug() -> None:
        raise KeyError("k")

    with pytest.raises(KeyError):
        failures.with_retries(bug, deadline_s=60, what="x")


def test_describe_says_what_to_do() -> None:
    assert "lower training.batch_size" in failures.describe(MemoryError("x"))
    assert failures.describe(ValueError("model.output: softmax needs …")).startswith("model")
    assert failures.describe(RuntimeError("boom")) == "RuntimeError: boom"


# What the policy decides, for every kind of failure, with attempts left and used up:
# (failure, attempts, max_attempts) → (action, stored error)
DECISIONS = [
    (Failure.PERMANENT, 1, 3, Action.FAIL, "boom"),
    (Failure.PERMANENT, 3, 3, Action.FAIL, "boom"),
    (Failure.TRANSIENT, 1, 3, Action.RETRY, "boom"),
    (Failure.TRANSIENT, 2, 3, Action.RETRY, "boom"),
    (Failure.TRANSIENT, 3, 3, Action.FAIL, "boom (gave up after 3 attempts)"),
    (Failure.LAPSED, 1, 2, Action.RETRY, "boom"),
    (Failure.LAPSED, 2, 2, Action.FAIL, "worker lost 2 times; gave up after 2 attempts"),
    (Failure.LEASE_LOST, 1, 3, Action.ABANDON, None),
    (Failure.LEASE_LOST, 3, 3, Action.ABANDON, None),
]


@pytest.mark.parametrize(("failure", "attempts", "max_attempts", "action", "error"), DECISIONS)
def test_decide(failure: Failure, attempts: int, max_attempts: int, action: Action,
                error: str | None) -> None:
    assert decide(failure, "boom", attempts, max_attempts) == Decision(action, error)


def test_the_decision_table_covers_every_failure() -> None:
    assert {row[0] for row in DECISIONS} == set(Failure)


@pytest.mark.parametrize(("exc", "failure"), [
    (leases.LeaseLost("gone"), Failure.LEASE_LOST),
    (ServiceUnavailable("database down"), Failure.TRANSIENT),
    (ConnectionError("reset by peer"), Failure.TRANSIENT),
    (TimeoutError(), Failure.TRANSIENT),
    (MemoryError(), Failure.PERMANENT),  # the same batch would not fit again
    (ValueError("data.task: iris is a classification dataset"), Failure.PERMANENT),
    (SchemaError("run gradq db upgrade"), Failure.PERMANENT),
    (KeyError("a bug"), Failure.PERMANENT),
])
def test_classify(exc: BaseException, failure: Failure) -> None:
    assert failures.classify(exc) is failure


def test_a_job_whose_worker_lapsed_too_often_fails_by_the_same_policy(
        tmp_path: Path) -> None:
    # Given a job whose only attempt's worker stopped renewing its lease
    from gradq.service import submit
    from gradq.service.store import sweeper
    from gradq.service.store.db import session_scope
    from gradq.service.store.models import Job

    [job_id] = submit.create(submit.prepare(_spec(tmp_path)))
    with session_scope() as s:
        s.get(Job, job_id).max_attempts = 1
    assert leases.claim(job_id, "w1") is not None
    # When the sweeper finds its lease lapsed
    published = sweeper.sweep(lease_s=0.0)
    # Then it is not queued again, and the policy's message is what the user reads
    assert published == []
    doc = json.loads(CliRunner().invoke(main, ["status", job_id, "--json"]).stdout)
    assert doc["status"] == "failed"
    assert doc["error"] == "worker lost 1 times; gave up after 1 attempts"
