"""Several worker hosts on one machine, for the cluster fault suite (tests/test_cluster.py).

Each simulated host is a Linux network namespace of its own (``gq-<pid>-<host>``), joined to
the root namespace by a veth pair on a /30 of 198.18.0.0/15 (the benchmarking range, never
routed anywhere: the root side is ``.1``, the host's side ``.2``, and the namespace has no
other route, so nothing it sends can leave that link). In the root namespace a
:class:`Forwarder` per host and service listens on the root-side address and relays to the
local Redis and PostgreSQL, so each host reaches the real servers only through its own link.

A host runs ``gradq worker --cpu`` under ``ip netns exec`` (a faultkit ``Pool``: one process
group, paused, woken and killed as a whole), optionally with its realtime clock moved by
``faketime``. Faults are made the way a network makes them:

- a full partition takes the host's side of the link down *and* stalls its forwarders:
  established connections are neither reset nor closed, they just stop moving (as through
  a dead switch), and new ones get nowhere; healing restores both, and what was in flight
  moves on;
- a one-sided partition stalls one forwarder only (PostgreSQL, or Redis);
- a dead host is cut off first (so no FIN or RST ever reaches a server, as with a power
  loss) and then every process in its namespace is SIGKILLed.

Everything is torn down when the :class:`Cluster` block ends, pass or fail: processes
killed, forwarders closed, namespaces (and with them the veth pairs) deleted. Leftovers of
a crashed run (names ``gq-<pid>-…`` whose pid is gone) are removed before a new run starts.
Without root or ``ip`` the tests skip, saying why; under ``CI=true`` they fail instead.
"""

from __future__ import annotations

import contextlib
import ipaddress
import os
import re
import shutil
import signal
import socket
import subprocess
import threading
import uuid
from collections.abc import Sequence
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import pytest
from faultkit import LEASE_S, Pool, alive

PREFIX = "gq-"
"""Every namespace this harness makes is named ``gq-<pid of the test process>-<host>``."""

NET = ipaddress.ip_network("198.18.0.0/15")
"""The only addresses used: RFC 2544's benchmarking range."""

SERVICES = {"redis": 6379, "postgres": 5432}


