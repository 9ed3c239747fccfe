"""Quix Streams peer of weir's processor, for side-by-side benchmarks.

It does weir's processor's job with Quix Streams on the same Kafka broker and
Schema Registry: it reads Avro events (Confluent wire format) from --input,
drops duplicate (tenant, event_id)s, counts events and distinct users per
event name and 1-minute tumbling window of event time, and writes each closed
window once, as JSON keyed by name, to --output:
    {"name": ..., "window_start": <epoch ms>, "count": n, "users": n}

The benchmark runs it with the venv that tests/peer/venv.sh makes:
    "$(tests/peer/venv.sh | tail -n1)" tests/peer/quix_processor.py \\
        --brokers 127.0.0.1:9092 --registry http://127.0.0.1:8081 \\
        --input events.raw --output quix.windows --group quix-peer-1 --expect N
It stops once N input records were consumed and nothing was processed for
--idle-secs, then prints one JSON line to stdout (logs go to stderr):
    {"input", "duplicates_dropped", "windows_emitted", "late_dropped",
     "seconds", "events_per_sec", "guarantee"}
"seconds" runs from the first input record processed to the last record
processed in any stage. It exits with 1 on an error, and with 3 when
--max-secs pass before all N records were processed.

It is two Quix applications, as a Quix pipeline of two services would be:
"dedup" (this process) reads --input, drops duplicates and re-keys each event
by name into the topic <group>.by-name; "windows" (a child process) reads that
topic and does the windows. The re-keying is what StreamingDataFrame.group_by
does, but group_by reads its repartition topic with the same consumer as the
input, and on nisshi that makes the input partitions drift apart by up to the
whole preload in event time (see --fetch-bytes), far past any usable grace.
"""

import argparse
import json
import logging
import multiprocessing
import os
import queue
import shutil
import sys
import tempfile
import threading
import time
from datetime import datetime, timedelta, timezone

from quixstreams import Application
from quixstreams.dataframe.windows import Collector, Count
from quixstreams.models.serializers.avro import AvroDeserializer
from quixstreams.models.serializers.schema_registry import SchemaRegistryClientConfig
from quixstreams.models.topics import TopicConfig

log = logging.getLogger("quix-peer")
EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)
MS = timedelta(milliseconds=1)
KAFKA_DEFAULT_RETENTION_MS = str(7 * 24 * 3600 * 1000)

# Quix closes a window once the newest event time seen for its key (here the
# event name: closing_strategy="key") passes the window's end plus the grace;
# a later event for that window is dropped as late. The name-keyed stream
# merges the input partitions, so it is out of order by how far they drift
# apart while being read: about one fetch (--fetch-bytes) each. The grace must
# cover that drift, and also at the very end, where a partition's last record,
# a flush event 10 minutes past the rest, can come before the other
# partitions' last fetch. So the grace is the flush gap plus a 5-minute
# margin: the flush events close every window that ends 5 minutes or more
# before the last real event, no real event is late, and the last few real
# windows stay open and are not emitted (compare the emitted windows only).
WINDOW = timedelta(minutes=1)
GRACE = timedelta(minutes=15)


class DistinctCount(Collector):
    """Number of distinct non-null values of a column in a window."""

    def result(self, items):
        return len({item for item in items if item is not None})


def event_time_ms(value, headers, timestamp, timestamp_type) -> int:
    # fastavro turns timestamp-millis into an aware datetime; integer
    # arithmetic keeps the exact millisecond (float seconds may not).
    ts = value["timestamp"]
    return ts if isinstance(ts, int) else (ts - EPOCH) // MS


def parse_args(argv):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--brokers", required=True, help="HOST:PORT of the Kafka broker")
    p.add_argument("--registry", required=True, help="Schema Registry URL")
    p.add_argument("--input", required=True, help="topic of Avro events")
    p.add_argument("--output", required=True, help="topic for the JSON windows")
    p.add_argument("--group", required=True,
                   help="consumer group; it also names the internal topics, so use a new one per run")
    p.add_argument("--expect", type=int, required=True, help="input records to consume before stopping")
    p.add_argument("--idle-secs", type=float, default=3.0)
    p.add_argument("--guarantee", choices=["exactly-once", "at-least-once"], default="exactly-once")
    p.add_argument("--commit-interval", type=float, default=0.5, help="seconds")
    p.add_argument("--max-secs", type=float, default=900.0,
                   help="give up (exit 3) if the records have not all been processed by then")
    p.add_argument("--fetch-bytes", type=int, default=16384,
                   help="size of one fetch: it bounds how far the input partitions drift apart")
    p.add_argument("--state-dir", help="RocksDB state directory (default: a fresh temporary one)")
    return p.parse_args(argv)


