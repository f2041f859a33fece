"""Faults are shown as what they are (issue 13): the user's bad input is exit 2 with one line;
an unreachable service exit 3; a bug in gradq exit 4, named an internal error, with its
traceback — never disguised as bad usage or as an unreachable database."""

from __future__ import annotations

import pytest
from _cli import invoke
from gradq.cli.main import SHORT_TRACEBACK


def _raise(exc: BaseException, depth: int = 0):  # noqa: ANN202 - a stand-in of any signature
    """A stand-in for a service function that raises ``exc``, ``depth`` calls down."""

    def down(n: int) -> None:
        if n == 0:
            raise exc
        down(n - 1)

    def fake(*_args: object, **_kwargs: object) -> None:
        if depth:
            down(depth)
        raise exc

    return fake


@pytest.mark.parametrize("exc", [KeyError("spec"), IndexError("list index out of range"),
                                 ValueError("operands could not be broadcast together"),
                                 LookupError("a bug's lookup")])
def test_a_bug_is_an_internal_error_with_its_traceback_not_bad_usage(
        monkeypatch: pytest.MonkeyPatch, exc: Exception) -> None:
    # Given a service function with a bug (each of these was exit 2, "bad usage", before)
    monkeypatch.setattr("gradq.service.store.queries.list_jobs", _raise(exc))
    # When a command calls it
    code, out, err = invoke("ls")
    # Then: exit 4, one line naming it an internal error, then the short traceback
    assert code == 4 and out == ""
    lines = err.splitlines()
    assert lines[0].startswith("internal error")
    assert f"{type(exc).__name__}: " in lines[0] and str(exc.args[0]) in lines[0]
    assert "Traceback (most recent call last):" in err
    assert "in fake" in err  # the frame that raised
    frames = [line for line in lines if line.startswith('  File "')]
    assert 1 <= len(frames) <= SHORT_TRACEBACK
    assert "-v" in lines[-1]  # how to see all of it


def test_verbose_shows_the_whole_traceback(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("gradq.service.store.queries.list_jobs", _raise(KeyError("spec"), depth=5))
    code, _, short = invoke("ls")
    code_v, _, whole = invoke("-v", "ls")
    assert code == code_v == 4
    assert short.splitlines()[0] == whole.splitlines()[0]
    frames = [line for line in whole.splitlines() if line.startswith('  File "')]
    assert len(frames) > SHORT_TRACEBACK
    assert any("/cli/" in f and "in ls" in f for f in frames)  # from the command down
    assert "in fake" in whole and "in fake" not in short  # short: the innermost calls only
    assert short.count('  File "') == SHORT_TRACEBACK


def test_a_reader_that_closed_the_pipe_is_not_an_internal_error(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("gradq.service.store.queries.list_jobs",
                        _raise(BrokenPipeError(32, "pipe")))
    code, _, err = invoke("ls")
    assert code == 141 and err == ""  # as `gradq ls | head` ends when head has its lines


def test_an_internal_error_hides_passwords(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("gradq.service.store.queries.list_jobs",
                        _raise(RuntimeError("postgresql://gradq:s3cret@db/gradq broke")))
    code, _, err = invoke("-v", "ls")
    assert code == 4 and "s3cret" not in err and "gradq:***@db" in err


@pytest.mark.parametrize(("variable", "value"), [("GRADQ_LEASE_S", "soon"),
                                                 ("GRADQ_DEVICE", "tpu"),
                                                 ("GRADQ_DATABASE_URL", "nosuchdialect://x")])
def test_a_bad_setting_is_bad_usage_naming_the_variable(monkeypatch: pytest.MonkeyPatch,
                                                        variable: str, value: str) -> None:
    monkeypatch.setenv(variable, value)
    code, out, err = invoke("ls")
    assert code == 2 and out == ""
    assert len(err.strip().splitlines()) == 1 and err.startswith(f"error: {variable}: ")


def test_a_report_of_a_train_job_is_bad_usage() -> None:
    from gradq.service.spec import validate
    from gradq.service.store import create, newjob

    spec = validate({"data": {"dataset": "iris"}})
    job_id = create.create_jobs(newjob.NewJob(spec=spec, kind="train", name=None, seed=0,
                                          optimizer=spec["optimizer"], queue="auto"),
                              dataset=None, priority=0, max_attempts=3)[0]
    code, _, err = invoke("report", job_id)
    assert code == 2 and err.startswith(f"error: job {job_id} is a train job")


def test_db_current_says_unreachable_only_when_it_cannot_connect(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GRADQ_DATABASE_URL", "postgresql+psycopg://gradq:pw@127.0.0.1:1/none")
    code, _, err = invoke("db", "current")
    assert code == 3 and "unreachable" in err and "pw@" not in err


def test_db_current_reports_an_unreadable_sqlite_path_as_unreachable(tmp_path) -> None:  # noqa: ANN001
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("GRADQ_DATABASE_URL", f"sqlite:///{blocker}/gradq.db")
        code, _, err = invoke("db", "current")
    assert code == 3 and "unreachable" in err and "check the path" in err


def test_db_current_shows_a_fault_after_connecting_as_what_it_is(
        monkeypatch: pytest.MonkeyPatch) -> None:
    # Given a database that answers, and a bug in reading its version
    monkeypatch.setattr("gradq.service.store.db._read_version",
                        _raise(RuntimeError("alembic_version has 3 columns")))
    code, _, err = invoke("db", "current")
    # Then it is not called unreachable (it was, exit 3, before)
    first = err.splitlines()[0]
    assert code == 4 and "unreachable" not in first
    assert first.startswith("internal error") and "alembic_version has 3 columns" in first


def test_db_current_on_a_reachable_database() -> None:
    from gradq.service.store.db import head_revision

    code, out, _ = invoke("db", "current")
    assert code == 0 and out.strip() == f"current base, head {head_revision()}"
