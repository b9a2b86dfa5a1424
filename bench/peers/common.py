"""Shared plumbing for the peer consumers: arguments, the Kafka consumer, the row cast, the
end condition and the JSON report. Each peer is what a user would write: a confluent-kafka
group consumer, json.loads per message, Python casts, and a PostgreSQL write per batch
followed by a Kafka offset commit.

Timing: t_assigned is taken when the group hands this consumer its partitions (the same
moment pipectl logs `assigned partitions ...`); t_last_commit after the last database COMMIT
and Kafka offset commit returned. rows_per_s = rows / (t_last_commit - t_assigned), so the
group join (about 3 s with Tansu) is left out for peers and pipectl alike.
"""
import argparse
import json
import sys
import time

from confluent_kafka import Consumer, KafkaError

COLUMNS = ["crim", "zn", "indus", "chas", "nox", "rm", "age", "dis", "rad", "tax", "ptratio", "b", "lstat", "medv"]
INTEGER_COLUMNS = {"chas", "rad", "tax"}


def parse_args(description):
    ap = argparse.ArgumentParser(description=description)
    ap.add_argument("--brokers", required=True)
    ap.add_argument("--topic", required=True)
    ap.add_argument("--group", required=True)
    ap.add_argument("--dsn", required=True)
    ap.add_argument("--table", required=True)
    ap.add_argument("--batch", type=int, default=1000, help="messages per database transaction")
    ap.add_argument("--max-rows", type=int, default=0, help="stop after this many rows (0: the whole topic)")
    ap.add_argument("--max-seconds", type=float, default=0, help="stop this long after the assignment (0: no limit)")
    return ap.parse_args()


def cast(value, column):
    if value is None:
        return None
    return int(value) if column in INTEGER_COLUMNS else float(value)


def row_of(payload):
    record = json.loads(payload)
    return tuple(cast(record.get(c), c) for c in COLUMNS)


class Run:
    """The consume loop shared by both peers; `write(rows)` stores one batch and commits."""

    def __init__(self, args):
        self.args = args
        self.t_assigned = None
        self.assigned = set()
        self.at_end = set()
        self.consumer = Consumer({
            "bootstrap.servers": args.brokers,
            "group.id": args.group,
            "auto.offset.reset": "earliest",
            "enable.auto.commit": False,
            "enable.partition.eof": True,
            # Tansu completes the first JoinGroup only after the rebalance timeout: keep it short.
            "max.poll.interval.ms": 10000,
            "session.timeout.ms": 6000,
            "heartbeat.interval.ms": 1000,
        })

    def on_assign(self, consumer, partitions):
        if self.t_assigned is None:
            self.t_assigned = time.time()
        self.assigned |= {p.partition for p in partitions}

    def run(self, write):
        a = self.args
        self.consumer.subscribe([a.topic], on_assign=self.on_assign)
        rows = 0
        batches = 0
        t_first = None
        t_last_commit = None
        t_start = time.time()
        while True:
            msgs = self.consumer.consume(num_messages=a.batch, timeout=0.5)
            batch = []
            for m in msgs:
                err = m.error()
                if err is not None:
                    if err.code() == KafkaError._PARTITION_EOF:
                        self.at_end.add(m.partition())
                        continue
                    raise SystemExit(f"kafka error: {err}")
                self.at_end.discard(m.partition())
                batch.append(m.value())
            if batch:
                if t_first is None:
                    t_first = time.time()
                write(batch)
                self.consumer.commit(asynchronous=False)
                t_last_commit = time.time()
                rows += len(batch)
                batches += 1
            if self.assigned and self.at_end >= self.assigned and rows > 0:
                break
            if a.max_rows and rows >= a.max_rows:
                break
            if a.max_seconds and self.t_assigned and time.time() - self.t_assigned >= a.max_seconds:
                break
            if self.t_assigned is None and time.time() - t_start > 120:
                raise SystemExit("no partition assignment after 120 s")
        self.consumer.close()
        elapsed = (t_last_commit or time.time()) - (self.t_assigned or t_start)
        report = {
            "rows": rows,
            "batches": batches,
            "t_assigned": self.t_assigned,
            "t_first_message": t_first,
            "t_last_commit": t_last_commit,
            "seconds": elapsed,
            "rows_per_s": rows / elapsed if elapsed > 0 else 0.0,
            "bounded": not (self.assigned and self.at_end >= self.assigned),
        }
        print(json.dumps(report))
        sys.stdout.flush()
