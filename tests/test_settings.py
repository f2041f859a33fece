"""Settings from the environment (docs/settings.md) and password hiding: no URL password is ever
printed, whether in a result, a table or an error."""

from __future__ import annotations

from pathlib import Path

import pytest
from _cli import invoke
from gradq.service.settings import Settings, get_settings, redact

VARIABLES = ("GRADQ_DATABASE_URL", "GRADQ_BROKER_URL", "GRADQ_HOME", "GRADQ_DEVICE",
             "GRADQ_LEASE_S", "GRADQ_MAX_ATTEMPTS")
SECRET = "sekrit"


@pytest.fixture
def bare_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """No GRADQ_* variable set; HOME points at a temporary directory."""
    for name in VARIABLES:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    return tmp_path


# ----------------------------------------------------------------- defaults
def test_defaults_follow_the_spec_table(bare_env: Path) -> None:
    s = get_settings()
    assert isinstance(s, Settings)
    assert s.home == bare_env / ".gradq"
    assert s.database_url == f"sqlite:///{bare_env / '.gradq' / 'gradq.db'}"
    assert s.broker_url == "redis://localhost:6379/0"
    assert s.device == "auto"
    assert s.lease_s == 60.0 and isinstance(s.lease_s, float)
    assert s.max_attempts == 3 and isinstance(s.max_attempts, int)