def _ip(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    """Run ``ip ARGS``; raise with its stderr when ``check`` and it fails."""
    out = subprocess.run(["ip", *args], capture_output=True, text=True, timeout=30)
    if check and out.returncode != 0:
        raise RuntimeError(f"ip {' '.join(args)}: {out.stderr.strip()}")
    return out


def require_netns() -> None:
    """Skip (fail under ``CI=true``) unless this process can make network namespaces."""
    reason = None
    if shutil.which("ip") is None:
        reason = "ip(8) is missing (apt-get install iproute2)"
    elif os.geteuid() != 0:
        reason = "network namespaces need root"
    else:
        probe = f"{PREFIX}{os.getpid()}-probe"
        made = _ip("netns", "add", probe, check=False)
        _ip("netns", "del", probe, check=False)
        if made.returncode != 0:
            reason = f"cannot create a network namespace: {made.stderr.strip()}"
    if reason is not None:
        if os.environ.get("CI") == "true":
            pytest.fail(f"{reason}, and CI=true requires it")
        pytest.skip(reason)


def require_faketime() -> None:
    """Skip (fail under ``CI=true``) unless ``faketime`` is installed."""
    if shutil.which("faketime") is None:
        if os.environ.get("CI") == "true":
            pytest.fail("faketime is missing, and CI=true requires it")
        pytest.skip("faketime is missing (apt-get install faketime)")


def _owner(name: str) -> int | None:
    """The test pid in a harness name (``gq-<pid>-…`` or a veth ``gq<pid>…``)."""
    m = re.match(r"gq-?(\d+)", name)
    return int(m.group(1)) if m else None


def clean_leftovers() -> list[str]:
    """Delete the namespaces and veths of earlier runs whose test process is gone (a run
    that crashed before its teardown); return their names. Live runs are left alone."""
    removed = []
    for line in _ip("netns", "list", check=False).stdout.splitlines():
        name = line.split()[0] if line.strip() else ""
        pid = _owner(name) if name.startswith(PREFIX) else None
        if pid is None or pid == os.getpid() or alive(pid):
            continue
        _kill_namespace(name)
        _ip("netns", "del", name, check=False)
        removed.append(name)
    for line in _ip("-o", "link", "show", check=False).stdout.splitlines():
        m = re.match(r"\d+: (gq\d+\w*)[@:]", line)
        if m and (pid := _owner(m.group(1))) and pid != os.getpid() and not alive(pid):
            _ip("link", "del", m.group(1), check=False)
            removed.append(m.group(1))
    return removed


def _kill_namespace(netns: str) -> None:
    """SIGKILL every process inside ``netns``."""
    pids = _ip("netns", "pids", netns, check=False).stdout.split()
    for pid in pids:
        with contextlib.suppress(ProcessLookupError, ValueError):
            os.kill(int(pid), signal.SIGKILL)  # first: a stopped process dies as it is
            os.kill(int(pid), signal.SIGCONT)


def _free_links(count: int) -> list[ipaddress.IPv4Network]:
    """``count`` /30 subnets of 198.18.0.0/15 that no interface uses (two concurrent runs
    must not pick the same one), starting at an offset drawn from this pid."""
    used = set()
    for line in _ip("-o", "-4", "addr", "show", check=False).stdout.splitlines():
        m = re.search(r"inet (\d+\.\d+\.\d+\.\d+)/", line)
        if m and ipaddress.ip_address(m.group(1)) in NET:
            used.add(ipaddress.ip_network(f"{m.group(1)}/30", strict=False))
    subnets = list(NET.subnets(new_prefix=30))
    start = (os.getpid() * 8) % len(subnets)
    out = []
    for k in range(len(subnets)):
        net = subnets[(start + k) % len(subnets)]
        if net not in used:
            out.append(net)
            if len(out) == count:
                return out
    raise RuntimeError("no free /30 left in 198.18.0.0/15")


# ------------------------------------------------------------------------ forwarder
class Forwarder:
    """A TCP relay from ``listen`` to ``target`` that can be stalled and healed.

    Stalled, it moves no byte in either direction on any connection and accepts none
    (the kernel still completes up to a backlog of handshakes, which then hang): what a
    partition looks like to both ends. Nothing is closed or reset. Healed, everything moves
    on where it stopped. :meth:`close` ends every connection (teardown only).
    """

    def __init__(self, listen: tuple[str, int], target: tuple[str, int]) -> None:
        self.target = target
        self.flowing = threading.Event()
        self.flowing.set()
        self.closed = False
        self.sockets: set[socket.socket] = set()
        self.lock = threading.Lock()
        self.server = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.server.bind(listen)
        self.server.listen(64)
        threading.Thread(target=self._accept, daemon=True,
                         name=f"fwd-{listen[0]}:{listen[1]}").start()

    def stall(self) -> None:
        """Stop moving bytes and accepting connections (nothing is closed)."""
        self.flowing.clear()

    def heal(self) -> None:
        """Move everything on again."""
        self.flowing.set()

    def _wait_flowing(self) -> bool:
        """Block while stalled; False once closed."""
        while not self.flowing.wait(0.2):
            if self.closed:
                return False
        return not self.closed

    def _track(self, *socks: socket.socket) -> None:
        """Remember sockets for :meth:`close`."""
        with self.lock:
            self.sockets.update(socks)

    def _accept(self) -> None:
        """Accept connections (not while stalled: they wait in the backlog)."""
        while not self.closed:
            try:
                client, _ = self.server.accept()
            except OSError:
                return
            self._track(client)
            threading.Thread(target=self._connect, args=(client,), daemon=True).start()

    def _connect(self, client: socket.socket) -> None:
        """Join an accepted client to the target once traffic flows; pump both ways."""
        if not self._wait_flowing():
            return
        try:
            upstream = socket.create_connection(self.target, timeout=10)
            upstream.settimeout(None)
        except OSError:
            self._shut(client)
            return
        self._track(upstream)
        for s in (client, upstream):
            s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        threading.Thread(target=self._pump, args=(upstream, client), daemon=True).start()
        self._pump(client, upstream)

    def _pump(self, src: socket.socket, dst: socket.socket) -> None:
        """Copy ``src`` to ``dst`` until either ends; hold the bytes while stalled."""
        try:
            while True:
                data = src.recv(65536)
                if not data or not self._wait_flowing():
                    break
                dst.sendall(data)
        except OSError:
            pass
        self._shut(src)
        self._shut(dst)

    def _shut(self, s: socket.socket) -> None:
        """Shut down and close ``s`` (idempotent)."""
        with contextlib.suppress(OSError):
            s.shutdown(socket.SHUT_RDWR)  # wakes a thread blocked on it
        with contextlib.suppress(OSError):
            s.close()
        with self.lock:
            self.sockets.discard(s)

    def close(self) -> None:
        """Stop listening and end every connection."""
        self.closed = True
        self.flowing.set()
        self._shut(self.server)
        with self.lock:
            socks = list(self.sockets)
        for s in socks:
            self._shut(s)


# ----------------------------------------------------------------------------- hosts
def _via(url: str, address: str) -> str:
    """``url`` with its host replaced by ``address`` (port and the rest kept)."""
    parts = urlsplit(url)
    netloc = parts.netloc.rsplit("@", 1)
    hostport = f"{address}:{parts.port}" if parts.port else address
    netloc[-1] = hostport
    return urlunsplit(parts._replace(netloc="@".join(netloc)))


class Host:
    """One simulated machine: a namespace, its link, its forwarders and its worker pool."""

    def __init__(self, name: str, link: ipaddress.IPv4Network, log_dir: Path) -> None:
        self.name = name
        self.netns = f"{PREFIX}{os.getpid()}-{name}"
        tag = uuid.uuid4().hex[:3]
        self.veth_root = f"gq{os.getpid()}{tag}r"[:15]
        self.veth_host = f"gq{os.getpid()}{tag}h"[:15]
        first, second = list(link.hosts())[:2]
        self.root_addr, self.host_addr = str(first), str(second)
        self.log_dir = log_dir
        self.forwarders: dict[str, Forwarder] = {}
        self.pool: Pool | None = None
        self.partitioned: set[str] = set()

    def create(self) -> None:
        """Make the namespace and its link, and start the forwarders."""
        _ip("netns", "add", self.netns)
        _ip("link", "add", self.veth_root, "type", "veth", "peer", "name", self.veth_host)
        _ip("link", "set", self.veth_host, "netns", self.netns)
        _ip("addr", "add", f"{self.root_addr}/30", "dev", self.veth_root)
        _ip("link", "set", self.veth_root, "up")
        _ip("-n", self.netns, "addr", "add", f"{self.host_addr}/30", "dev", self.veth_host)
        _ip("-n", self.netns, "link", "set", self.veth_host, "up")
        _ip("-n", self.netns, "link", "set", "lo", "up")
        for service, port in SERVICES.items():
            self.forwarders[service] = Forwarder((self.root_addr, port), ("127.0.0.1", port))

    def start(self, db_url: str, broker_url: str, *, env: dict[str, str] | None = None,
              clock: str | None = None, lease_s: float = LEASE_S) -> Pool:
        """Start ``gradq worker --cpu`` in the namespace, reaching the services through
        this host's link; ``clock`` (e.g. ``+5m``) moves its realtime clock."""
        home = self.log_dir / f"home-{self.name}"
        home.mkdir(exist_ok=True)
        pool = Pool(self.name, self.log_dir, lease_s=lease_s,
                    queues=f"cpu,auto,{self.name}",
                    env={"GRADQ_DATABASE_URL": _via(db_url, self.root_addr),
                         "GRADQ_BROKER_URL": _via(broker_url, self.root_addr),
                         "GRADQ_WORKER_HOST": self.name, "GRADQ_HOME": str(home),
                         **(env or {})})
        prefix = ["ip", "netns", "exec", self.netns]
        if clock is not None:
            pool.env["FAKETIME_DONT_FAKE_MONOTONIC"] = "1"
            prefix += ["faketime", "-f", clock]
        pool.args = [*prefix, *pool.args]
        self.pool = pool.start()
        return pool

    # -- faults
    def partition(self, *services: str) -> None:
        """Cut this host off from ``services`` (default: both, with its link down)."""
        services = services or tuple(SERVICES)
        if set(services) == set(SERVICES):
            _ip("-n", self.netns, "link", "set", self.veth_host, "down")
            # the root side keeps its route (linkdown): replies are dropped on the link,
            # never sent anywhere else
            route = _ip("route", "get", self.host_addr).stdout
            assert f"dev {self.veth_root}" in route, route
        for s in services:
            self.forwarders[s].stall()
        self.partitioned |= set(services)

    def heal(self) -> None:
        """Undo :meth:`partition`: the link is up and every forwarder moves again."""
        _ip("-n", self.netns, "link", "set", self.veth_host, "up")
        for s in self.partitioned:
            self.forwarders[s].heal()
        self.partitioned = set()

    def pause(self) -> None:
        """SIGSTOP every process of the host's pool."""
        assert self.pool is not None
        self.pool.pause()

    def resume(self) -> None:
        """SIGCONT every process of the host's pool."""
        assert self.pool is not None
        self.pool.resume()

    def crash(self) -> None:
        """Power loss: off the network first (no FIN or RST reaches a server), then every
        process in the namespace SIGKILLed."""
        self.partition()
        _kill_namespace(self.netns)
        if self.pool is not None:
            self.pool.kill()

    def destroy(self) -> None:
        """Kill everything and delete the namespace (the veth pair goes with it)."""
        try:
            if self.pool is not None:
                self.pool.kill()
        finally:
            _kill_namespace(self.netns)
            for f in self.forwarders.values():
                f.close()
            _ip("netns", "del", self.netns, check=False)
            _ip("link", "del", self.veth_root, check=False)


class Cluster:
    """``names`` hosts, each on its own link; use as a context manager (teardown on exit,
    pass or fail)."""

    def __init__(self, names: Sequence[str], log_dir: Path) -> None:
        require_netns()
        clean_leftovers()
        self.hosts = {n: Host(n, link, log_dir)
                      for n, link in zip(names, _free_links(len(names)), strict=True)}

    def __enter__(self) -> Cluster:
        """Create every host (undoing all of them if one fails)."""
        try:
            for h in self.hosts.values():
                h.create()
        except BaseException:
            self.__exit__()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        """Destroy every host, whatever happens; show the pools' logs after a failure."""
        errors = []
        for h in self.hosts.values():
            try:
                h.destroy()
            except BaseException as e:  # tear down the others whatever happens
                errors.append(e)
        if exc and exc[0] is not None:  # shown with the failing test's output
            for h in self.hosts.values():
                if h.pool is not None:
                    print(h.pool.tail(60))
        if errors:
            raise errors[0]

    def __getitem__(self, name: str) -> Host:
        return self.hosts[name]

    def start(self, db_url: str, broker_url: str, *, clocks: dict[str, str] | None = None,
              ready_timeout: float = 90) -> None:
        """Start every host's pool and wait until all are ready."""
        for name, h in self.hosts.items():
            h.start(db_url, broker_url, clock=(clocks or {}).get(name))
        for h in self.hosts.values():
            assert h.pool is not None
            h.pool.wait_ready(ready_timeout)

    def pools(self) -> list[Pool]:
        """The started pools."""
        return [h.pool for h in self.hosts.values() if h.pool is not None]
