"""Jobs survive faults across several hosts (docs/guarantees.md; issue 20, "Beyond one
machine"): real ``gradq worker --cpu`` pools, each on a simulated host of its own (a network
namespace joined to the real Redis and PostgreSQL through its own link, tests/cluster.py),
partitioned, paused, killed and run with clocks minutes apart while a burst of small jobs
and an optimizer comparison run on them.

Every test, whatever its fault, checks the same things: each job ends once (succeeded), the
comparison settles, each job's curves hold every expected step exactly once (none twice,
none missing), and it prints one ``cluster-figures:`` line (jobs, attempts, hand-overs,
seconds to hand over and to recover) for ``pytest -s`` or ``-rA``. Leases are 3 s.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import sqlalchemy as sa
from cluster import Cluster, Host, require_faketime, require_netns
from faultkit import (
    FINISHED,
    LEASE_S,
    blobs_file,
    engine,
    submit_spec,
    wait_for,
    write_spec,
)

pytestmark = [pytest.mark.services, pytest.mark.slow]

STEPS_PER_EPOCH = 6  # 90 training samples of the small blobs file, in batches of 16
EPOCHS = 40
LOG_EVERY = 3
BURST = 12  # single jobs, besides a comparison of 2 optimizers × 2 seeds
LAST_STEP = EPOCHS * STEPS_PER_EPOCH
EXPECTED_STEPS = list(range(0, LAST_STEP + 1, LOG_EVERY))
OUTAGE_S = 2 * LEASE_S  # longer than a lease and a sweep: the host's jobs are handed over


@pytest.fixture
def ctx(pg_url: str, redis_url: str, tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> SimpleNamespace:
    """A migrated per-test PostgreSQL database, an empty Redis database, the lease, and the
    spec files of the burst and of the comparison."""
    require_netns()
    from gradq.service.store.db import upgrade

    upgrade(pg_url)
    monkeypatch.setenv("GRADQ_LEASE_S", str(LEASE_S))
    monkeypatch.delenv("GRADQ_FAILPOINTS", raising=False)
    data = blobs_file(tmp_path / "small.npz")
    job = {"device": "cpu", "data": {"dataset": str(data)}, "model": {"hidden": [16]},
           "optimizer": {"name": "adam", "lr": 0.01},
           "training": {"epochs": EPOCHS, "batch_size": 16, "log_every": LOG_EVERY,
                        "checkpoint_every": 1}}
    compare = {**job, "kind": "compare",
               "compare": {"optimizers": ["sgd", "adam"], "seeds": 2}}
    return SimpleNamespace(pg=pg_url, redis=redis_url, tmp=tmp_path,
                           job=write_spec(tmp_path / "job.json", job),
                           compare=write_spec(tmp_path / "compare.json", compare))


# ---------------------------------------------------------------------------- reads
def rows(ids: list[str]) -> dict[str, dict[str, Any]]:
    """id → {status, worker, attempts, error} of each job."""
    from gradq.service.store.models import Job

    with engine().connect() as c:
        got = c.execute(sa.select(Job.id, Job.status, Job.worker, Job.attempts, Job.error)
                        .where(Job.id.in_(ids))).all()
    return {r.id: {"status": getattr(r.status, "value", r.status), "worker": r.worker,
                   "attempts": r.attempts, "error": r.error} for r in got}


def on(host: str, worker: str | None) -> bool:
    """Whether a job's ``worker`` column names a process of ``host``
    (``cpu@<host>-<pool pid>-<pid>``)."""
    return bool(worker) and f"@{host}-" in worker


def metric_steps(ids: list[str]) -> dict[tuple[str, str], list[int]]:
    """(job, metric) → every stored step, in order, duplicates included."""
    from gradq.service.store.models import Metric

    out: dict[tuple[str, str], list[int]] = {}
    with engine().connect() as c:
        for r in c.execute(sa.select(Metric.job_id, Metric.name, Metric.step)
                           .where(Metric.job_id.in_(ids))
                           .order_by(Metric.job_id, Metric.name, Metric.step)):
            out.setdefault((r.job_id, r.name), []).append(r.step)
    return out


def results(ids: list[str]) -> dict[str, int]:
    """id → how many result rows it has (one, once it succeeded)."""
    from gradq.service.store.models import Result

    with engine().connect() as c:
        got = c.execute(sa.select(Result.job_id, sa.func.count()).where(
            Result.job_id.in_(ids)).group_by(Result.job_id)).all()
    return {r[0]: int(r[1]) for r in got}


# ----------------------------------------------------------------------------- work
@dataclass
class Work:
    """The jobs of one test: the burst's single jobs and a comparison with its children."""

    singles: list[str]
    parent: str
    children: list[str]
    extra: list[str] = field(default_factory=list)

    @property
    def runs(self) -> list[str]:
        """Every job that trains (the comparison itself does not)."""
        return [*self.singles, *self.children, *self.extra]


