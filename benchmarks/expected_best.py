"""The expected best of k trials (the search report's curve) at 600, 1,200 and 10,000 trials.

``service.experiments.report.expected_best`` runs whenever a searched comparison's report
is read, and the dashboard reads a running one every few seconds. It used big-integer
binomials (0.57 s at 600 trials, 7.3 s at 1,200); the log-space sums should take under
50 ms at 10,000 trials, the spec's largest search (issue 19).

    python benchmarks/expected_best.py [--quick] [--repeats N]
"""

from __future__ import annotations

import random

import _common

TARGET_S = 0.05  # at 10,000 trials


def main() -> None:
    from gradq.service.experiments.report import expected_best

    args = _common.parser(__doc__.splitlines()[0]).parse_args()
    sizes = (100, 1_000) if args.quick else (600, 1_200, 10_000)
    repeats = args.repeats or (2 if args.quick else 7)
    rng = random.Random(0)
    times = {}
    for n in sizes:
        values = [rng.lognormvariate(0, 1) for _ in range(n)]
        timing = _common.interleaved({"gradq": lambda v=values: expected_best(v, True)},
                                     repeats, warmup=1)
        times[str(n)] = timing["gradq"]
    largest = times[str(sizes[-1])]["median_s"]
    _common.report("expected_best", {
        "benchmark": "expected_best", "quick": args.quick, "machine": _common.machine(),
        "seconds": times, "target_s_at_10000": TARGET_S,
        "status": _common.verdict(largest, TARGET_S) if not args.quick else "quick run",
    }, args.tag)


if __name__ == "__main__":
    main()
