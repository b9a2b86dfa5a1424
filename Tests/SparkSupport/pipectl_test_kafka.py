"""A stand-in for Spark's Kafka source, for tests only.

Spark's own Kafka source (the spark-sql-kafka-0-10 jar) cannot be downloaded on the machines
pipectl is tested on. This Python streaming data source (pyspark 4.x) reads the topic with
confluent-kafka and takes the Kafka source's options (`kafka.bootstrap.servers`, `subscribe`,
`startingOffsets` as per-partition JSON, `maxOffsetsPerTrigger`) and yields its columns (key,
value, topic, partition, offset, timestamp, timestampType). A generated job uses it instead of
`format("kafka")` when run with `PIPECTL_SPARK_SOURCE=pipectl_test_kafka:KafkaStandIn`; Spark
refuses a Python source named `kafka`, hence the other name.

End offsets come from what a fetch reaches (the partition-EOF events), not from ListOffsets:
Tansu 0.6.0 answers "latest" wrongly (see ../shared/FIELD-NOTES.md).
"""

import datetime
import json
import time

from pyspark.sql.datasource import DataSource, DataSourceStreamReader, InputPartition
from pyspark.sql.streaming.datasource import ReadAllAvailable, ReadMaxRows, SupportsTriggerAvailableNow

SCHEMA = ("key binary, value binary, topic string, partition int, offset long, "
          "timestamp timestamp, timestampType int")


def _settings(options, group):
    settings = {"group.id": group, "enable.auto.commit": False, "enable.partition.eof": True}
    for key, value in options.items():
        if key.startswith("kafka."):
            settings[key[len("kafka."):]] = value
    return settings


class OffsetRange(InputPartition):
    def __init__(self, partition, start, end):
        self.partition, self.start, self.end = partition, start, end


class KafkaStandIn(DataSource):
    @classmethod
    def name(cls):
        return "pipectl_test_kafka"

    def schema(self):
        return SCHEMA

    def streamReader(self, schema):
        # Spark hands the options over with lower-cased names.
        return KafkaStandInReader({k.lower(): v for k, v in self.options.items()})


class KafkaStandInReader(DataSourceStreamReader, SupportsTriggerAvailableNow):
    def __init__(self, options):
        from confluent_kafka import Consumer
        self.options = options
        self.topic = options["subscribe"]
        self.consumer = Consumer(_settings(options, "pipectl-test-standin-driver"))
        metadata = self.consumer.list_topics(self.topic, timeout=15).topics[self.topic]
        self.topic_partitions = sorted(metadata.partitions)
        starting = options.get("startingoffsets", "earliest")
        if starting.startswith("{"):
            given = json.loads(starting)[self.topic]
            self.initial = {str(p): max(0, int(given.get(str(p), -2))) for p in self.topic_partitions}
        else:
            self.initial = {str(p): 0 for p in self.topic_partitions}
        # Where the driver's scan has got to, and whether it reached the end of each partition.
        self.seen = dict(self.initial)
        self.at_end = {str(p): False for p in self.topic_partitions}
        self.assigned = False
        # Trigger.AvailableNow: the end offsets when the query started; batches stop there.
        self.available_now_end = None

    def __getstate__(self):
        # The reader is pickled to the executors for read(); the driver's consumer stays here.
        state = dict(self.__dict__)
        state.pop("consumer", None)
        return state

    def initialOffset(self):
        return dict(self.initial)

    def getDefaultReadLimit(self):
        n = self.options.get("maxoffsetspertrigger")
        return ReadMaxRows(int(n)) if n else ReadAllAvailable()

    def _scan(self):
        """Reads on to the end of every partition (partition-EOF events), up to 5 s."""
        from confluent_kafka import KafkaError, TopicPartition
        if not self.assigned:
            self.consumer.assign([TopicPartition(self.topic, p, self.initial[str(p)]) for p in self.topic_partitions])
            self.assigned = True
        deadline = time.time() + 5
        while time.time() < deadline:
            message = self.consumer.poll(0.2)
            if message is None:
                if all(self.at_end.values()):
                    return
                continue
            p = str(message.partition())
            if message.error():
                if message.error().code() == KafkaError._PARTITION_EOF:
                    self.at_end[p] = True
                    self.seen[p] = max(self.seen[p], message.offset())
                continue
            self.at_end[p] = False
            self.seen[p] = max(self.seen[p], message.offset() + 1)

    def prepareForTriggerAvailableNow(self):
        self._scan()
        self.available_now_end = dict(self.seen)

    def latestOffset(self, start, limit):
        if self.available_now_end is None:
            self._scan()
        latest = dict(self.available_now_end if self.available_now_end is not None else self.seen)
        if not isinstance(limit, ReadMaxRows):
            return latest
        # Like the Kafka source: the limit is shared out over the partitions by their backlog.
        backlog = {p: max(0, latest[p] - start.get(p, 0)) for p in latest}
        total = sum(backlog.values())
        if total <= limit.max_rows:
            return latest
        end, left = {}, limit.max_rows
        for p in sorted(backlog, key=int):
            share = min(backlog[p], backlog[p] * limit.max_rows // total)
            end[p] = start.get(p, 0) + share
            left -= share
        for p in sorted(backlog, key=int):
            extra = min(left, latest[p] - end[p])
            end[p] += extra
            left -= extra
        return end

    def partitions(self, start, end):
        return [OffsetRange(int(p), start.get(p, 0), end[p]) for p in sorted(end, key=int) if end[p] > start.get(p, 0)]

    def read(self, partition):
        from confluent_kafka import Consumer, KafkaError, TopicPartition
        consumer = Consumer(_settings(self.options, "pipectl-test-standin-reader"))
        try:
            consumer.assign([TopicPartition(self.topic, partition.partition, partition.start)])
            deadline = time.time() + 60
            while time.time() < deadline:
                message = consumer.poll(0.5)
                if message is None:
                    continue
                if message.error():
                    if message.error().code() == KafkaError._PARTITION_EOF and message.offset() >= partition.end:
                        return
                    continue
                if message.offset() >= partition.end:
                    return
                kind, ms = message.timestamp()
                yield (message.key(), message.value(), message.topic(), message.partition(), message.offset(),
                       datetime.datetime.fromtimestamp(ms / 1000, tz=datetime.timezone.utc), max(kind - 1, 0))
                if message.offset() + 1 >= partition.end:
                    return
            raise RuntimeError("partition %d: offsets %d..%d not read within 60 s" % (partition.partition, partition.start, partition.end))
        finally:
            consumer.close()

    def commit(self, end):
        pass