def submit_work(ctx: SimpleNamespace, compare_on: str, singles_on: dict[str, int]) -> Work:
    """The comparison first, to ``compare_on``'s own queue (its children then train there
    together, so the fault hits them), then the burst: ``singles_on[host]`` jobs to each
    named host's own queue and the rest to the common one."""
    parent, *children = submit_spec(ctx.compare, queue=compare_on)
    assert len(children) == 4
    singles = []
    for host, n in singles_on.items():
        singles += [submit_spec(ctx.job, queue=host)[0] for _ in range(n)]
    singles += [submit_spec(ctx.job)[0] for _ in range(BURST - len(singles))]
    return Work(singles, parent, children)


@dataclass
class Watch:
    """What happened to the jobs that the fault hit, timed from the fault (monotonic s)."""

    fault_at: float
    hit: list[str]
    swept_s: float | None = None
    resumed_s: float | None = None
    healed_at: float | None = None
    done_s: float | None = None
    held_at_heal: set[tuple[str, int]] = field(default_factory=set)
    claimed_after_heal: set[tuple[str, int]] = field(default_factory=set)


def wait_running_on(host: Host, ids: list[str], timeout: float = 60) -> list[str]:
    """Wait until ``host`` runs some of ``ids`` and has stored a curve point of one; return
    those it runs."""
    def busy() -> list[str] | None:
        mine = [j for j, r in rows(ids).items() if r["status"] == "running"
                and on(host.name, r["worker"])]
        return mine if mine and metric_steps(mine) else None

    return wait_for(busy, timeout, f"{host.name} to run a job",
                    on_timeout=lambda: host.pool.tail() if host.pool else "")


def watch(work: Work, victim: Host, watch_: Watch, *, heal: Callable[[], None] | None,
          heal_after_s: float, cluster: Cluster, timeout: float = 90) -> None:
    """Poll the jobs until all have finished (a probe added at the heal included): note when
    no job the fault hit was held by the victim any more, and when each was running
    elsewhere (or done); call ``heal`` ``heal_after_s`` after the fault."""
    deadline = time.monotonic() + timeout
    while True:
        now = time.monotonic()
        st = rows([*work.runs, work.parent])  # a probe added at the heal is counted too
        if watch_.swept_s is None and not any(
                st[j]["status"] == "running" and on(victim.name, st[j]["worker"])
                for j in watch_.hit):
            watch_.swept_s = now - watch_.fault_at  # taken from the victim
        if watch_.resumed_s is None and all(
                st[j]["status"] in FINISHED or (st[j]["status"] == "running"
                                                and not on(victim.name, st[j]["worker"]))
                for j in watch_.hit):
            watch_.resumed_s = now - watch_.fault_at  # running again elsewhere, or done
        held = {(j, r["attempts"]) for j, r in st.items()
                if r["status"] == "running" and on(victim.name, r["worker"])}
        if heal is not None and watch_.healed_at is None and now - watch_.fault_at >= heal_after_s:
            watch_.held_at_heal = held
            heal()
            watch_.healed_at = time.monotonic()
        elif watch_.healed_at is not None:  # a run (job, attempt) the victim claimed anew
            watch_.claimed_after_heal |= held - watch_.held_at_heal
        if all(r["status"] in FINISHED for r in st.values()) and (
                heal is None or watch_.healed_at is not None):
            watch_.done_s = now - watch_.fault_at
            return
        if now > deadline:
            counts: dict[str, int] = {}
            for r in st.values():
                counts[r["status"]] = counts.get(r["status"], 0) + 1
            raise AssertionError(f"jobs unfinished after {timeout} s: {counts}\n"
                                 + "\n".join(p.tail() for p in cluster.pools()))
        time.sleep(0.1)


