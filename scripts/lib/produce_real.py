"""Produces records with a real Kafka client library (confluent-kafka, i.e. librdkafka), for the
integration tests in tests/api/real_producers.rs, and reads topics back with it.

    produce_real.py --bootstrap H:P --topic T --scenario NAME [--partitions 3]

makes sure T exists with that many partitions, produces the scenario's records and prints one
JSON object on stdout:

    {"scenario": NAME, "topic": T, "partitions": 3,
     "records": [{"partition": 0, "offset": 4, "key": "5" | null, "value": "..." | null,
                  "headers": [["h", null], ["e", ""]], "codec": "lz4",
                  "transaction": "committed" | "aborted" | null}, ...],   # in produce order
     "high_watermarks": [12, 7, 9],     # per partition, once everything was produced
     ...scenario-specific fields}

Keys, values and header values are UTF-8 text here; null stands for an absent key or value and
for a header without a value, "" for an empty one. Scenarios (every value a valid message unless
said otherwise; ids never span partitions: records are keyed by id or name ids of their own):

  codecs          one producer per compression.type (none, gzip, snappy, lz4, zstd), in that
                  order, each lingering so its records go as one batch per partition; each codec
                  upserts ids of its own plus ids 1-5 twice, which every later codec overwrites.
                  "codecs" gives per codec the records' value bytes and the bytes the producer
                  sent, batches and most records in a batch (librdkafka's statistics).
  delete-codecs   as codecs, for the delete worker ({"id": N, "pad": ...}), lz4 and zstd only.
  headers         keyed records with headers [("h", None), ("e", b"")], records without a key
                  (some with those headers) and records with no headers.
  idempotent      enable.idempotence=True, keyed records, ids repeated across rounds.
  transactional   a transactional producer: six transactions over the three partitions,
                  committed and aborted in turn (every partition's last batch is a marker).
                  Aborted records upsert ids of their own (from 1000). "read_committed" tells
                  whether a read_committed consumer (librdkafka's default) saw any aborted
                  record, i.e. whether this broker filters aborted transactions at all.
  tombstone       keyed records on partition 0, one with a null value (a tombstone) between
                  valid ones.
  invalid-null-header
                  partition 0: valid, then "not json" with headers [("h", None), ("e", b"")],
                  then valid.
  consume         produces nothing: reads every record of T from the beginning to the end of
                  each partition (waiting up to --timeout for at least --min-records), printed
                  as "records" above without codec and transaction.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import uuid

from confluent_kafka import (
    Consumer,
    KafkaError,
    KafkaException,
    Producer,
    TopicPartition,
)
from confluent_kafka.admin import AdminClient, NewTopic

CODECS = ["none", "gzip", "snappy", "lz4", "zstd"]
NULL_HEADERS = [("h", None), ("e", b"")]
PAD = "x" * 120


def fail(message: str) -> None:
    print(f"produce_real.py: {message}", file=sys.stderr)
    sys.exit(1)


def text(data: bytes | None) -> str | None:
    return None if data is None else data.decode("utf-8", errors="backslashreplace")


def headers_json(headers) -> list:
    return [[name, text(value)] for name, value in (headers or [])]


def upsert(id_: int, name: str) -> bytes:
    return json.dumps({"id": id_, "name": name}).encode()


def delete(id_: int) -> bytes:
    # Delete messages are short: padding (ignored by the worker) makes batches compress well.
    return json.dumps({"id": id_, "pad": PAD * 3}).encode()


class Run:
    """One scenario's producing against one topic; collects what the broker acknowledged."""

    def __init__(self, args: argparse.Namespace):
        self.bootstrap = args.bootstrap
        self.topic = args.topic
        self.partitions = args.partitions
        self.timeout = args.timeout
        self.records: list[dict] = []
        self.errors: list[str] = []

    def config(self, **extra) -> dict:
        return {"bootstrap.servers": self.bootstrap, "client.id": "rowsync-tests", **extra}

    def ensure_topic(self) -> None:
        admin = AdminClient(self.config())
        future = admin.create_topics([NewTopic(self.topic, self.partitions, 1)])[self.topic]
        try:
            future.result(self.timeout)
        except KafkaException as e:
            if e.args[0].code() != KafkaError.TOPIC_ALREADY_EXISTS:
                raise
        deadline = time.monotonic() + self.timeout
        while True:
            topic = admin.list_topics(self.topic, timeout=self.timeout).topics.get(self.topic)
            if topic is not None and topic.error is None and len(topic.partitions) > 0:
                break
            if time.monotonic() > deadline:
                fail(f"topic {self.topic} did not appear")
            time.sleep(0.1)
        if len(topic.partitions) != self.partitions:
            fail(f"topic {self.topic} has {len(topic.partitions)} partitions, not {self.partitions}")

    def produce(self, producer: Producer, value: bytes | None, *, key=None, headers=None,
                partition=None, codec="none", transaction=None) -> None:
        """Produces one record; its entry in `records` is filled in by the delivery report."""
        entry = {"partition": None, "offset": None, "key": text(key), "value": text(value),
                 "headers": headers_json(headers), "codec": codec, "transaction": transaction}
        self.records.append(entry)

        def delivered(err, msg):
            if err is not None:
                self.errors.append(f"record {entry}: {err}")
            else:
                entry["partition"] = msg.partition()
                entry["offset"] = msg.offset()

        kwargs = {"key": key, "value": value, "on_delivery": delivered}
        if headers is not None:
            kwargs["headers"] = headers
        if partition is not None:
            kwargs["partition"] = partition
        producer.produce(self.topic, **kwargs)

    def flush(self, producer: Producer) -> None:
        if producer.flush(self.timeout) != 0:
            fail("records still unacknowledged after the timeout")
        if self.errors:
            fail("; ".join(self.errors))

    def high_watermarks(self) -> list[int]:
        """Each partition's high watermark, as a fetch reports it (tansu's ListOffsets(latest)
        answers the last batch's base offset plus one instead), after reading to the end."""
        return self.read_all()[1]

    def read_all(self, *, min_records: int = 0, **extra) -> tuple[list[dict], list[int]]:
        """Every record from the beginning to the end of each partition (partition EOF), and
        each partition's high watermark as the last fetch reported it."""
        consumer = Consumer(self.config(**{
            "group.id": f"rowsync-tests-{uuid.uuid4()}",
            "enable.auto.commit": False,
            "enable.partition.eof": True,
            "isolation.level": "read_uncommitted",
            **extra,
        }))
        deadline = time.monotonic() + self.timeout
        try:
            while True:
                records = []
                at_end = set()
                consumer.assign([TopicPartition(self.topic, p, 0) for p in range(self.partitions)])
                while len(at_end) < self.partitions:
                    if time.monotonic() > deadline:
                        fail(f"reading {self.topic} did not reach every partition's end")
                    msg = consumer.poll(0.2)
                    if msg is None:
                        continue
                    if msg.error():
                        if msg.error().code() == KafkaError._PARTITION_EOF:
                            at_end.add(msg.partition())
                            continue
                        fail(f"reading {self.topic}: {msg.error()}")
                    records.append({"partition": msg.partition(), "offset": msg.offset(),
                                    "key": text(msg.key()), "value": text(msg.value()),
                                    "headers": headers_json(msg.headers())})
                if len(records) >= min_records or time.monotonic() > deadline:
                    watermarks = [consumer.get_watermark_offsets(TopicPartition(self.topic, p),
                                                                 cached=True)[1]
                                  for p in range(self.partitions)]
                    return records, watermarks
                consumer.unassign()
                time.sleep(0.2)
        finally:
            consumer.close()


