#!/usr/bin/env python3
"""Turns bench/data/raw/measurements.jsonl (written by bench/harness.py) into
bench/results.json and bench/results.md. Standard library only."""
import json
import os
import statistics
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BENCH = os.path.join(ROOT, "bench")
DATA = os.environ.get("BENCH_DATA", os.path.join(BENCH, "data"))
RAW = os.path.join(DATA, "raw")
MIB = 1024  # time -v reports KiB

# Issue #12's goals (the earlier ones where it sets none).
GOALS = {
    "e2e_init_vs_copy": 0.5,
    "e2e_vs_copy": 0.6,
    "consume_vs_peer_a": 10.0,
    "consume_vs_peer_b": 3.0,
    "p99_ms": 50.0,
    "seed_first_row_s": 1.0,
    "rss_mib": 120.0,
    "rss_5m_vs_1m": 1.1,
}


def relative(value):
    """results.json carries no absolute paths of the machine that wrote it."""
    if isinstance(value, str):
        return value.replace(ROOT + "/", "").replace(ROOT, ".")
    if isinstance(value, list):
        return [relative(v) for v in value]
    if isinstance(value, dict):
        return {k: relative(v) for k, v in value.items()}
    return value


def load():
    rows = []
    path = os.path.join(RAW, "measurements.jsonl")
    if os.path.exists(path):
        with open(path) as f:
            rows = [json.loads(line) for line in f if line.strip()]
    return rows


def of(rows, kind):
    return [r for r in rows if r["kind"] == kind]


def med(values):
    values = [v for v in values if v is not None]
    return statistics.median(values) if values else None


def summary(runs, key="rows_per_s"):
    values = [r[key] for r in runs if r.get(key) is not None]
    if not values:
        return None
    return {"median": statistics.median(values), "min": min(values), "max": max(values), "runs": values, "n": len(values)}


def fmt(v, digits=0):
    if v is None:
        return "n/a"
    return f"{v:,.{digits}f}"


def ratio(a, b):
    return a / b if a is not None and b else None


def status(ok):
    return "n/a" if ok is None else ("**met**" if ok else "**missed**")