# --------------------------------------------------------------------------- checks
def check_exactly_once(work: Work, *, name: str, watch_: Watch | None = None,
                       wall_s: float, no_handover: bool = False) -> dict[str, dict[str, Any]]:
    """Every job succeeded once with gap-free, repeat-free curves; the comparison settled.
    Print the figures line; return the rows."""
    st = rows([*work.runs, work.parent])
    bad = {j: (r["status"], r["error"]) for j, r in st.items() if r["status"] != "succeeded"}
    assert not bad, bad
    assert results(work.runs) == {j: 1 for j in work.runs}
    steps = metric_steps(work.runs)
    assert {j for j, _ in steps} == set(work.runs), "a job stored no curve"
    metrics = {j: {m for jj, m in steps if jj == j} for j in work.runs}
    assert all(m == metrics[work.runs[0]] for m in metrics.values()), metrics  # none missing
    assert {"train_loss", "val_loss"} <= metrics[work.runs[0]], metrics
    for (job, metric), got in steps.items():
        assert got == EXPECTED_STEPS, (job, metric, got)
    attempts = sum(st[j]["attempts"] for j in work.runs)
    handovers = sum(st[j]["attempts"] - 1 for j in work.runs)
    if no_handover:
        lost = {j: (r["attempts"], r["error"]) for j, r in st.items()
                if (j in work.runs and r["attempts"] != 1) or r["error"]}
        assert not lost, lost
    figures = [f"test={name}", f"jobs={len(work.runs)}+1 comparison", f"attempts={attempts}",
               f"hand-overs={handovers}", f"wall={wall_s:.1f}s"]
    if watch_ is not None:
        def secs(value: float | None) -> str:
            return "never" if value is None else f"{value:.1f}s"

        figures += [f"hit={len(watch_.hit)}", f"swept-after={secs(watch_.swept_s)}",
                    f"resumed-after={secs(watch_.resumed_s)}",
                    f"done-after-fault={secs(watch_.done_s)}"]
        if watch_.healed_at is not None:
            figures.append(f"recover-after-heal="
                           f"{watch_.done_s - (watch_.healed_at - watch_.fault_at):.1f}s")
            figures.append(f"victim-runs-after-heal={len(watch_.claimed_after_heal)}")
    print("cluster-figures: " + " ".join(figures))
    return st


# ------------------------------------------------------------------------ scenarios
def fault_scenario(ctx: SimpleNamespace, name: str, fault: Callable[[Host], None],
                   heal: Callable[[Host], None] | None) -> None:
    """Two hosts run the work; ``fault`` hits the one running the comparison, and
    ``heal`` (if any) undoes it after :data:`OUTAGE_S`. The jobs it ran are handed over and
    everything ends once; a healed host takes work again."""
    t0 = time.monotonic()
    with Cluster(["gqa", "gqb"], ctx.tmp) as cluster:
        victim = cluster["gqa"]
        cluster.start(ctx.pg, ctx.redis)
        work = submit_work(ctx, compare_on=victim.name, singles_on={})
        hit = wait_running_on(victim, work.runs)
        fault(victim)
        w = Watch(fault_at=time.monotonic(), hit=hit)
        probe: list[str] = []

        def heal_and_probe() -> None:
            assert heal is not None
            heal(victim)
            # work for the victim, were the burst done: its own queue, which only it
            # consumes (until the sweeper publishes the job again, after two leases)
            probe.append(submit_spec(ctx.job, queue=victim.name)[0])
            work.extra.extend(probe)

        watch(work, victim, w, heal=heal_and_probe if heal else None, heal_after_s=OUTAGE_S,
              cluster=cluster)
        st = check_exactly_once(work, name=name, watch_=w, wall_s=time.monotonic() - t0)
        # the hit jobs were taken from the victim once its lease lapsed (its last renewal
        # came at most a heartbeat before the fault), each then run again by whichever
        # host claimed it first
        assert w.swept_s is not None and w.swept_s >= LEASE_S - 1.0, w.swept_s
        for j in hit:
            assert st[j]["attempts"] >= 2, (j, st[j])
        if heal is not None:  # the healed host took work again
            assert w.claimed_after_heal, {j: st[j] for j in probe}