def make_app(args, group, state_dir, on_processed, small_fetches=False) -> Application:
    # nisshi serves the first partition of a fetch that has data up to the
    # whole fetch.max.bytes (Kafka would stop at max.partition.fetch.bytes),
    # and librdkafka starts each fetch one partition further round the
    # assigned ones. So a small fetch.max.bytes makes the consumer take the
    # input partitions in turns of one small fetch each, which keeps them
    # close in event time; a large one hands over a whole partition at once.
    # An assigned partition with nothing to read gives its turn to the next
    # one: the reason the input gets a consumer of its own (see the top).
    # The windows stage needs none of this: each name's records come in
    # order from one partition.
    fetch = {
        "fetch.max.bytes": args.fetch_bytes,
        "max.partition.fetch.bytes": args.fetch_bytes,
        # librdkafka wants fetch.max.bytes >= message.max.bytes when both are set.
        "message.max.bytes": args.fetch_bytes,
    } if small_fetches else {}
    return Application(
        broker_address=args.brokers,
        consumer_group=group,
        auto_offset_reset="earliest",
        processing_guarantee=args.guarantee,
        commit_interval=args.commit_interval,
        # A state directory of its own, so a rerun never starts from old
        # RocksDB state (a reused group restores it from its changelogs).
        state_dir=state_dir,
        consumer_extra_config=fetch,
        on_message_processed=on_processed,
        loglevel="INFO",
    )


def with_retention(topic) -> None:
    # Quix gives its changelog topics the retention.ms of the topic they
    # follow, read with DescribeConfigs; nisshi answers that with no entries
    # for a topic created without configs, so fill in Kafka's default.
    cfg = topic.broker_config
    if "retention.ms" not in cfg.extra_config:
        topic.broker_config = TopicConfig(
            num_partitions=cfg.num_partitions,
            replication_factor=cfg.replication_factor,
            extra_config={**cfg.extra_config, "retention.ms": KAFKA_DEFAULT_RETENTION_MS},
        )


def by_name_topic(args) -> str:
    return f"{args.group}.by-name"


class Clock:
    """Counts the records a stage processed and when it processed them."""

    def __init__(self, topic):
        self.topic, self.count, self.first, self.last = topic, 0, None, None

    def __call__(self, topic, partition, offset):
        now = time.time()
        if topic == self.topic:
            self.count += 1
            if self.first is None:
                self.first = now
        self.last = now

    def idle_for(self, secs) -> bool:
        return self.last is not None and time.time() - self.last >= secs


def run_until(app, done, max_secs) -> bool:
    """Runs the app until done() holds; False if max_secs passed first."""
    started, timed_out, returned = time.time(), [], threading.Event()

    def watch():
        while not done():
            if time.time() - started > max_secs:
                timed_out.append(True)
                break
            time.sleep(0.05)
        # Again and again: a stop() that comes before run() has set itself
        # running is forgotten.
        while not returned.wait(0.2):
            app.stop()

    threading.Thread(target=watch, daemon=True).start()
    try:
        app.run()
    finally:
        returned.set()
    return not timed_out


def windows_stage(args, state_dir, ready, forwarded, dedup_failed, results) -> None:
    """The child process: by-name topic -> 1-minute windows -> --output."""
    logging.basicConfig(level=logging.INFO, stream=sys.stderr)
    clock = Clock(by_name_topic(args))
    stats = {"windows_emitted": 0, "late_dropped": 0}
    app = make_app(args, f"{args.group}.windows", state_dir, clock)
    events = app.topic(by_name_topic(args), key_deserializer="string", value_deserializer="json",
                       timestamp_extractor=lambda value, headers, ts, ts_type: value["ts"])
    with_retention(events)
    output = app.topic(args.output, key_serializer="string", value_serializer="json")

    def on_late(value, key, timestamp_ms, late_by_ms, start, end, *where) -> bool:
        stats["late_dropped"] += 1
        return stats["late_dropped"] <= 10  # log the first few only

    def as_output(window, key, timestamp, headers):
        stats["windows_emitted"] += 1
        return {"name": key, "window_start": window["start"],
                "count": window["count"], "users": window["users"]}

    sdf = app.dataframe(events)
    sdf = (
        sdf.tumbling_window(WINDOW, grace_ms=GRACE, on_late=on_late)
        .agg(count=Count(), users=DistinctCount("user"))
        .final(closing_strategy="key")
    )
    sdf.apply(as_output, metadata=True).to_topic(output)

    def done():
        if dedup_failed.is_set():
            return True
        n = forwarded.value  # -1 until the dedup stage has stopped
        return n >= 0 and clock.count >= n and (n == 0 or clock.idle_for(args.idle_secs))

    ready.set()
    finished = run_until(app, done, args.max_secs) and not dedup_failed.is_set()
    results.put({**stats, "finished": finished, "first": clock.first, "last": clock.last})


