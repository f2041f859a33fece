"""Shared test helpers: driving the CLI in process (click's CliRunner), writing and
validating specs, and running a comparison's children here the way ``gradq run`` does."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from gradq.cli.main import main


def invoke(*args: Any) -> tuple[int, str, str]:
    """Run ``gradq ARGS`` (success not required): (exit code, stdout, stderr)."""
    result = CliRunner().invoke(main, [str(a) for a in args], catch_exceptions=False)
    return result.exit_code, result.stdout, result.stderr


def cli(*args: str) -> str:
    """Run ``gradq ARGS``; assert it succeeded; return its standard output."""
    result = CliRunner().invoke(main, list(args), catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return result.stdout


def cli_json(*args: str) -> Any:
    """Run ``gradq ARGS --json`` and parse its one JSON document."""
    return json.loads(cli(*args, "--json"))


def write_spec(tmp_path: Path, doc: dict[str, Any], name: str = "spec.json") -> Path:
    """Write a spec document to a JSON file in ``tmp_path``."""
    path = tmp_path / name
    path.write_text(json.dumps(doc))
    return path


def make_spec(dataset: str, **sections: Any) -> dict[str, Any]:
    """A validated spec in float64: ``make_spec("digits", model={"hidden": [8]})``."""
    from gradq.service.spec import validate

    raw: dict[str, Any] = {"data": {"dataset": dataset}, "dtype": "float64", "seed": 0}
    for key, value in sections.items():
        raw[key] = {**raw.get(key, {}), **value} if isinstance(value, dict) else value
    return validate(raw)


def run_all(parent: str) -> None:
    """Run every queued child of ``parent`` in this process until none is left (a grid's
    final runs are queued when its tuning runs are done)."""
    from gradq.service.store.create import queued_children
    from gradq.workers.runner import execute

    while todo := queued_children(parent):
        for job_id in todo:
            execute(job_id, worker="test-local")


def private_redis_db(monkeypatch: pytest.MonkeyPatch, db: int) -> Iterator[str]:
    """For a ``broker`` fixture: the real Redis on database ``db`` of a module's own, emptied
    before and after, as ``GRADQ_BROKER_URL``. Other suites run workers on conftest's
    ``redis_url`` database, and a worker there would take the messages a test looks for."""
    import redis
    from conftest import REDIS_URL, need_service

    need_service("Redis", "127.0.0.1", 6379)
    url = REDIS_URL.rsplit("/", 1)[0] + f"/{db}"
    client = redis.Redis.from_url(url)
    client.flushdb()
    monkeypatch.setenv("GRADQ_BROKER_URL", url)
    yield url
    client.flushdb()
    client.close()


@contextlib.contextmanager
def serve_ui(home: Path, port: int) -> Iterator[str]:
    """``gradq ui --port PORT`` over the SQLite database of ``home``, in a process of its
    own, answering before the block starts; its URL. Fails the test if it does not start."""
    env = {**os.environ, "GRADQ_HOME": str(home)}
    env.pop("GRADQ_DATABASE_URL", None)
    gradq = shutil.which("gradq") or sys.executable
    argv = [gradq] if gradq != sys.executable else [sys.executable, "-m", "gradq.cli.main"]
    proc = subprocess.Popen([*argv, "ui", "--port", str(port)], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                urllib.request.urlopen(url + "/api/jobs", timeout=2).read()
                break
            except OSError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    proc.kill()
                    pytest.fail(f"gradq ui did not start: {proc.stderr.read()}")
                time.sleep(0.2)
        yield url
    finally:
        proc.terminate()
        proc.wait(10)