def test_partitioned_host_loses_its_jobs_and_takes_work_again_when_healed(
        ctx: SimpleNamespace) -> None:
    """Link down and connections stalled for two leases, then healed."""
    fault_scenario(ctx, "full-partition", lambda h: h.partition(), lambda h: h.heal())


def test_host_cut_off_from_postgresql_only(ctx: SimpleNamespace) -> None:
    """Its jobs cannot renew their leases and are handed over, though it still reaches
    Redis (and takes messages it cannot claim: the sweeper publishes those jobs again)."""
    fault_scenario(ctx, "postgres-partition", lambda h: h.partition("postgres"),
                   lambda h: h.heal())


def test_host_cut_off_from_redis_only(ctx: SimpleNamespace) -> None:
    """Its jobs keep their leases (PostgreSQL is reachable), so nothing need be handed
    over; they finish, and the host takes work again once it reaches Redis."""
    t0 = time.monotonic()
    with Cluster(["gqa", "gqb"], ctx.tmp) as cluster:
        victim = cluster["gqa"]
        cluster.start(ctx.pg, ctx.redis)
        work = submit_work(ctx, compare_on=victim.name, singles_on={})
        hit = wait_running_on(victim, work.runs)
        victim.partition("redis")
        w = Watch(fault_at=time.monotonic(), hit=hit)
        probe: list[str] = []

        def heal() -> None:
            victim.heal()
            probe.append(submit_spec(ctx.job, queue=victim.name)[0])
            work.extra.extend(probe)

        watch(work, victim, w, heal=heal, heal_after_s=OUTAGE_S, cluster=cluster)
        st = check_exactly_once(work, name="redis-partition", watch_=w,
                                wall_s=time.monotonic() - t0)
        assert w.claimed_after_heal, {j: st[j] for j in probe}  # it took work again


def test_host_paused_past_its_lease_then_woken(ctx: SimpleNamespace) -> None:
    """SIGSTOP of every process of the host for two leases; woken, its writes are refused."""
    fault_scenario(ctx, "sigstop", lambda h: h.pause(), lambda h: h.resume())


def test_host_killed_outright(ctx: SimpleNamespace) -> None:
    """Power loss: off the network (no FIN reaches a server), then every process killed."""
    fault_scenario(ctx, "kill-9", lambda h: h.crash(), None)


def test_hosts_with_skewed_clocks_keep_their_leases(ctx: SimpleNamespace) -> None:
    """One host 5 min ahead, one 5 min behind, one on time: leases are judged on the
    database's clock, so no healthy job is handed over. (Were they judged on a host's clock,
    every heartbeat from the host behind would look 5 min stale to a 3 s lease.)"""
    require_faketime()
    t0 = time.monotonic()
    with Cluster(["gqa", "gqb", "gqc"], ctx.tmp) as cluster:
        ahead, behind = cluster["gqa"], cluster["gqb"]
        cluster.start(ctx.pg, ctx.redis, clocks={ahead.name: "+5m", behind.name: "-5m"})
        for host, offset in ((ahead, 300), (behind, -300)):
            assert host.pool is not None
            assert_clock_moved(host.pool.log(), offset)
        work = submit_work(ctx, compare_on=ahead.name, singles_on={behind.name: 3})
        ids = [*work.runs, work.parent]
        wait_for(lambda: all(r["status"] in FINISHED for r in rows(ids).values()), 90,
                 "every job to finish", interval=0.2,
                 on_timeout=lambda: "\n".join(p.tail() for p in cluster.pools()))
        st = check_exactly_once(work, name="clock-skew", wall_s=time.monotonic() - t0,
                                no_handover=True)
        for host in (ahead, behind):
            assert any(on(host.name, r["worker"]) for r in st.values()), host.name
        logs = "\n".join(p.log() for p in cluster.pools())
        assert "lost its lease" not in logs and "lease lost" not in logs


def assert_clock_moved(log: str, offset_s: float) -> None:
    """The pool's log stamps (Celery's ``[YYYY-MM-DD HH:MM:SS,mmm: ...]``) run
    ``offset_s`` off this host's clock: faketime took."""
    import re
    from datetime import datetime

    stamps = re.findall(r"\[(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d),\d+: ", log)
    assert stamps, log[-2000:]
    seen = datetime.strptime(stamps[-1], "%Y-%m-%d %H:%M:%S")
    off = (seen - datetime.now()).total_seconds()
    assert abs(off - offset_s) < 60, (off, offset_s)