def main():
    rows = load()
    machine = (of(rows, "machine") or [{}])[0]
    start = (of(rows, "start") or [{}])[0]
    end = (of(rows, "end") or [{}])[0]
    errors = of(rows, "error")

    copy = summary(of(rows, "copy"))
    copy_rec = summary(of(rows, "copy_pipectl_table"))
    e2e_runs = of(rows, "e2e")
    e2e = summary(e2e_runs)
    e2e_reported = summary(e2e_runs, "reported_elapsed")
    init_runs = of(rows, "e2e_init")
    e2e_init = summary(init_runs)
    seed_runs = of(rows, "seed")
    seed_first = summary(seed_runs, "first_row_seconds")
    mem5m_init = (of(rows, "e2e5m_init") or [None])[0]
    consume_runs = of(rows, "consume")
    consume = summary(consume_runs)
    peer_a = summary(of(rows, "peer_a"))
    peer_b = summary(of(rows, "peer_b"))
    produce = of(rows, "produce")
    mem5m = (of(rows, "e2e5m") or [None])[0]
    lat_runs = of(rows, "latency")
    profiles = {p["side"]: p for p in of(rows, "profile")}
    plan = (of(rows, "plan") or [None])[0]

    rss_1m_kb = med([r.get("max_rss_kb") for r in e2e_runs])
    rss_5m_kb = mem5m.get("max_rss_kb") if mem5m else None
    rss_init_1m_kb = med([r.get("max_rss_kb") for r in init_runs])
    rss_init_5m_kb = mem5m_init.get("max_rss_kb") if mem5m_init else None
    # The goal holds for what users run: the larger of the two specs' peaks.
    rss_1m_worst = max([v for v in (rss_1m_kb, rss_init_1m_kb) if v], default=None)
    rss_5m_worst = max([v for v in (rss_5m_kb, rss_init_5m_kb) if v], default=None)
    lat = {k: med([r.get(k) for r in lat_runs]) for k in ("p50_ms", "p95_ms", "p99_ms", "max_ms", "mean_ms")}
    lat_worst_p99 = max([r["p99_ms"] for r in lat_runs if r.get("p99_ms") is not None], default=None)

    m = lambda s: s["median"] if s else None

    def per_round(kind):
        """pipectl's time against `\\copy`'s in the same round (they ran minutes apart, so
        load from outside the benchmark touches both): a ratio of rates, median over rounds."""
        copies = {r["run"]: r["rows_per_s"] for r in of(rows, "copy")}
        values = [r["rows_per_s"] / copies[r["run"]] for r in of(rows, kind) if copies.get(r["run"])]
        return {"median": statistics.median(values), "runs": values} if values else None
    round_e2e = per_round("e2e")
    round_init = per_round("e2e_init")
    figures = {
        "copy_rows_per_s": m(copy),
        "copy_pipectl_table_rows_per_s": m(copy_rec),
        "e2e_rows_per_s": m(e2e),
        "consume_rows_per_s": m(consume),
        "peer_a_rows_per_s": m(peer_a),
        "peer_b_rows_per_s": m(peer_b),
        "e2e_vs_copy": ratio(m(e2e), m(copy)),
        "e2e_init_rows_per_s": m(e2e_init),
        "e2e_init_vs_copy": ratio(m(e2e_init), m(copy)),
        "e2e_vs_copy_per_round": round_e2e,
        "e2e_init_vs_copy_per_round": round_init,
        "e2e_init_vs_tuned": ratio(m(e2e_init), m(e2e)),
        "seed_first_row_s": m(seed_first),
        "consume_vs_peer_a": ratio(m(consume), m(peer_a)),
        "consume_vs_peer_b": ratio(m(consume), m(peer_b)),
        "consume_vs_copy": ratio(m(consume), m(copy)),
        "latency_ms": lat,
        "latency_worst_run_p99_ms": lat_worst_p99,
        "rss_1m_mib": rss_1m_kb / MIB if rss_1m_kb else None,
        "rss_5m_mib": rss_5m_kb / MIB if rss_5m_kb else None,
        "rss_5m_vs_1m": ratio(rss_5m_worst, rss_1m_worst),
        "rss_init_1m_mib": rss_init_1m_kb / MIB if rss_init_1m_kb else None,
        "rss_init_5m_mib": rss_init_5m_kb / MIB if rss_init_5m_kb else None,
        "rss_1m_worst_mib": rss_1m_worst / MIB if rss_1m_worst else None,
        "rss_5m_worst_mib": rss_5m_worst / MIB if rss_5m_worst else None,
        "plan_200_median_ms": plan["median_ms"] if plan else None,
    }
    goals = [
        ("`init` spec end-to-end ≥ 0.5 × `\\copy`", "e2e_init_vs_copy", GOALS["e2e_init_vs_copy"], True, "×"),
        ("Tuned spec end-to-end ≥ 0.6 × `\\copy`", "e2e_vs_copy", GOALS["e2e_vs_copy"], True, "×"),
        ("Consume side ≥ 10 × peer (a)", "consume_vs_peer_a", GOALS["consume_vs_peer_a"], True, "×"),
        ("Consume side ≥ 3 × peer (b)", "consume_vs_peer_b", GOALS["consume_vs_peer_b"], True, "×"),
        ("p99 latency ≤ 50 ms at 1,000 rows/s", "p99", GOALS["p99_ms"], False, " ms"),
        ("Seed: first rows committed ≤ 1 s after `run` starts", "seed_first_row_s", GOALS["seed_first_row_s"], False, " s"),
        ("Peak RSS ≤ 120 MiB (1M rows, larger of both specs)", "rss_1m_worst_mib", GOALS["rss_mib"], False, " MiB"),
        ("Peak RSS ≤ 120 MiB (5M rows, larger of both specs)", "rss_5m_worst_mib", GOALS["rss_mib"], False, " MiB"),
        ("5M-row peak ≤ 1.1 × 1M-row peak", "rss_5m_vs_1m", GOALS["rss_5m_vs_1m"], False, "×"),
    ]
    goal_rows = []
    for label, key, target, higher_better, unit in goals:
        value = lat["p99_ms"] if key == "p99" else figures.get(key)
        if value is None:
            goal_rows.append({"goal": label, "target": target, "value": None, "met": None, "gap": "not measured"})
            continue
        met = value >= target if higher_better else value <= target
        if met:
            gap = (f"{value / target:.2f} × the target" if higher_better
                   else f"{target - value:,.{2 if unit == '×' else 1}f}{unit} below the limit")
        elif higher_better:
            gap = f"needs {target / value:.2f} × the current figure (short by {target - value:.2f}{unit})"
        else:
            gap = f"over by {value - target:,.1f}{unit} ({value / target:.2f} × the limit)"
        goal_rows.append({"goal": label, "target": target, "value": value, "met": met, "gap": gap})

    results = {
        "generated": (end.get("at", "").replace("T", " ") + " (local time)") if end.get("at") else time.strftime("%Y-%m-%d %H:%M:%S"),
        "total_seconds": float(os.environ.get("BENCH_TOTAL_SECONDS", "0")) or end.get("seconds"),
        "machine": {k: v for k, v in machine.items() if k not in ("kind", "at", "loadavg")},
        "figures": figures,
        "goals": goal_rows,
        "throughput": {"copy": copy, "copy_pipectl_table": copy_rec, "e2e": e2e, "e2e_reported_elapsed_s": e2e_reported,
                       "consume": consume, "peer_a": peer_a, "peer_b": peer_b},
        "runs": [r for r in rows if r["kind"] not in ("profile",)],
        "profile": profiles,
        "errors": errors,
    }
    with open(os.path.join(BENCH, "results.json"), "w") as f:
        json.dump(relative(results), f, indent=2)
        f.write("\n")

    md = []
    w = md.append
    w("# pipectl benchmarks")
    w("")
    w(f"Written by `make bench` (bench/run.sh) on {results['generated']}; the whole run took "
      f"{fmt(results['total_seconds'])} s. Medians over {start.get('runs', '?')} runs unless noted; "
      f"every contender ran on the same machine, broker and database, interleaved round by round. "
      f"Raw figures: [results.json](results.json) (`runs`); logs in `bench/data/raw/` (not committed).")
    w("")
    if errors:
        w("**Some steps failed in this run:** " + "; ".join(f"`{e['step']}`: {e['error'].splitlines()[0][:200]}" for e in errors))
        w("")
    w("## Goals")
    w("")
    w("| Goal | Measured | Status | Gap |")
    w("|---|---|---|---|")
    for g in goal_rows:
        unit = " ms" if "latency" in g["goal"] else (" MiB" if "RSS ≤" in g["goal"] else (" s" if "Seed" in g["goal"] else "×"))
        w(f"| {g['goal']} | {fmt(g['value'], 2 if unit == '×' else 1)}{unit if g['value'] is not None else ''} | {status(g['met'])} | {g['gap']} |")
    w("")

    why = []
    prod_rate = produce[0]["rows_per_s"] if produce else None
    if e2e_runs:
        join = med([r.get("join_seconds") for r in e2e_runs])
        wall = med([r.get("seconds") for r in e2e_runs])
        cpu = med([r.get("cpu_seconds") for r in e2e_runs])
        rows_ = med([r.get("rows") for r in e2e_runs])
        why.append(f"End-to-end: a run takes {fmt(wall, 1)} s. The producer starts at once; the consumer gets its partitions only after "
                   f"{fmt(join, 1)} s (topic and table setup, group join) and then has to catch up. Producing alone runs at {fmt(prod_rate)} rows/s "
                   f"({fmt(rows_ / prod_rate if prod_rate and rows_ else None, 1)} s for these rows) and consuming alone at {fmt(m(consume))} rows/s, "
                   f"both far below `\\copy`'s {fmt(m(copy))} rows/s, so neither side alone could reach 0.5 × `\\copy`. "
                   f"The process used {fmt(cpu, 1)} CPU-s ({fmt(100 * cpu / wall if cpu and wall else None)}% of one core over the run) "
                   f"on a 2-core machine it shares with PostgreSQL and the broker.")
    if consume_runs:
        cpu = med([r.get("cpu_seconds") for r in consume_runs])
        win = med([r.get("seconds") for r in consume_runs])
        wall = med([r.get("wall_seconds") for r in consume_runs])
        why.append(f"Consume side: {fmt(cpu, 1)} CPU-s for 1M rows over a {fmt(win, 1)} s window ({fmt(wall, 1)} s with join and idle exit): "
                   f"the consumer is busy about {fmt(100 * cpu / win if cpu and win else None)}% of the window and waits on PostgreSQL and Kafka the rest. "
                   f"Peer (b) used {fmt(med([r.get('cpu_seconds') for r in of(rows, 'peer_b')]), 1)} CPU-s (Python parsing and casting each row).")
    if lat_runs:
        why.append(f"Latency: the median run committed every {fmt(med([r.get('commit_interval_median_ms') for r in lat_runs]), 0)} ms "
                   f"({fmt(med([r.get('rows_per_commit_median') for r in lat_runs]))} rows per commit) with the sink's `max_delay_ms: 200`; "
                   f"the first commit came {fmt(med([r.get('first_commit_after_ms') for r in lat_runs]), 0)} ms after the first row was sent. "
                   f"Without the first 5 s of sending, p99 is {fmt(med([r.get('steady_p99_ms') for r in lat_runs]), 1)} ms.")
    if why:
        w("Figures from this run that explain the gaps:")
        w("")
        for x in why:
            w(f"- {x}")
        w("")

    w("## Throughput (1,000,000 housing rows)")
    w("")
    w("| Contender | Median rows/s | Runs (rows/s) | pipectl's ratio | What is timed |")
    w("|---|---|---|---|---|")
    def line(name, s, ratio_text, what):
        runs = ", ".join(fmt(v) for v in s["runs"]) if s else "n/a"
        w(f"| {name} | {fmt(m(s))} | {runs} | {ratio_text} | {what} |")
    line("`psql \\copy` into the seed's table (reference)", copy,
         f"end-to-end {fmt(figures['e2e_vs_copy'], 2)}×, consume side {fmt(figures['consume_vs_copy'], 2)}×",
         "psql process start to exit")
    line("`psql \\copy` into pipectl's table definition (for comparison)", copy_rec, "",
         "same, with `_pipectl_record` filled under its unique index")
    line("**pipectl end-to-end, `init` spec** (`pipectl init`, then `pipectl run` of its spec)", e2e_init,
         f"end-to-end {fmt(figures['e2e_init_vs_copy'], 2)}× `\\copy`, {fmt(figures['e2e_init_vs_tuned'], 2)}× the tuned spec",
         "process start to exit, the spec `init` wrote, unedited (micro-batches of 100, 1 partition, sink batch 10,000)")
    line("**pipectl end-to-end, tuned spec** (`pipectl run bench/specs/housing.yaml`)", e2e, f"end-to-end {fmt(figures['e2e_vs_copy'], 2)}× `\\copy`",
         "process start to exit: topic/table setup, group join, produce and consume in parallel, every row committed")
    line("**pipectl consume side** (`pipectl consume`)", consume, "",
         "`assigned partitions` line to the last commit (exit minus the 2 s idle-exit), preloaded 3-partition topic")
    line("peer (b): confluent-kafka + psycopg 3 COPY per batch", peer_b, f"consume side {fmt(figures['consume_vs_peer_b'], 2)}×",
         "assignment to the last commit, same topic, 10,000 rows per batch")
    bounded = any(r.get("bounded") for r in of(rows, "peer_a"))
    line("peer (a): confluent-kafka + psycopg2 row-by-row INSERT", peer_a, f"consume side {fmt(figures['consume_vs_peer_a'], 2)}×",
         "assignment to the last commit, 1,000 rows per commit" + (", bounded slice: stops after 200,000 rows or 20 s" if bounded else ""))
    w("")
    for label, r in (("`init` spec", round_init), ("tuned spec", round_e2e)):
        if r:
            w(f"Ratio to `\\copy` round by round ({label}: pipectl's rate over `\\copy`'s in the same round): "
              f"{', '.join(fmt(v, 2) + '×' for v in r['runs'])}; median {fmt(r['median'], 2)}×.")
            w("")
    if e2e_runs:
        w(f"pipectl's own summary reports a median `elapsed` of {fmt(m(e2e_reported), 2)} s for the end-to-end run "
          f"(from before the setup to the last commit, without process start and exit); the group join took a median of "
          f"{fmt(med([r.get('join_seconds') for r in e2e_runs]), 2)} s of it. CPU time of the pipectl process (user + system): "
          f"{fmt(med([r.get('cpu_seconds') for r in e2e_runs]), 1)} s end-to-end, "
          f"{fmt(med([r.get('cpu_seconds') for r in consume_runs]), 1)} s consume side; "
          f"peer (b): {fmt(med([r.get('cpu_seconds') for r in of(rows, 'peer_b')]), 1)} s.")
        w("")
    for p in produce:
        w(f"Preloading the consume-side topic with `pipectl produce` ({fmt(p['rows'])} rows, 3 partitions): "
          f"{fmt(p['seconds'], 2)} s, {fmt(p['rows_per_s'])} rows/s (one run, for information).")
        w("")

    w("## Seed pipeline: first rows visible")
    w("")
    if seed_runs:
        w("`pipectl run pipelines/housing.yaml` (506 rows, micro-batches of 100), a fresh pipeline name each run, stack already up: "
          "from process start to the return of the first COMMIT that stored rows (`PIPECTL_LATENCY_LOG`), and to exit.")
        w("")
        w("| Run | First rows committed (s) | Last row committed (s) | Commits | Group join (s) | Exit (s) |")
        w("|---|---|---|---|---|---|")
        for r in seed_runs:
            w(f"| {r['run']} | {fmt(r.get('first_row_seconds'), 2)} | {fmt(r.get('last_row_seconds'), 2)} | {fmt(r.get('commits'))} | "
              f"{fmt(r.get('join_seconds'), 2)} | {fmt(r.get('seconds'), 2)} |")
        w(f"| **median** | **{fmt(m(seed_first), 2)}** | | | {fmt(med([r.get('join_seconds') for r in seed_runs]), 2)} | "
          f"{fmt(med([r.get('seconds') for r in seed_runs]), 2)} |")
    else:
        w("Not measured in this run.")
    w("")

    w("## Latency (1,000 rows/s for 60 s)")
    w("")
    if lat_runs:
        w("Per row: from `_sent_at` (set by the producer as it builds the record) to the moment the COMMIT that stored the "
          "row returned in the consumer (`PIPECTL_LATENCY_LOG`). The producer starts once the consumer logged its assignment.")
        w("")
        w("| Run | Rows | Send rate (rows/s) | p50 ms | p95 ms | p99 ms | max ms |")
        w("|---|---|---|---|---|---|---|")
        for r in lat_runs:
            w(f"| {r['run']} | {fmt(r['rows'])} | {fmt(r.get('send_rate'))} | {fmt(r['p50_ms'], 1)} | {fmt(r['p95_ms'], 1)} | "
              f"{fmt(r['p99_ms'], 1)} | {fmt(r['max_ms'], 1)} |")
        w(f"| **median** | | | **{fmt(lat['p50_ms'], 1)}** | **{fmt(lat['p95_ms'], 1)}** | **{fmt(lat['p99_ms'], 1)}** | **{fmt(lat['max_ms'], 1)}** |")
        w("")
        w("Diagnostics (not the goal figure): the same rows without the first 5 s of sending, and how the consumer committed.")
        w("")
        w("| Run | p50 ms after 5 s | p99 ms after 5 s | max ms after 5 s | First commit after first send (ms) | Commits | Rows per commit (median) | Commit interval (median ms) |")
        w("|---|---|---|---|---|---|---|---|")
        for r in lat_runs:
            w(f"| {r['run']} | {fmt(r.get('steady_p50_ms'), 1)} | {fmt(r.get('steady_p99_ms'), 1)} | {fmt(r.get('steady_max_ms'), 1)} | "
              f"{fmt(r.get('first_commit_after_ms'), 0)} | {fmt(r.get('commits'))} | {fmt(r.get('rows_per_commit_median'))} | "
              f"{fmt(r.get('commit_interval_median_ms'), 1)} |")
        w("")
    else:
        w("Not measured in this run.")
        w("")

    w("## Memory (peak RSS of `pipectl run`)")
    w("")
    w("| Input | Peak RSS | Rows/s | Source |")
    w("|---|---|---|---|")
    if init_runs:
        w(f"| 1,000,000 rows, `init` spec | {fmt(rss_init_1m_kb / MIB if rss_init_1m_kb else None, 1)} MiB (runs: "
          f"{', '.join(fmt(r.get('max_rss_kb', 0) / MIB, 1) for r in init_runs)}) | {fmt(m(e2e_init))} | the `init` end-to-end runs above |")
    if mem5m_init:
        w(f"| 5,000,000 rows, `init` spec | {fmt(rss_init_5m_kb / MIB if rss_init_5m_kb else None, 1)} MiB | {fmt(mem5m_init['rows_per_s'])} | one run |")
    if e2e_runs:
        w(f"| 1,000,000 rows, tuned spec | {fmt(rss_1m_kb / MIB if rss_1m_kb else None, 1)} MiB (runs: "
          f"{', '.join(fmt(r.get('max_rss_kb', 0) / MIB, 1) for r in e2e_runs)}) | {fmt(m(e2e))} | the end-to-end runs above |")
    if mem5m:
        w(f"| 5,000,000 rows, tuned spec | {fmt(rss_5m_kb / MIB if rss_5m_kb else None, 1)} MiB | {fmt(mem5m['rows_per_s'])} | one run |")
    for p in produce:
        if p.get("max_rss_kb"):
            w(f"| `pipectl produce` alone, {fmt(p['rows'])} rows | {fmt(p['max_rss_kb'] / MIB, 1)} MiB | {fmt(p['rows_per_s'])} | the preload (for information) |")
    rss_consume = med([r.get("max_rss_kb") for r in consume_runs])
    if rss_consume:
        w(f"| `pipectl consume` alone, 1,000,000 rows | {fmt(rss_consume / MIB, 1)} MiB | {fmt(m(consume))} | the consume-side runs (for information) |")
    w("")
    w("Measured with `/usr/bin/time -v` (\"Maximum resident set size\"); 1 MiB = 1,048,576 bytes.")
    w("")

    w("## Where the time goes")
    w("")
    for side in ("consume", "produce"):
        p = profiles.get(side)
        if not p:
            continue
        w(f"### {side} ({fmt(p['rows'])} rows, {p['tool']})")
        w("")
        if p["tool"] == "callgrind":
            w(f"{fmt(p.get('total_ir'))} instructions in the pipectl process, {fmt(p.get('ir_per_row'))} per row "
              f"(all threads, librdkafka's included; start-up and spec compilation included). Callgrind counts instructions, "
              f"not waiting: time spent waiting for PostgreSQL (COPY, COMMIT) or the broker does not show here; compare the CPU "
              f"seconds with the wall time above for that. Profiled run: {fmt(p['seconds'], 1)} s under valgrind.")
            w("")
            by_obj = p.get("by_object") or []
            total = p.get("total_ir") or 1
            if by_obj:
                w("By object (self cost): " + ", ".join(f"{o} {100 * v / total:.1f}%" for o, v in by_obj[:7]) + ".")
                w("")
            w("Top functions by self cost:")
            w("")
            w("| # | Self % | Instructions | Function [object] |")
            w("|---|---|---|---|")
            for k, e in enumerate(p["top_self"][:25], 1):
                w(f"| {k} | {fmt(e['pct'], 2)} | {fmt(e['ir'])} | `{e['function'][:160]}` |")
            w("")
            w("Top functions by inclusive cost (callees included; start-up frames left out):")
            w("")
            w("| # | Incl. % | Function [object] |")
            w("|---|---|---|")
            for k, e in enumerate(p.get("top_inclusive", [])[:20], 1):
                w(f"| {k} | {fmt(e['pct'], 2)} | `{e['function'][:160]}` |")
            w("")
        else:
            w("```")
            for e in p["top_self"][:30]:
                w(e["function"])
            w("```")
            w("")

    w("## `pipectl plan` on a 200-stage spec")
    w("")
    if plan:
        w(f"The README's binary, a generated spec of 50 sources, 50 topics, 50 transforms and 50 sinks "
          f"(`bench/data/plan-200.yaml`, {plan['stages']} stages in the plan): median **{fmt(plan['median_ms'], 1)} ms** "
          f"over {plan['runs']} runs ({plan['tool']}; runs: {', '.join(fmt(t, 1) for t in plan['times_ms'])} ms), "
          f"process start to exit.")
    else:
        w("Not measured in this run.")
    w("")

    w("## Machine")
    w("")
    for key, label in [("cpu", "CPU"), ("cpus", "Cores"), ("hypervisor", "Hypervisor"), ("memory_gib", "Memory (GiB)"),
                       ("os", "OS"), ("kernel", "Kernel"), ("swift", "Swift"), ("postgres", "PostgreSQL"),
                       ("postgres_settings", "PostgreSQL settings"), ("tansu", "Broker"), ("librdkafka", "librdkafka"),
                       ("python", "Peers' Python"), ("peer_packages", "Peers' packages"), ("pipectl_commit", "pipectl commit"),
                       ("sources_modified", "Files under Sources/ and Package.swift with uncommitted changes when the binary was built")]:
        if key in machine:
            w(f"- {label}: {machine[key]}")
    w("- Stack: `pipectl dev up` with its own state folder (`bench/data/stack`), Tansu on 127.0.0.1:29092 (in memory), "
      "PostgreSQL on 127.0.0.1:55452, database `bench` created afresh by each run.")
    loads = [r["loadavg"] for r in rows if "loadavg" in r]
    if loads:
        w(f"- 1-minute load average at the measurements' starts: median {statistics.median(loads):.2f}, max {max(loads):.2f} "
          "(the benchmark itself keeps about 2 busy; higher means other work shared the 2 cores).")
    w("")

    w("## Method")
    w("")
    w("- **Data**: `data/housing.csv` (506 rows) repeated to 1,000,000 and 5,000,000 rows (`bench/data/`, generated, git-ignored).")
    w("- **Specs**: [bench/specs/housing.yaml](specs/housing.yaml) (source `batch_size` 1000, 3 partitions, lz4, sink `batch_size` 10000, "
      "`max_delay_ms` 200) and [bench/specs/latency.yaml](specs/latency.yaml) (`rate_limit: 1000`, bursts of 10). "
      "Every run gets its own pipeline name, topic and table (interpolated from the environment); tables are dropped and topics deleted after use, "
      "and a `CHECKPOINT` precedes each timed run.")
    w("- **Reference**: `psql -c \"\\copy T (crim,...,medv) FROM 'housing-1m.csv' WITH (FORMAT csv, HEADER true)\"` into "
      "[the seed's table](sql/housing_table.sql). The second `\\copy` line loads the same rows plus a record number into a table with "
      "pipectl's extra `_pipectl_record bigint` column and unique index, i.e. the table pipectl itself writes.")
    w(f"- **Binary**: `{machine.get('pipectl_binary', '.build/debug/pipectl')}`, the one the README names, built by `swift build` as a user "
      "builds it (its hot modules are compiled with -O in every configuration: Package.swift).")
    w("- **End-to-end**: `pipectl run bench/specs/housing.yaml` on the 1M CSV under `/usr/bin/time -v`; rows/s = rows in the table / "
      "(process exit - process start). **`init` spec**: `pipectl init NAME --csv data/housing-1m.csv` in `bench/data/init` (untimed), "
      "then `pipectl run` of the spec it wrote, unedited, timed the same way; it runs right after the tuned spec in each round.")
    w("- **Seed first rows**: the seed spec under a fresh pipeline/topic/table name (`bench/data/seed`), `PIPECTL_LATENCY_LOG` set; "
      "the first commit stamp minus the process start.")
    w("- **Consume side**: the topic is preloaded once with `pipectl produce` (3 partitions); each run is a fresh pipeline (consumer group, "
      "bookkeeping tables, table) running `pipectl consume --idle-exit 2`. Window: from the `assigned partitions` line (stdout, time-stamped "
      "as it arrives) to the last commit, taken as process exit - 2 s: the consumer commits as soon as it reaches the end of its partitions "
      "and then waits out the idle time (checked against `PIPECTL_LATENCY_LOG` commit stamps: within ~0.02 s). The group join "
      "(~3 s with Tansu) is outside the window, as it is for the peers.")
    w("- **Peers** ([bench/peers](peers/)): confluent-kafka 2.16.1 group consumers on the same preloaded topic, `json.loads`, Python casts "
      "(`float`, `int` for chas/rad/tax), then (a) psycopg2 `INSERT` per row with one COMMIT per 1,000 messages, or (b) psycopg 3 "
      "`COPY ... FROM STDIN` with `write_row` per 10,000 messages; each batch is followed by a synchronous Kafka offset commit. "
      "Window: from the partition assignment callback to the return of the last commit. Peer (a) runs a bounded slice "
      "(200,000 rows or 20 s after the assignment, whichever comes first) since it loads ~5-10k rows/s; its rate is for that slice.")
    w("- **Latency**: `pipectl consume` of a fresh pipeline starts first with `PIPECTL_LATENCY_LOG=FILE` (after each COMMIT returns "
      "the consumer appends `sent_at_micros committed_at_micros` per stored row); once it logged `assigned partitions`, "
      "`pipectl produce` sends 60,000 rows at `rate_limit: 1000`. Percentiles per run over all rows, then the median over runs.")
    w("- **Memory**: peak RSS from `/usr/bin/time -v pipectl run` (1M: the end-to-end runs of both specs; 5M: one run of each).")
    w("- **Profile**: perf when `perf stat -e instructions true` counts instructions, else `valgrind --tool=callgrind` "
      "(Valgrind 3.19 cannot read Swift 6's DWARF 5, so it profiles a copy of the binary without debug info; names "
      "come from the symbol table, demangled with `swift-demangle --simplified`): `pipectl produce` of 50,000 rows into a "
      "3-partition topic, then `pipectl consume --idle-exit 3` of it.")
    w("- **plan**: `hyperfine --runs 5 --warmup 1 -N` when installed, else a loop of 5 timed runs after one warm-up.")
    w("")

    # Hand-written notes (what changed and why, figures before and after) follow the measured part.
    notes = os.path.join(BENCH, "notes.md")
    if os.path.exists(notes):
        with open(notes) as f:
            w(f.read().rstrip("\n"))
        w("")

    with open(os.path.join(BENCH, "results.md"), "w") as f:
        f.write("\n".join(md))
    print(os.path.join(BENCH, "results.md"))


if __name__ == "__main__":
    main()
