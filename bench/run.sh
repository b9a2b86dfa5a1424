#!/usr/bin/env bash
# `make bench`: every contender on this machine, in one run, medians over BENCH_RUNS (3) runs.
#
#   1. tools (/usr/bin/time, valgrind, hyperfine) and the peers' PyPI packages (bench/data/venv)
#   2. data: bench/data/housing-{1m,5m,50k,60k}.csv, repeating data/housing.csv
#   3. the binary the README names, built as users build it: `swift build` -> .build/debug/pipectl
#      (its hot modules are -O in every configuration, see Package.swift)
#   4. a private stack (Tansu on 29092, PostgreSQL on 55452, state in bench/data/stack),
#      a fresh database `bench` in it; stopped again at exit
#   5. bench/harness.py: the measurements (bench/data/raw/measurements.jsonl)
#   6. bench/report.py: bench/results.json and bench/results.md
#
# Knobs (environment): BENCH_RUNS=3, BENCH_LATENCY_RUNS=3, BENCH_LATENCY_SECONDS=60,
# BENCH_SKIP=copy,copy_pipectl_table,e2e,e2e_init,seed,consume,peer_a,peer_b,mem5m,mem5m_init,latency,profile,plan
# (steps to leave out),
# BENCH_KAFKA_PORT=29092, BENCH_PG_PORT=55452.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
DATA=$ROOT/bench/data
START=$(date +%s)
mkdir -p "$DATA"
SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO=sudo

log() { echo "[bench $(date +%T)] $*" >&2; }

# ---------------------------------------------------------------- 1. tools and peers
missing=""
[ -x /usr/bin/time ] || missing="$missing time"
command -v valgrind >/dev/null || missing="$missing valgrind"
command -v psql >/dev/null || missing="$missing postgresql-client"
if [ -n "$missing" ]; then
    log "installing Debian packages:$missing"
    $SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq $missing >/dev/null
fi
if ! command -v hyperfine >/dev/null; then
    # Optional: without it `pipectl plan` is timed with a plain loop.
    log "installing hyperfine (optional)"
    { $SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq hyperfine; } >/dev/null 2>&1 \
        || log "hyperfine not available; plan timings use a loop"
fi

REQS=$ROOT/bench/requirements.txt
VENV=$DATA/venv
if ! cmp -s "$REQS" "$VENV/.installed" 2>/dev/null; then
    log "installing the peers' packages into $VENV"
    rm -rf "$VENV"
    if ! python3 -m venv "$VENV" 2>/dev/null; then
        python3 -m pip --version >/dev/null 2>&1 || { $SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq python3-pip >/dev/null; }
        $SUDO apt-get install -y -qq python3-venv >/dev/null 2>&1 || true
        rm -rf "$VENV"
        python3 -m venv "$VENV"
    fi
    "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check -r "$REQS"
    cp "$REQS" "$VENV/.installed"
fi
export BENCH_PY=$VENV/bin/python

# ---------------------------------------------------------------- 2. data
# make_csv OUT ROWS [ids]: data/housing.csv's rows repeated until ROWS data rows (header kept);
# with `ids`, each row also gets a record number (for \copy into pipectl's table definition).
make_csv() {
    local out=$1 rows=$2 ids=${3:-}
    if [ -f "$out" ] && [ "$(wc -l < "$out")" -eq $((rows + 1)) ]; then return; fi
    log "generating $out ($rows rows)"
    awk -v N="$rows" -v IDS="$ids" '
        NR == 1 { print (IDS ? $0 ",_pipectl_record" : $0); next }
        NF > 0 { a[n++] = $0 }
        END { for (i = 0; i < N; i++) print (IDS ? a[i % n] "," (i + 1) : a[i % n]) }' \
        "$ROOT/data/housing.csv" > "$out.tmp"
    mv "$out.tmp" "$out"
}
make_csv "$DATA/housing-1m.csv" 1000000
make_csv "$DATA/housing-1m-ids.csv" 1000000 ids
make_csv "$DATA/housing-5m.csv" 5000000
make_csv "$DATA/housing-50k.csv" 50000
LAT_SECONDS=${BENCH_LATENCY_SECONDS:-60}
make_csv "$DATA/housing-$((LAT_SECONDS))k.csv" $((LAT_SECONDS * 1000))

# ---------------------------------------------------------------- 3. the README's binary
# Users run what the README names; the benchmark measures that very binary, not a build of its own.
BENCH_BINARY=${BENCH_BINARY:-.build/debug/pipectl}
log "building $BENCH_BINARY (swift build --product pipectl)"
if ! swift build --product pipectl > "$DATA/build.log" 2>&1; then
    tail -n 30 "$DATA/build.log" >&2
    log "build failed (full log: bench/data/build.log)"
    exit 1
fi
tail -n 1 "$DATA/build.log" >&2
export PIPECTL=$ROOT/$BENCH_BINARY

# ---------------------------------------------------------------- 4. private stack
export PIPECTL_STATE_DIR=$DATA/stack
export PIPECTL_PROJECT_DIR=$ROOT
export PIPECTL_KAFKA_PORT=${BENCH_KAFKA_PORT:-29092}
export PIPECTL_PG_PORT=${BENCH_PG_PORT:-55452}
stack_down() { "$PIPECTL" dev down >&2 || true; }
trap stack_down EXIT
# A fresh broker every run (Tansu keeps topics in memory only).
"$PIPECTL" dev down >/dev/null 2>&1 || true
eval "$("$PIPECTL" dev up | tee /dev/stderr | grep '^export ')"
psql "$DATABASE_URL" -qX -v ON_ERROR_STOP=1 -c 'DROP DATABASE IF EXISTS bench WITH (FORCE)' -c 'CREATE DATABASE bench' >&2
export DATABASE_URL=${DATABASE_URL%/*}/bench
export KAFKA_BROKERS

# ---------------------------------------------------------------- 5. measurements
rm -rf "$DATA/raw"
mkdir -p "$DATA/raw"
export BENCH_DATA=$DATA
export BENCH_TAG=${BENCH_TAG:-r$(date +%H%M%S)}
status=0
python3 "$ROOT/bench/harness.py" || status=$?

# ---------------------------------------------------------------- 6. report (also after a failure: what was measured)
export BENCH_TOTAL_SECONDS=$(( $(date +%s) - START ))
python3 "$ROOT/bench/report.py"
log "done in ${BENCH_TOTAL_SECONDS}s: bench/results.md, bench/results.json"
exit $status
