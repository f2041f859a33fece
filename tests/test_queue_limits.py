"""What gradq sets in Celery, and the time limit it accepts at submit (docs/queue.md).

The refusals themselves (one line, exit 2, nothing stored or enqueued) are in the
catalogue of tests/test_bad_inputs.py; here: the broker settings a worker and a client
build, the limit that follows from them, and a job just under it that is accepted.
"""

from __future__ import annotations

import json

import pytest
import yaml
from _cli import invoke
from faultkit import queue_lengths
from gradq.service.celery_app import make_app
from gradq.service.settings import get_settings
from gradq.service.store.db import session_scope
from gradq.service.store.models import Job
from gradq.workers.pool import Member, celery_command


def _conf(monkeypatch: pytest.MonkeyPatch, **env: str) -> dict:
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    return dict(make_app("redis://127.0.0.1:1/0").conf)


def test_acks_late_prefetch_one_reject_on_worker_loss(monkeypatch: pytest.MonkeyPatch) -> None:
    conf = _conf(monkeypatch)
    assert conf["task_acks_late"] is True
    assert conf["worker_prefetch_multiplier"] == 1
    assert conf["task_reject_on_worker_lost"] is True
    assert conf["accept_content"] == ["json"]


@pytest.mark.parametrize("lease, visibility, expected", [
    ("60", "", 86400), ("30000", "", 300000), ("60", "7200", 7200)])
def test_the_visibility_timeout_and_the_longest_time_limit(
        monkeypatch: pytest.MonkeyPatch, lease: str, visibility: str, expected: int) -> None:
    conf = _conf(monkeypatch, GRADQ_LEASE_S=lease, GRADQ_BROKER_VISIBILITY_S=visibility)
    assert conf["broker_transport_options"]["visibility_timeout"] == expected
    assert get_settings().max_time_limit_s == pytest.approx(0.9 * expected)


def test_a_large_pool_turns_events_off(monkeypatch: pytest.MonkeyPatch) -> None:
    member = Member("cpu@h", ("cpu", "auto"), {}, 1)
    on = celery_command(member, "info")
    assert {"--without-gossip", "--without-mingle"} <= set(on)
    assert "--without-heartbeat" not in on
    conf = _conf(monkeypatch)
    assert conf["worker_send_task_events"] and conf["task_send_sent_event"]
    monkeypatch.setenv("GRADQ_WORKER_EVENTS", "0")
    assert "--without-heartbeat" in celery_command(member, "info")
    conf = _conf(monkeypatch)
    assert not conf["worker_send_task_events"] and not conf["task_send_sent_event"]


@pytest.mark.services
def test_a_time_limit_just_under_the_limit_is_accepted(
        redis_url: str, monkeypatch: pytest.MonkeyPatch, tmp_path) -> None:
    monkeypatch.setenv("GRADQ_BROKER_VISIBILITY_S", "100")
    path = tmp_path / "spec.yaml"
    path.write_text(yaml.safe_dump({"data": {"dataset": "iris"}, "model": {"hidden": [4]},
                                    "training": {"epochs": 1, "time_limit_s": 90}}))
    code, out, err = invoke("submit", str(path))
    assert code == 0, err
    job_id = out.strip()
    import redis

    assert sum(queue_lengths(redis.Redis.from_url(redis_url)).values()) == 1
    with session_scope() as s:
        stored = json.loads(s.get(Job, job_id).spec)
    assert stored["training"]["time_limit_s"] == 90