def stats_collector():
    """A stats_cb and the summary it builds: bytes sent, batches, most records in a batch."""
    summary = {"bytes_sent": 0, "batches": 0, "max_records_per_batch": 0, "reports": 0}

    def on_stats(raw: str) -> None:
        stats = json.loads(raw)
        summary["reports"] += 1
        # Totals since the producer started (brokers' txbytes); batch figures per interval.
        summary["bytes_sent"] = sum(b["txbytes"] for b in stats["brokers"].values())
        for topic in stats["topics"].values():
            summary["batches"] += topic["batchcnt"]["cnt"]
            summary["max_records_per_batch"] = max(summary["max_records_per_batch"],
                                                   topic["batchcnt"]["max"])

    return summary, on_stats


def codecs(run: Run, codecs: list[str], kind: str) -> dict:
    """One producer per codec; returns per codec what went over the wire."""
    result = {}
    for index, codec in enumerate(codecs):
        summary, on_stats = stats_collector()
        producer = Producer(run.config(**{
            "compression.type": codec,
            "linger.ms": 200,
            "batch.num.messages": 10_000,
            "statistics.interval.ms": 100,
            "stats_cb": on_stats,
        }))
        value_bytes = 0
        records = 0
        own = range(100 * (index + 1), 100 * (index + 1) + 20)
        if kind == "upsert":
            values = [(i, upsert(i, f"{codec} {i} {PAD}")) for i in own]
            # Ids 1-5: twice in this batch, and again by every later codec.
            values[2:2] = [(i, upsert(i, f"{codec} {i} first {PAD}")) for i in range(1, 6)]
            values += [(i, upsert(i, f"{codec} {i} second {PAD}")) for i in range(1, 6)]
        else:
            values = [(i, delete(i)) for i in own]
        for id_, value in values:
            run.produce(producer, value, key=str(id_).encode(), codec=codec)
            value_bytes += len(value)
            records += 1
        run.flush(producer)
        # Two more statistics reports (one every 100 ms): the last covers a whole interval
        # after the last batch was acknowledged.
        reports = summary["reports"] + 2
        deadline = time.monotonic() + run.timeout
        while summary["reports"] < reports:
            if time.monotonic() > deadline:
                fail("librdkafka sent no statistics")
            producer.poll(0.05)
        del summary["reports"]
        result[codec] = {"records": records, "value_bytes": value_bytes, **summary}
    return result


