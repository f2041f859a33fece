#!/usr/bin/env bash
# Every CPU figure of benchmarks/README.md's table in one run, for a quiet machine (load
# average under 1): the lead runs it once and pastes the table it prints into the README.
# Each stage has a time limit (1,045 s summed), and waits for the load to fall under 0.5 first
# (at most 240 s a stage); each figure is printed with
# the load average its benchmark recorded. Figures go to $OUT (a fresh folder if unset),
# the markdown table to stdout, the stages' logs to $OUT/<stage>.log.
#
#   benchmarks/quiet_run.sh            # needs PostgreSQL and Redis for queue and ingest
#   benchmarks/quiet_run.sh --quick    # tiny sizes, a minute or two: checks the script
set -uo pipefail

cd "$(dirname "$0")"
QUICK=""
[[ "${1:-}" == "--quick" ]] && QUICK="--quick"
export OUT="${OUT:-$(mktemp -d -t gradq-quiet-run.XXXXXX)}"
mkdir -p "$OUT"
PY="${PYTHON:-python}"
: > "$OUT/stages.tsv"
START=$(date +%s)

# Before each stage, wait (at most QUIET_WAIT_S, 240 s by default; not with --quick) until
# the 1-minute load average is under QUIET_LOAD (0.5): on two cores a benchmark's own load
# lingers in the average for a minute or two, and a benchmark's warm-up adds to it, so a
# stage that starts at 0.9 records a load above 1 beside its figures.
QUIET_LOAD="${QUIET_LOAD:-0.5}"
QUIET_WAIT_S="${QUIET_WAIT_S:-240}"
settle() {
    [[ -n "$QUICK" ]] && return
    local waited=0
    while awk -v l="$(cut -d' ' -f1 /proc/loadavg)" -v q="$QUIET_LOAD" 'BEGIN{exit !(l >= q)}' \
            && (( waited < QUIET_WAIT_S )); do
        sleep 5
        waited=$(( waited + 5 ))
    done
}

stage() {  # stage NAME SECONDS SCRIPT ARGS...
    local name="$1" limit="$2" script="$3"
    shift 3
    local before after t0 rc
    settle
    before=$(cut -d' ' -f1 /proc/loadavg 2>/dev/null || echo "?")
    t0=$(date +%s)
    echo "quiet_run: $name (at most ${limit} s, load $before)" >&2
    timeout "$limit" "$PY" "$script" $QUICK "$@" --tag "${name#"${script%.py}"}" \
        > "$OUT/$name.log" 2>&1
    rc=$?
    after=$(cut -d' ' -f1 /proc/loadavg 2>/dev/null || echo "?")
    printf '%s\t%s\t%s\t%s\t%s\n' "$name" "$rc" "$(( $(date +%s) - t0 ))" "$before" "$after" \
        >> "$OUT/stages.tsv"
}

# name        limit  script            arguments (one BLAS/torch thread where the README says so)
full() { [[ -z "$QUICK" ]] && echo "$@"; }  # the quiet run's sizes; --quick keeps its own
stage run_wall      35 run_wall.py      $(full --repeats 5)
stage cli_latency   45 cli_latency.py
stage dataset_load  25 dataset_load.py
stage ui            75 ui.py
stage job_epoch     90 job_epoch.py     --threads 1 $(full --repeats 3)
stage search        50 search.py        --threads 1 $(full --repeats 1)
stage search_30    180 search.py        --threads 1 $(full --repeats 1 --epochs 30)
stage mlp_step      30 mlp_step.py      --device cpu
stage flops         30 flops.py         --device cpu
stage sweep         80 sweep.py         --device cpu $(full --samples 6000 --repeats 1)
stage queue_latency 45 queue_latency.py
stage ingest        90 ingest.py
stage expected_best 30 expected_best.py
stage suite_mini   240 suite_mini.py    # limits: 1,045 s in all, plus the waits

echo "quiet_run: $(( $(date +%s) - START )) s in all; figures in $OUT" >&2
"$PY" quiet_table.py "$OUT"
