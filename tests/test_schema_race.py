"""A new SQLite database met by several processes at once is migrated once: none of them
fails (a worker pool and a first ``gradq submit`` on a fresh machine do this)."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

SNIPPET = """
import sys, time
from gradq.service.store import queries   # imported before the start line: all race at once
start = float(sys.argv[1])
time.sleep(max(0.0, start - time.time()))
print(len(queries.list_jobs(limit=5)))
"""


@pytest.mark.parametrize("processes", [6])
def test_processes_meeting_a_new_sqlite_file_migrate_it_once(gradq_home: Path,
                                                             processes: int) -> None:
    # Given a GRADQ_HOME with no database yet, and processes released at the same instant
    env = {**os.environ, "GRADQ_HOME": str(gradq_home)}
    env.pop("GRADQ_DATABASE_URL", None)
    start = time.time() + 3.0
    procs = [subprocess.Popen([sys.executable, "-c", SNIPPET, str(start)], env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for _ in range(processes)]
    # When each of them opens the store
    outs = [p.communicate(timeout=120) for p in procs]
    # Then every one of them read it (none saw "table ... already exists")
    for p, (out, err) in zip(procs, outs, strict=True):
        assert p.returncode == 0, err[-800:]
        assert out.strip() == "0"