def headers(run: Run) -> None:
    producer = Producer(run.config(**{"linger.ms": 50}))
    for i in range(1, 11):
        run.produce(producer, upsert(i, f"keyed {i} with null and empty headers"),
                    key=str(i).encode(), headers=NULL_HEADERS)
    for i in range(101, 111):
        run.produce(producer, upsert(i, f"no key {i}"),
                    headers=NULL_HEADERS if i % 2 else None)
    for i in range(201, 206):
        run.produce(producer, upsert(i, f"keyed {i} without headers"), key=str(i).encode())
    run.flush(producer)


def idempotent(run: Run) -> None:
    producer = Producer(run.config(**{"enable.idempotence": True, "linger.ms": 20}))
    for round_ in range(3):
        for i in range(1, 21):
            run.produce(producer, upsert(i, f"idempotent {i} round {round_}"), key=str(i).encode())
        run.flush(producer)


def transactional(run: Run) -> dict:
    producer = Producer(run.config(**{
        "transactional.id": f"rowsync-tests-{run.topic}",
        "linger.ms": 20,
    }))
    producer.init_transactions(run.timeout)
    # (outcome, partitions): interleaved so committed and aborted batches alternate in each
    # partition; the last marker is a commit on partition 0, an abort on 1 and 2.
    plan = [("committed", [0, 1, 2]), ("aborted", [0, 1]), ("committed", [1, 2]),
            ("aborted", [0, 2]), ("committed", [0]), ("aborted", [1, 2])]
    committed_id = 1
    aborted_id = 1000
    for number, (outcome, partitions) in enumerate(plan):
        producer.begin_transaction()
        for partition in partitions:
            for _ in range(3):
                if outcome == "committed":
                    id_, committed_id = committed_id, committed_id + 1
                else:
                    id_, aborted_id = aborted_id, aborted_id + 1
                run.produce(producer, upsert(id_, f"transaction {number} {outcome}"),
                            key=str(id_).encode(), partition=partition, transaction=outcome)
        # Every record acknowledged (offsets known) before the transaction ends.
        run.flush(producer)
        if outcome == "committed":
            producer.commit_transaction(run.timeout)
        else:
            producer.abort_transaction(run.timeout)
    seen, _ = run.read_all(**{"isolation.level": "read_committed"})
    aborted = {(r["partition"], r["offset"]) for r in run.records if r["transaction"] == "aborted"}
    visible = [r for r in seen if (r["partition"], r["offset"]) in aborted]
    return {"read_committed": {"records_seen": len(seen), "aborted_visible": len(visible)}}


def tombstone(run: Run) -> None:
    producer = Producer(run.config())
    run.produce(producer, upsert(1, "before the tombstone"), key=b"1", partition=0)
    run.produce(producer, None, key=b"2", partition=0)
    run.produce(producer, upsert(3, "after the tombstone"), key=b"3", partition=0)
    run.flush(producer)


def invalid_null_header(run: Run) -> None:
    producer = Producer(run.config())
    run.produce(producer, upsert(1, "before"), key=b"1", partition=0)
    run.produce(producer, b"not json", key=b"bad", headers=NULL_HEADERS, partition=0)
    run.produce(producer, upsert(2, "after"), key=b"2", partition=0)
    run.flush(producer)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--bootstrap", required=True)
    parser.add_argument("--topic", required=True)
    parser.add_argument("--scenario", required=True,
                        choices=["codecs", "delete-codecs", "headers", "idempotent",
                                 "transactional", "tombstone", "invalid-null-header", "consume"])
    parser.add_argument("--partitions", type=int, default=3)
    parser.add_argument("--min-records", type=int, default=0)
    parser.add_argument("--timeout", type=float, default=20.0)
    args = parser.parse_args()
    run = Run(args)
    out = {"scenario": args.scenario, "topic": args.topic, "partitions": args.partitions}

    if args.scenario == "consume":
        out["records"], out["high_watermarks"] = run.read_all(min_records=args.min_records)
        print(json.dumps(out))
        return

    run.ensure_topic()
    if args.scenario == "codecs":
        out["codecs"] = codecs(run, CODECS, "upsert")
    elif args.scenario == "delete-codecs":
        out["codecs"] = codecs(run, ["lz4", "zstd"], "delete")
    elif args.scenario == "headers":
        headers(run)
    elif args.scenario == "idempotent":
        idempotent(run)
    elif args.scenario == "transactional":
        out.update(transactional(run))
    elif args.scenario == "tombstone":
        tombstone(run)
    elif args.scenario == "invalid-null-header":
        invalid_null_header(run)
    out["records"] = run.records
    out["high_watermarks"] = run.high_watermarks()
    print(json.dumps(out))


if __name__ == "__main__":
    main()
