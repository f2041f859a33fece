#!/usr/bin/env bash
# The GPU checks of issue 7 in one run (at most 7 minutes, stage limits summed; typically
# about 4, on an H100/H200):
#   1. the nn tests on CuPy (each test runs on NumPy and on CuPy; CuPy cases skip without a GPU),
#   2. benchmarks/mlp_step.py, flops.py (FP32, then TF32 with CUPY_TF32=1) and sweep.py on the GPU,
# each figure written as JSON to $OUT (a fresh temporary folder if OUT is unset), with a
# summary of every stage in $OUT/gpu_suite.json.
#
#   benchmarks/gpu_suite.sh            # on the GPU machine, after
#                                      #   pip install --no-index --find-links wheels/ -e .
#   benchmarks/gpu_suite.sh --quick    # anywhere: tiny sizes, NumPy where there is no GPU
#
# A stage that fails or runs past its time limit is recorded and the suite goes on.
set -uo pipefail

cd "$(dirname "$0")/.."
QUICK=""
[[ "${1:-}" == "--quick" ]] && QUICK="--quick"
export OUT="${OUT:-$(mktemp -d -t gradq-gpu-suite.XXXXXX)}"
mkdir -p "$OUT"
export GRADQ_HOME="${GRADQ_HOME:-$(mktemp -d -t gradq-home.XXXXXX)}"
PY="${PYTHON:-python}"

if "$PY" -c "from gradq.nn.backend import gpu_available; import sys; sys.exit(0 if gpu_available() else 1)"; then
    DEVICE=cuda
else
    DEVICE=cpu
    if [[ -z "$QUICK" ]]; then
        echo "gpu_suite: no GPU visible to CuPy; use --quick to run it on the CPU" >&2
        exit 2
    fi
fi
echo "gpu_suite: device $DEVICE, figures in $OUT" >&2
command -v nvidia-smi >/dev/null && nvidia-smi > "$OUT/nvidia-smi.txt" 2>&1

SUMMARY="$OUT/stages.tsv"
: > "$SUMMARY"
stage() {  # stage NAME SECONDS COMMAND...
    local name="$1" limit="$2"
    shift 2
    local start end rc
    start=$(date +%s%N)
    echo "=== $name (limit ${limit}s): $*" >&2
    timeout --kill-after=10 "$limit" "$@" > "$OUT/$name.log" 2>&1
    rc=$?
    end=$(date +%s%N)
    tail -n 25 "$OUT/$name.log" >&2
    printf '%s\t%s\t%s\n' "$name" "$rc" "$(( (end - start) / 1000000 ))" >> "$SUMMARY"
}

# 1. the nn tests (pure array maths, the trainer, batched replicas) on both backends
NN_TESTS=()
for f in tests/test_layers.py tests/test_networks.py tests/test_optimizers.py \
         tests/test_replicas.py tests/test_second_order.py tests/test_linear.py \
         tests/test_pca.py tests/test_svm.py tests/test_conformance.py; do
    [[ -f "$f" ]] && NN_TESTS+=("$f")
done
if [[ -n "$QUICK" ]]; then
    stage nn_tests 120 env GRADQ_TEST_DEVICE="$DEVICE" "$PY" -m pytest -q -x \
        -p no:cacheprovider tests/test_replicas.py -k "sgd or grid_points"
else
    stage nn_tests 170 env GRADQ_TEST_DEVICE="$DEVICE" "$PY" -m pytest -q \
        -p no:cacheprovider -k "not services" "${NN_TESTS[@]}"
fi

# 2. the benchmarks on the device
stage mlp_step 60 "$PY" benchmarks/mlp_step.py --device "$DEVICE" $QUICK
stage flops 40 "$PY" benchmarks/flops.py --device "$DEVICE" $QUICK
if [[ "$DEVICE" == cuda ]]; then
    stage flops_tf32 35 env CUPY_TF32=1 "$PY" benchmarks/flops.py --device cuda --tag _tf32
    stage sweep 80 "$PY" benchmarks/sweep.py --device cuda --repeats 2
else
    stage sweep 120 "$PY" benchmarks/sweep.py --device cpu $QUICK
fi

"$PY" - "$SUMMARY" "$OUT" "$DEVICE" <<'EOF'
import json, sys
from pathlib import Path
summary, out, device = sys.argv[1], Path(sys.argv[2]), sys.argv[3]
stages = [dict(zip(("stage", "exit_code", "seconds"), line.split("\t")))
          for line in Path(summary).read_text().splitlines()]
for s in stages:
    s["exit_code"], s["seconds"] = int(s["exit_code"]), int(s["seconds"]) / 1000
doc = {"device": device, "stages": stages,
       "figures": sorted(p.name for p in out.glob("*.json") if p.name != "gpu_suite.json")}
(out / "gpu_suite.json").write_text(json.dumps(doc, indent=2) + "\n")
print(json.dumps(doc, indent=2))
sys.exit(1 if any(s["exit_code"] for s in stages) else 0)
EOF