def main(argv=None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, stream=sys.stderr)
    state_root = args.state_dir or tempfile.mkdtemp(prefix="quix-peer-state-")
    try:
        return run(args, state_root)
    finally:
        if not args.state_dir:
            shutil.rmtree(state_root, ignore_errors=True)


def run(args, state_root) -> int:
    """The dedup stage here, the windows stage in a child; returns the exit status."""
    clock = Clock(args.input)
    stats = {"input": 0, "duplicates_dropped": 0}

    app = make_app(args, args.group, os.path.join(state_root, "dedup"), clock, small_fetches=True)
    registry = SchemaRegistryClientConfig(url=args.registry)
    events = app.topic(
        args.input,
        key_deserializer="string",
        value_deserializer=AvroDeserializer(schema_registry_client_config=registry),
        timestamp_extractor=event_time_ms,
    )
    with_retention(events)
    by_name = app.topic(
        by_name_topic(args), key_serializer="string", value_serializer="json",
        config=TopicConfig(num_partitions=events.broker_config.num_partitions, replication_factor=1,
                           extra_config={"retention.ms": KAFKA_DEFAULT_RETENTION_MS}),
    )

    def first_seen(value, state) -> bool:
        # State is scoped by the message key, the event_id; the tenant
        # completes the pair.
        if state.exists(value["tenant"]):
            stats["duplicates_dropped"] += 1
            return False
        state.set(value["tenant"], True)
        return True

    sdf = app.dataframe(events)
    sdf = sdf.filter(first_seen, stateful=True)
    # Only what the windows need goes on; the record's timestamp stays the
    # event time, and it travels in the value too.
    sdf = sdf.apply(lambda e: {
        "name": e["name"],
        "ts": event_time_ms(e, None, None, None),
        "user": e["user_id"] if e["user_id"] is not None else e["anonymous_id"],
    })
    sdf.to_topic(by_name, key=lambda e: e["name"])

    # spawn, not fork: this process already runs librdkafka's threads.
    mp = multiprocessing.get_context("spawn")
    ready, dedup_failed = mp.Event(), mp.Event()
    forwarded, results = mp.Value("q", -1), mp.Queue()
    child = mp.Process(target=windows_stage, name="quix-peer-windows", daemon=True, args=(
        args, os.path.join(state_root, "windows"), ready, forwarded, dedup_failed, results))
    child.start()
    started = time.time()
    try:
        try:
            # The windows stage takes seconds to start (a new interpreter,
            # its topics); the clock should not run meanwhile.
            while not ready.wait(0.1):
                if not child.is_alive():
                    raise RuntimeError(f"the windows stage exited with {child.exitcode}")
                if time.time() - started > args.max_secs:
                    raise TimeoutError("the windows stage did not start")
            finished = run_until(
                app, lambda: clock.count >= args.expect and clock.idle_for(args.idle_secs), args.max_secs)
        except BaseException:
            dedup_failed.set()
            raise
        if not finished:
            dedup_failed.set()
        forwarded.value = clock.count - stats["duplicates_dropped"]
        window_stats = {"finished": False}
        while child.is_alive() or not results.empty():
            try:
                window_stats = results.get(timeout=0.5)
                break
            except queue.Empty:
                pass
        child.join(timeout=60)
    finally:
        if child.is_alive():
            dedup_failed.set()
            child.join(timeout=10)
        if child.is_alive():
            child.kill()

    if child.exitcode != 0:
        log.error("the windows stage failed (exit code %s)", child.exitcode)
        return 1
    if not finished or not window_stats["finished"]:
        log.error("gave up after %.0f s: %d of %d input records consumed, %s",
                  args.max_secs, clock.count, args.expect,
                  "the windows stage did not finish" if finished else "the windows stage stopped")
        return 3
    stats["input"] = clock.count
    last = max(t for t in (clock.last, window_stats["last"]) if t is not None)
    seconds = last - clock.first
    print(json.dumps({
        **stats,
        "windows_emitted": window_stats["windows_emitted"],
        "late_dropped": window_stats["late_dropped"],
        "seconds": round(seconds, 3),
        "events_per_sec": round(clock.count / seconds, 1) if seconds > 0 else None,
        "guarantee": args.guarantee,
    }), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