def test_the_environment_overrides_every_default(bare_env: Path,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GRADQ_HOME", "~/elsewhere")
    monkeypatch.setenv("GRADQ_DATABASE_URL", "postgresql+psycopg://u@db:5432/gradq")
    monkeypatch.setenv("GRADQ_BROKER_URL", "redis://broker:6379/3")
    monkeypatch.setenv("GRADQ_DEVICE", "cuda")
    monkeypatch.setenv("GRADQ_LEASE_S", "2.5")
    monkeypatch.setenv("GRADQ_MAX_ATTEMPTS", "7")
    s = get_settings()
    assert s.home == bare_env / "elsewhere"  # ~ is expanded
    assert s.database_url == "postgresql+psycopg://u@db:5432/gradq"
    assert s.broker_url == "redis://broker:6379/3"
    assert (s.device, s.lease_s, s.max_attempts) == ("cuda", 2.5, 7)


def test_the_sqlite_default_follows_gradq_home(bare_env: Path,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GRADQ_HOME", str(bare_env / "h"))
    assert get_settings().database_url == f"sqlite:///{bare_env / 'h' / 'gradq.db'}"


@pytest.mark.parametrize("name", ["GRADQ_DATABASE_URL", "GRADQ_BROKER_URL", "GRADQ_HOME",
                                  "GRADQ_LEASE_S", "GRADQ_MAX_ATTEMPTS"])
def test_an_empty_variable_means_unset(bare_env: Path, monkeypatch: pytest.MonkeyPatch,
                                       name: str) -> None:
    default = get_settings()
    monkeypatch.setenv(name, "")
    assert get_settings() == default


def test_settings_are_read_afresh_each_time(bare_env: Path,
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    assert get_settings().lease_s == 60.0
    monkeypatch.setenv("GRADQ_LEASE_S", "9")
    assert get_settings().lease_s == 9.0


@pytest.mark.parametrize(("name", "raw"), [
    ("GRADQ_DEVICE", "gpu"),
    ("GRADQ_DEVICE", "CUDA"),
    ("GRADQ_LEASE_S", "abc"),
    ("GRADQ_LEASE_S", "0"),
    ("GRADQ_LEASE_S", "-5"),
    ("GRADQ_LEASE_S", "nan"),
    ("GRADQ_LEASE_S", "inf"),
    ("GRADQ_MAX_ATTEMPTS", "0"),
    ("GRADQ_MAX_ATTEMPTS", "2.5"),
    ("GRADQ_MAX_ATTEMPTS", "three"),
])
def test_a_bad_value_is_refused_naming_the_variable(bare_env: Path,
                                                    monkeypatch: pytest.MonkeyPatch,
                                                    name: str, raw: str) -> None:
    monkeypatch.setenv(name, raw)
    with pytest.raises(ValueError, match=name):
        get_settings()


def test_a_bad_value_is_a_usage_error_on_the_cli(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GRADQ_LEASE_S", "soon")
    code, out, err = invoke("ls")
    assert code == 2
    assert out == ""
    assert len(err.strip().splitlines()) == 1
    assert "GRADQ_LEASE_S" in err and "soon" in err


# -------------------------------------------------------------------- redact
@pytest.mark.parametrize(("url", "shown"), [
    ("postgresql+psycopg://u:sekrit@127.0.0.1:5432/x", "postgresql+psycopg://u:***@127.0.0.1:5432/x"),
    ("postgresql://gradq:s%40kr%3Ait@db/gradq", "postgresql://gradq:***@db/gradq"),
    ("postgresql://u:a:b@h/x", "postgresql://u:***@h/x"),
    ("redis://:sekrit@redis:6379/0", "redis://:***@redis:6379/0"),
    ("redis://default:sekrit@redis:6379/0", "redis://default:***@redis:6379/0"),
    ("rediss://:sekrit@redis:6380", "rediss://:***@redis:6380"),
    # a raw "@" in the password: redis-py (urllib) splits at the last "@"
    ("redis://:sek@rit@redis:6379/0", "redis://:***@redis:6379/0"),
])
def test_redact_hides_the_password(url: str, shown: str) -> None:
    assert redact(url) == shown


@pytest.mark.parametrize("url", [
    "sqlite:////home/u/.gradq/gradq.db",
    "sqlite://",
    "postgresql://u@db:5432/gradq",
    "postgresql://db:5432/gradq",
    "redis://localhost:6379/0",
])
def test_redact_leaves_urls_without_a_password_alone(url: str) -> None:
    assert redact(url) == url


def test_redact_finds_every_url_in_a_message() -> None:
    text = ("broker redis://:pw1@r:6379/0 is down; database postgresql://u:pw2@p/x "
            "(and postgresql://p:5432/y) too")
    assert redact(text) == ("broker redis://:***@r:6379/0 is down; database "
                            "postgresql://u:***@p/x (and postgresql://p:5432/y) too")


# ------------------------------------------------------ nothing leaks via the CLI
UNREACHABLE_DB = [
    ("postgresql+psycopg://u:sekrit@127.0.0.1:1/x", "postgresql+psycopg://u:***@127.0.0.1:1/x"),
    ("postgresql+psycopg://u:sek%40rit@127.0.0.1:1/x",
     "postgresql+psycopg://u:***@127.0.0.1:1/x"),
]


def _assert_secret_free(out: str, err: str, *fragments: str) -> None:
    for text in (out, err):
        for f in (SECRET, "sek", "sek%40rit", "sek@rit", *fragments):
            assert f not in text, f"{f!r} leaked: {text!r}"


@pytest.mark.parametrize(("url", "shown"), UNREACHABLE_DB)
@pytest.mark.parametrize("command", [
    ["ls"], ["ls", "--json"], ["status", "abcd1234"], ["results", "abcd1234"],
    ["db", "upgrade"], ["db", "current"], ["datasets"], ["-v", "ls"],
])
def test_an_unreachable_database_is_exit_3_with_the_password_hidden(
        monkeypatch: pytest.MonkeyPatch, url: str, shown: str, command: list[str]) -> None:
    monkeypatch.setenv("GRADQ_DATABASE_URL", url)
    code, out, err = invoke(*command)
    assert code == 3
    assert out == ""
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert shown in lines[0]
    assert "start PostgreSQL" in lines[0]
    _assert_secret_free(out, err)


def test_run_against_an_unreachable_database_hides_the_password(
        monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    spec = tmp_path / "s.yaml"
    spec.write_text("data: {dataset: iris}\ntraining: {epochs: 1}\n")
    monkeypatch.setenv("GRADQ_DATABASE_URL", UNREACHABLE_DB[0][0])
    code, out, err = invoke("run", str(spec), "--json")
    assert code == 3
    assert UNREACHABLE_DB[0][1] in err
    _assert_secret_free(out, err)


@pytest.mark.parametrize(("url", "shown"), [
    ("redis://:sekrit@127.0.0.1:1/0", "redis://:***@127.0.0.1:1/0"),
    ("redis://user:sekrit@127.0.0.1:1/0", "redis://user:***@127.0.0.1:1/0"),
    ("redis://:sek%40rit@127.0.0.1:1/0", "redis://:***@127.0.0.1:1/0"),
    ("redis://:sek@rit@127.0.0.1:1/0", "redis://:***@127.0.0.1:1/0"),
])
def test_an_unreachable_broker_is_exit_3_with_the_password_hidden(
        monkeypatch: pytest.MonkeyPatch, tmp_path: Path, url: str, shown: str) -> None:
    spec = tmp_path / "s.yaml"
    spec.write_text("data: {dataset: iris}\n")
    monkeypatch.setenv("GRADQ_BROKER_URL", url)
    code, out, err = invoke("submit", str(spec))
    assert code == 3
    assert out == ""
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert shown in lines[0] and "start Redis" in lines[0]
    _assert_secret_free(out, err)
    # nothing was stored for a submit that could not be enqueued
    assert invoke("ls", "--json")[1].strip() == "[]"


def test_the_worker_refuses_an_unreachable_broker_without_leaking(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GRADQ_BROKER_URL", "redis://:sekrit@127.0.0.1:1/0")
    code, out, err = invoke("worker", "--cpu")
    assert code == 3
    assert "redis://:***@127.0.0.1:1/0" in err
    _assert_secret_free(out, err)


def test_a_password_in_a_working_database_url_is_never_printed(
        pg_url: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """With trust authentication PostgreSQL ignores the password, so a URL with one works."""
    import sqlalchemy as sa

    url = sa.make_url(pg_url)
    if url.password:
        pytest.skip("the test database URL already has a password")
    with_pw = url.set(password=SECRET).render_as_string(hide_password=False)
    monkeypatch.setenv("GRADQ_DATABASE_URL", with_pw)
    outputs = [invoke("db", "upgrade"), invoke("db", "current")]
    spec = tmp_path / "s.yaml"
    spec.write_text("data: {dataset: iris}\nmodel: {hidden: [4]}\ntraining: {epochs: 1}\n")
    outputs.append(invoke("run", str(spec)))
    outputs.append(invoke("run", str(spec), "--json"))
    outputs.append(invoke("ls"))
    for code, out, err in outputs:
        assert code == 0, err
        _assert_secret_free(out, err)
    assert ":***@" in outputs[0][1]
