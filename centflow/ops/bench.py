"""``make bench``: throughput, latency and memory of the whole pipeline, beside raw baselines.

Everything is measured in one run on one machine, because shared machines are
noisy: a figure only means something next to the baseline taken minutes
earlier. The steps:

1. generate a seeded log (generator throughput);
2. start a local broker and publish the log to a 4-partition topic (producer
   throughput);
3. raw baselines over the same messages: consume them from Kafka and
   JSON-decode each one, doing nothing else; read the file and decode each line;
4. the pipeline, until idle, in replay mode and in Kafka mode, with one worker
   process and with two (events/s over the workers' wall time, which includes
   their start-up; Kafka runs exclude the idle wait that ends them);
5. decision latency: the pipeline follows a topic fed at a fixed rate by an
   unkeyed producer, while plain consumers watch the input and the decisions:
   the broker's own hop, what the pipeline adds to it (the input seen to the
   decision produced), the decision's hop out and the whole, per payment
   (`_latency`; ``--only latency`` runs this alone, on a small log);
6. peak resident memory of each worker process, and the CPU time of each
   pipeline run (runner and workers, user + system) per event, one process
   against two (`_cpu_s` says how it is measured);
7. the DuckDB load of the one-process replay's dataset, first and again;
8. the whole ``centflow run --replay`` command, a process of its own (`_whole_run`):
   the share of its wall time spent after the pipeline finished (DuckDB load and
   report), goal 15 %;
9. statement matching (`centflow.ops.bench_recon`): 1,000,000 payouts against
   about as many statement entries, goal 10 s.

Each throughput is the median of ``--repeat`` runs (3 by default; their
range is printed beside it), and the one- and two-process runs alternate, so
that a slow minute on the machine does not land on one of them only.

The results are printed and, with ``--write FILE``, written as Markdown.
"""

from __future__ import annotations

import argparse
import math
import os
import platform
import resource
import shutil
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import duckdb
import msgspec
from confluent_kafka import OFFSET_BEGINNING, Consumer, Producer, TopicPartition

from centflow.config import FxConfig, PipelineConfig
from centflow.generate.logs import write_fx_rates, write_log, write_payee_directory
from centflow.ingest.decode import decode_message
from centflow.ingest.events import Payment
from centflow.ingest.replay import iter_lines
from centflow.ingest.timeparse import parse_rfc3339_us
from centflow.ops.bench_money import measure as measure_money
from centflow.ops.bench_recon import measure as measure_recon
from centflow.ops.broker import LocalBroker
from centflow.ops.kafka import client_config, ensure_topics, produce_log
from centflow.ops.runner import RunStats, clear_state, run_workers
from centflow.ops.status import read_status
from centflow.recon.tables import TABLES
from sinks.duckdb import DATABASE_NAME, materialize

PARTITIONS = 4
WINDOW_S = 3_600
LATENESS_S = 120
IDLE_S = 1.0
QUIET_S = 1.5
LATENCY_RATE_PER_S = 5_000
LATENCY_MESSAGES = 25_000
LATENCY_TAIL_S = 1.0  # published after the measured payments (unmeasured): the stream
# goes on, so the last measured ones need not wait for the partitions to go idle
LATENCY_LOG_EVENTS = 40_000  # the log of `--only latency` (enough distinct payments)
# The measuring consumers: the pipeline's client settings, answered within 5 ms.
LATENCY_CONSUMER = {
    "group.id": "bench-latency",
    "enable.auto.commit": False,
    "enable.partition.eof": False,
    "fetch.queue.backoff.ms": 100,
    "fetch.wait.max.ms": 5,
}
CPU_RATIO_GOAL = 1.15  # two processes' CPU per event over one's
LOAD_SHARE_GOAL = 0.15  # of `centflow run`'s wall time, after the pipeline finished


def _drain(client: dict[str, str], topic: str, partitions: int, decode: bool) -> tuple[int, float]:
    """Consume a topic until quiet; return (messages, seconds from first to last)."""
    consumer = Consumer(
        {**client, "group.id": "bench", "enable.auto.commit": False, "fetch.queue.backoff.ms": 100}
    )
    consumer.assign(
        [TopicPartition(topic, number, OFFSET_BEGINNING) for number in range(partitions)]
    )
    decoder = msgspec.json.Decoder()
    count = 0
    first_s = last_s = 0.0
    while True:
        records = consumer.consume(10_000, 0.2)
        now_s = time.perf_counter()
        if not records:
            if count and now_s - last_s > QUIET_S:
                break
            if not count and first_s and now_s - first_s > 30:
                break
            first_s = first_s or now_s
            continue
        if not count:
            first_s = now_s
        for record in records:
            value = record.value()
            if decode and value:
                try:
                    decoder.decode(value)
                except (msgspec.DecodeError, ValueError):
                    pass
        count += len(records)
        last_s = time.perf_counter()
    consumer.close()
    return count, max(last_s - first_s, 1e-9)


def _file_baseline(log: Path) -> tuple[int, float]:
    decoder = msgspec.json.Decoder()
    started_s = time.perf_counter()
    count = 0
    for _, _, raw in iter_lines(log):
        try:
            decoder.decode(raw)
        except (msgspec.DecodeError, ValueError):
            pass
        count += 1
    return count, time.perf_counter() - started_s


def _cpu_s() -> float:
    """User + system CPU seconds of this process and of every child process reaped so far.

    A pipeline run's CPU time is the difference of two readings around
    `run_workers`. The runner runs in this process (``RUSAGE_SELF``: its threads
    too, such as a broker watch; the benchmark does nothing else meanwhile). The
    workers are its child processes, and ``RUSAGE_CHILDREN`` adds a child's time
    when it is reaped, with the time of the children it reaped itself (a worker's
    log reader): `run_workers` reaps every worker before it returns, so the
    difference holds all of them, measured by the kernel from outside, start-up
    and shut-down included. The local broker is a child too, but is reaped only
    when the benchmark stops it: its time never counts. (Sampling
    ``/proc/<pid>/stat`` instead would miss what a worker spends after the last
    sample, and its reaped children unless they were reaped before it.)
    """
    own = resource.getrusage(resource.RUSAGE_SELF)
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def _pipeline(config: PipelineConfig, workers: int) -> tuple[RunStats, float, float]:
    """Run the pipeline to its end; return what the runner measured, the seconds
    from the first message read to the last event settled (start-up excluded), and
    the CPU seconds of the runner and its workers (`_cpu_s`)."""
    clear_state(Path(config.out_dir))
    cpu_before_s = _cpu_s()
    stats = run_workers(config, workers, snapshot_s=10)
    cpu_s = _cpu_s() - cpu_before_s
    statuses = read_status(Path(config.out_dir))
    first_s = min(
        (status.first_s for status in statuses if status.kind == "input" and status.first_s),
        default=0.0,
    )
    last_s = max(
        (status.last_s for status in statuses if status.kind == "settled"), default=first_s
    )
    return stats, max(last_s - first_s, 1e-9), cpu_s


def _duckdb_load(out: Path) -> dict[str, float]:
    """Seconds to load a run's Parquet dataset into DuckDB, the first time and again
    (what ``centflow run`` does at its end and ``centflow recon`` each time)."""
    (out / DATABASE_NAME).unlink(missing_ok=True)
    started_s = time.perf_counter()
    database = materialize(out)
    first_s = time.perf_counter() - started_s
    started_s = time.perf_counter()
    materialize(out)
    again_s = time.perf_counter() - started_s
    with duckdb.connect(str(database), read_only=True) as connection:
        rows = sum(
            connection.execute(f"SELECT count(*) FROM {table}").fetchall()[0][0] for table in TABLES
        )
    return {"rows": rows, "first_s": first_s, "again_s": again_s}


def _whole_run(log: Path, out: Path) -> dict[str, float]:
    """The whole ``centflow run --replay LOG --out OUT --fresh`` command in a process of
    its own, timed in phases from outside: the pipeline phase ends when its
    ``pipeline finished`` line arrives (read as it is written, unbuffered), the load
    when ``centflow.duckdb`` was last written (it is built beside and renamed over,
    so its mtime is the end of the load), and the report when the process exits."""
    clear_state(out)
    command = [sys.executable, "-m", "centflow", "run", "--replay", str(log), "--out", str(out)]
    command += ["--window-s", str(WINDOW_S), "--lateness-s", str(LATENESS_S)]
    started_s = time.time()
    process = subprocess.Popen(
        command,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    assert process.stdout is not None
    finished_s = 0.0
    tail: list[bytes] = []
    for line in process.stdout:
        if not finished_s and b"pipeline finished in" in line:
            finished_s = time.time()
        tail = [*tail[-20:], line]
    code = process.wait()
    ended_s = time.time()
    if code != 0 or not finished_s:
        raise RuntimeError(f"{' '.join(command)} exited {code}: {b''.join(tail).decode()}")
    loaded_s = min(max((out / DATABASE_NAME).stat().st_mtime, finished_s), ended_s)
    wall_s = ended_s - started_s
    return {
        "wall_s": wall_s,
        "pipeline_s": finished_s - started_s,
        "load_s": loaded_s - finished_s,
        "report_s": ended_s - loaded_s,
        "after_share": (ended_s - finished_s) / wall_s,
    }


class _Watch:
    """A plain consumer of some partitions in a thread of its own: when (wall-clock
    seconds) it first saw each message, by a name the caller derives from the message,
    and the message's timestamp (ms). Bounded: it stops when asked, or at `until_s`."""

    def __init__(
        self,
        client: dict[str, str],
        topic: str,
        name_of: Callable[[Any], bytes | None],
        until_s: float,
    ) -> None:
        self.seen_s: dict[bytes, float] = {}
        self.stamp_ms: dict[bytes, int] = {}
        self._name_of = name_of
        self._until_s = until_s
        self._stop = threading.Event()
        self._consumer = Consumer({**client, **LATENCY_CONSUMER})
        self._consumer.assign(
            [TopicPartition(topic, number, OFFSET_BEGINNING) for number in range(PARTITIONS)]
        )
        self._thread = threading.Thread(target=self._run, daemon=True)

    def start(self) -> None:
        # The first fetches (offset lookup, connection) happen before the clock starts.
        warm_until_s = time.monotonic() + 1.0
        while time.monotonic() < warm_until_s:
            self._consumer.consume(1000, 0.1)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set() and time.monotonic() < self._until_s:
            records = self._consumer.consume(1000, 0.05)
            now_s = time.time()
            for record in records:
                if record.error() is not None:
                    continue
                name = self._name_of(record)
                if name is not None and name not in self.seen_s:
                    self.seen_s[name] = now_s
                    self.stamp_ms[name] = record.timestamp()[1]
        self._consumer.close()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(10)


def _percentiles(values_ms: list[float]) -> dict[str, float]:
    """p50, p99 (nearest rank) and max of `values_ms`; empty: no figures.

    >>> _percentiles([float(n) for n in range(1, 101)])
    {'p50_ms': 50.0, 'p99_ms': 99.0, 'max_ms': 100.0}
    """
    if not values_ms:
        return {}
    ordered = sorted(values_ms)

    def rank(share: float) -> float:
        return ordered[max(math.ceil(share * len(ordered)) - 1, 0)]

    return {"p50_ms": rank(0.50), "p99_ms": rank(0.99), "max_ms": ordered[-1]}


def _latency_lines(log: Path, count: int) -> list[tuple[str, bytes]]:
    """The first `count` distinct valid payments of the log: (event id, line)."""
    lines = []
    seen = set()
    for _, _, raw in iter_lines(log):
        event = decode_message(raw, "bench", 2**62, 0)
        if isinstance(event, Payment) and event.type == "payment" and event.event_id not in seen:
            seen.add(event.event_id)
            lines.append((event.event_id, raw))
        if len(lines) >= count:
            break
    return lines


def _latency(
    client: dict[str, str], log: Path, out: Path, topic: str = "latency"
) -> dict[str, Any]:
    """Decision latency while the pipeline (one process, risk scoring on: decisions
    come only from the risk step) follows a topic fed at `LATENCY_RATE_PER_S`, and
    how much of it the pipeline adds to the broker's own hop.

    The producer is unkeyed with librdkafka's defaults (``linger.ms`` 5, sticky
    partitioning of keyless messages, message timestamps its own clock), as most
    producers are. Two plain consumers, each in a thread of its own with the same
    client settings (``fetch.wait.max.ms`` 5), watch the input topic and the
    decisions topic. Per payment, in wall-clock time (one machine, one clock):

    - ``hop_in``: publication (just before ``produce``) to the plain consumer seeing
      the input: the broker's own hop, which the pipeline pays too before it can start;
    - ``added``: the plain consumer seeing the input to the pipeline producing the
      decision, that is the decision message's timestamp, which librdkafka stamps when
      the pipeline calls ``produce``: what the pipeline adds. Timestamps are whole
      milliseconds, truncated, so this reads up to 1 ms short (and can be slightly
      negative when the pipeline's own consumer was quicker than the plain one);
    - ``hop_out``: that timestamp to the plain consumer seeing the decision: the
      decision's own hop out through the broker (its producer's linger included);
    - ``added_seen``: the input seen to the decision seen, that is ``added`` plus
      ``hop_out``: what a consumer of the decisions topic waits beyond the input's hop;
    - ``end_to_end``: publication to the decision seen.

    After the measured payments the producer goes on for `LATENCY_TAIL_S` (not
    measured), as a stream does: otherwise the last ones would wait for every
    partition to go idle before their second is complete. The worker's CPU time over
    the measured span, as a share of one core, is reported beside (``/proc``): on a
    shared machine it varies much less than the wall-clock figures.
    """
    ensure_topics(
        client, {topic: PARTITIONS, f"{topic}.dlq": PARTITIONS, f"{topic}.decisions": PARTITIONS}
    )
    tail = int(LATENCY_TAIL_S * LATENCY_RATE_PER_S)
    lines = _latency_lines(log, LATENCY_MESSAGES + tail)
    event_of = {raw: event_id.encode() for event_id, raw in lines[:LATENCY_MESSAGES]}
    config = PipelineConfig(
        out_dir=str(out),
        kafka=client,
        partitions=tuple(f"{topic}/{n}" for n in range(PARTITIONS)),
        topics=msgspec.structs.replace(
            PipelineConfig(out_dir="").topics,
            payments=topic,
            dead_letters=f"{topic}.dlq",
            decisions=f"{topic}.decisions",
        ),
        window_length_s=WINDOW_S,
        lateness_s=LATENESS_S,
        idle_s=10.0,
    )
    clear_state(out)
    runner = threading.Thread(target=run_workers, args=(config, 1, 10), daemon=True)
    runner.start()
    time.sleep(4.0)  # let the worker start and assign its partitions
    until_s = time.monotonic() + len(lines) / LATENCY_RATE_PER_S + 60
    inputs = _Watch(client, topic, lambda record: event_of.get(record.value()), until_s)
    decisions = _Watch(client, f"{topic}.decisions", lambda record: record.key(), until_s)
    producer = Producer(dict(client))  # unkeyed, librdkafka's defaults
    producer.list_topics(topic, timeout=10)  # connected before the clock starts
    inputs.start()
    decisions.start()
    sent_s: dict[bytes, float] = {}
    switch_interval_s = sys.getswitchinterval()
    sys.setswitchinterval(0.0005)  # the watching threads take the interpreter lock promptly
    worker_cpu = _ChildCpu()
    try:
        started_s = time.monotonic()
        for index, (event_id, raw) in enumerate(lines):
            due_s = started_s + index / LATENCY_RATE_PER_S
            while time.monotonic() < due_s:
                time.sleep(0.0002)
            if index < LATENCY_MESSAGES:
                sent_s[event_id.encode()] = time.time()
            elif index == LATENCY_MESSAGES:
                worker_cpu.stop()
            producer.produce(topic, raw)
            producer.poll(0)
        producer.flush(30)
        deadline_s = time.monotonic() + 30
        while len(decisions.seen_s) < len(sent_s) and time.monotonic() < deadline_s:
            time.sleep(0.1)
    finally:
        sys.setswitchinterval(switch_interval_s)
        inputs.stop()
        decisions.stop()
    runner.join(60)
    figures = _latency_figures(sent_s, inputs, decisions)
    figures["worker_cpu_share"] = worker_cpu.share()
    return figures


class _ChildCpu:
    """The CPU time (user + system) of this process's pipeline worker processes from
    its creation to `stop`, as a share of one core over that wall time; Linux only
    (``/proc``), else NaN. The worker is the bench's child: its time is read live."""

    def __init__(self) -> None:
        self._started_s = time.monotonic()
        self._cpu_start_s = self._read()
        self._share = float("nan")

    @staticmethod
    def _read() -> float:
        total_ticks = 0
        try:
            for stat in Path("/proc").glob("[0-9]*/stat"):
                fields = stat.read_text().rpartition(")")[2].split()
                if int(fields[1]) != os.getpid():  # fields[1] is the parent's pid
                    continue
                if b"bytewax.run" in (stat.parent / "cmdline").read_bytes():  # not the broker
                    total_ticks += int(fields[11]) + int(fields[12])  # utime, stime
        except OSError:
            return float("nan")
        return total_ticks / os.sysconf("SC_CLK_TCK")

    def stop(self) -> None:
        wall_s = time.monotonic() - self._started_s
        self._share = (self._read() - self._cpu_start_s) / max(wall_s, 1e-9)

    def share(self) -> float:
        return self._share


def _latency_figures(
    sent_s: dict[bytes, float], inputs: _Watch, decisions: _Watch
) -> dict[str, Any]:
    """Percentiles of each part of the latency (see `_latency`), over the payments
    whose input and decision were both seen."""
    keys = [key for key in sent_s if key in inputs.seen_s and key in decisions.seen_s]
    parts: dict[str, list[float]] = {
        "hop_in": [], "added": [], "hop_out": [], "added_seen": [], "end_to_end": []
    }  # fmt: skip
    for key in keys:
        sent, seen_in, seen_out = sent_s[key], inputs.seen_s[key], decisions.seen_s[key]
        produced = decisions.stamp_ms[key] / 1000
        parts["hop_in"].append((seen_in - sent) * 1000)
        parts["added"].append((produced - seen_in) * 1000)
        parts["hop_out"].append((seen_out - produced) * 1000)
        parts["added_seen"].append((seen_out - seen_in) * 1000)
        parts["end_to_end"].append((seen_out - sent) * 1000)
    figures: dict[str, Any] = {
        "messages": len(keys),
        "sent": len(sent_s),
        "inputs_seen": len(inputs.seen_s),
        "decisions_seen": len(decisions.seen_s),
    }
    for name, values in parts.items():
        figures[name] = _percentiles(values)
    return figures


def _median(figures: dict[str, Any], key: str, values: list[float]) -> None:
    """The median of repeated measurements as `key`, their range as ``<key>_range``."""
    figures[key] = statistics.median(values)
    figures[f"{key}_range"] = (min(values), max(values))


def run(events: int, work: Path, repeat: int = 3) -> dict[str, Any]:
    """Every measurement; returns the figures."""
    work.mkdir(parents=True, exist_ok=True)
    figures: dict[str, Any] = {"events": events}
    log = work / "bench.jsonl.gz"
    started_s = time.perf_counter()
    write_log(
        log,
        events,
        seed=1,
        start_us=parse_rfc3339_us("2026-11-02T00:00:00Z"),
        duration_s=6 * 3600,
        window_hint_s=300,
    )
    figures["generate_per_s"] = events / (time.perf_counter() - started_s)
    lines = sum(1 for _ in iter_lines(log))
    figures["lines"] = lines
    rates = []
    for _ in range(repeat):
        count, seconds = _file_baseline(log)
        rates.append(count / seconds)
    _median(figures, "raw_file_per_s", rates)
    # FX inputs over the same span (the generator's rates and payee directory)
    write_fx_rates(work / "bench.fx-rates.jsonl.gz", seed=1, start_us=parse_rfc3339_us("2026-11-02T00:00:00Z"), duration_s=6 * 3600)  # fmt: skip
    write_payee_directory(work / "bench.payees.jsonl", seed=1, events=events)
    fx = FxConfig(str(work / "bench.fx-rates.jsonl.gz"), str(work / "bench.payees.jsonl"))
    figures["money"] = measure_money(log, WINDOW_S, LATENESS_S, repeat, fx=fx)
    figures["recon"] = measure_recon(directory=work)
    replay = PipelineConfig(
        out_dir=str(work / "replay"),
        replay_path=str(log),
        window_length_s=WINDOW_S,
        lateness_s=LATENESS_S,
    )
    runs: dict[int, list[tuple[float, float, float, float]]] = {1: [], 2: []}
    for _ in range(repeat):
        for workers in (1, 2):
            partitions = tuple(f"replay/{index}" for index in range(workers))
            config = msgspec.structs.replace(replay, partitions=partitions)
            result, busy_s, cpu_s = _pipeline(config, workers)
            runs[workers].append(
                (
                    lines / result.seconds,
                    lines / busy_s,
                    max(result.peak_rss_bytes) / 2**20,
                    cpu_s / lines,
                )
            )
            if workers == 1 and "duckdb" not in figures:
                figures["duckdb"] = _duckdb_load(Path(replay.out_dir))
    _pipeline_figures(figures, "replay", runs)
    figures["whole_run"] = _whole_run(log, work / "whole-run")
    shutil.rmtree(work / "whole-run", ignore_errors=True)
    with LocalBroker(log_path=work / "broker.log") as broker:
        client = client_config(broker.bootstrap)
        ensure_topics(
            client,
            {"payments": PARTITIONS, "payments.dlq": PARTITIONS, "payments.decisions": PARTITIONS},
        )
        produced = produce_log(log, client, "payments")
        figures["produce_per_s"] = produced.rate
        rates = []
        for _ in range(repeat):
            count, seconds = _drain(client, "payments", PARTITIONS, decode=True)
            rates.append(count / seconds)
        _median(figures, "raw_kafka_per_s", rates)
        figures["raw_kafka_messages"] = count
        kafka = PipelineConfig(
            out_dir=str(work / "kafka"),
            kafka=client,
            partitions=tuple(f"payments/{n}" for n in range(PARTITIONS)),
            window_length_s=WINDOW_S,
            lateness_s=LATENESS_S,
            idle_s=IDLE_S,
        )
        runs = {1: [], 2: []}
        for _ in range(repeat):
            for workers in (1, 2):
                result, busy_s, cpu_s = _pipeline(kafka, workers)
                runs[workers].append(
                    (
                        lines / max(result.seconds - IDLE_S, 1e-9),
                        lines / max(busy_s - IDLE_S, 1e-9),
                        max(result.peak_rss_bytes) / 2**20,
                        cpu_s / lines,
                    )
                )
        _pipeline_figures(figures, "kafka", runs)
        figures["repeat"] = repeat
        figures["latency"] = _latency(client, log, work / "latency")
    return figures


def _pipeline_figures(
    figures: dict[str, Any], mode: str, runs: dict[int, list[tuple[float, float, float, float]]]
) -> None:
    """Medians (and ranges) of repeated pipeline runs, the largest peak memory."""
    for workers, measured in runs.items():
        key = f"{mode}_{workers}w"
        _median(figures, f"{key}_per_s", [rate for rate, _, _, _ in measured])
        _median(figures, f"{key}_busy_per_s", [busy for _, busy, _, _ in measured])
        figures[f"{key}_rss_mib"] = max(rss for _, _, rss, _ in measured)
        _median(figures, f"{key}_cpu_s_per_event", [cpu for _, _, _, cpu in measured])


LATENCY_PARTS = (
    ("hop_in", "broker hop (publish → a plain consumer sees the input)"),
    ("added", "**added by the pipeline** (input seen → decision produced)"),
    ("hop_out", "decision's hop out (produced → a plain consumer sees it)"),
    ("added_seen", "added, decision seen (input seen → decision seen: added + hop out)"),
    ("end_to_end", "end to end (publish → decision seen)"),
)
ADDED_P50_GOAL_MS = 5.0
ADDED_P99_GOAL_MS = 25.0


def _latency_markdown(latency: dict[str, Any]) -> str:
    """The latency bullet of a `make bench` section: a table of each part's percentiles."""
    nan = float("nan")
    rows = "\n".join(
        f"  | {label} | {latency.get(key, {}).get('p50_ms', nan):.1f} "
        f"| {latency.get(key, {}).get('p99_ms', nan):.1f} | {latency.get(key, {}).get('max_ms', nan):.1f} |"
        for key, label in LATENCY_PARTS
    )
    added = latency.get("added", {})
    met = (
        added.get("p50_ms", nan) <= ADDED_P50_GOAL_MS
        and added.get("p99_ms", nan) <= ADDED_P99_GOAL_MS
    )
    return (
        f"- Decision latency at {LATENCY_RATE_PER_S:,} msg/s offered (unkeyed producer, librdkafka\n"
        f"  defaults; {latency.get('messages', 0):,} payments of {latency.get('sent', 0):,} sent, "
        f"one process, risk scoring on; the worker used {latency.get('worker_cpu_share', nan):.0%} "
        f"of a core meanwhile), ms\n"
        f"  (`python -m centflow.ops.bench --only latency`; `_latency` says how each part is timed;\n"
        f"  goal for the part added: p50 ≤ {ADDED_P50_GOAL_MS:g}, p99 ≤ {ADDED_P99_GOAL_MS:g}: "
        f"{'met' if met else 'not met'}):\n\n"
        f"  | part | p50 | p99 | max |\n  |---|---:|---:|---:|\n{rows}\n"
    )


def _markdown(figures: dict[str, Any], command: str) -> str:
    f = figures
    latency = f["latency"]
    base = f["raw_kafka_per_s"]

    def spread(key: str) -> str:
        low, high = f.get(f"{key}_range", (f[key], f[key]))
        return f"{low / 1000:,.0f}k–{high / 1000:,.0f}k"

    rows: list[tuple[str, str, str | None, str, str]] = [
        ("raw baseline: read file + JSON-decode each line", "raw_file_per_s", None, "", ""),
        ("raw baseline: consume Kafka + JSON-decode each message", "raw_kafka_per_s", None, "", ""),
    ]
    for mode, name in (("replay", "replay"), ("kafka", "Kafka")):
        for workers in (1, 2):
            key = f"{mode}_{workers}w"
            rows.append(
                (
                    f"pipeline, {name}, {workers} process{'es' if workers > 1 else ''}",
                    f"{key}_per_s",
                    f"{key}_busy_per_s",
                    f"{f[f'{key}_rss_mib']:.0f} MiB",
                    f"{f[f'{key}_cpu_s_per_event'] * 1e6:.1f}",
                )
            )
    rows += [
        ("generator (`centflow generate`)", "generate_per_s", None, "", ""),
        ("producer (`centflow produce`, local broker)", "produce_per_s", None, "", ""),
    ]
    table = "\n".join(
        f"| {name} | {f[rate]:,.0f} | {spread(rate) if f'{rate}_range' in f else ''} "
        f"| {'' if busy is None else f'{f[busy]:,.0f}'} | {memory} | {cpu} |"
        for name, rate, busy, memory, cpu in rows
    )

    def cost(mode: str) -> str:
        one, two = (f[f"{mode}_{workers}w_cpu_s_per_event"] for workers in (1, 2))
        verdict = "met" if two / one <= CPU_RATIO_GOAL else "not met"
        return (
            f"{one * 1e6:.1f} µs (1 process) and {two * 1e6:.1f} µs (2 processes): "
            f"**{two / one:.2f}×** (goal ≤ {CPU_RATIO_GOAL:.2f}×: {verdict})"
        )

    whole = f["whole_run"]
    load_verdict = "met" if whole["after_share"] <= LOAD_SHARE_GOAL else "not met"
    return f"""## {datetime.now(UTC):%Y-%m-%d %H:%M} UTC — {f["lines"]:,} lines ({f["events"]:,} generated events)

Command: `{command}`. Machine: {os.cpu_count()} cores, {platform.machine()}, Python {platform.python_version()}.
Windows {WINDOW_S} s, lateness {LATENESS_S} s, topic of {PARTITIONS} partitions.

| what | events/s | range of {f.get("repeat", 1)} runs | events/s, start-up excluded | peak RSS per worker | CPU µs per event |
|---|---:|---:|---:|---:|---:|
{table}

- One process reaches **{f["kafka_1w_per_s"] / base:.0%}** of the raw Kafka baseline
  ({f["kafka_1w_busy_per_s"] / base:.0%} start-up excluded); two processes run
  **{f["kafka_2w_per_s"] / f["kafka_1w_per_s"]:.2f}×** one (Kafka; {f["kafka_2w_busy_per_s"] / f["kafka_1w_busy_per_s"]:.2f}× start-up excluded)
  and **{f["replay_2w_per_s"] / f["replay_1w_per_s"]:.2f}×** (replay; {f["replay_2w_busy_per_s"] / f["replay_1w_busy_per_s"]:.2f}×).
- Scale-out cost, CPU time per event (user + system CPU-seconds of the runner and every
  worker process, their children included, over lines, start-up included; median of {f.get("repeat", 1)}):
  Kafka {cost("kafka")};
  replay {cost("replay")}.
  CPU seconds are the figure to compare: this machine is shared and noisy, and CPU time
  varies much less than wall time.
{_latency_markdown(latency)}
- Money stage alone (`centflow.ops.bench_money`: settlement, fees, payouts, ledger, in one
  process, CPU time, median of {f.get("repeat", 1)}): **{f["money"]["money_us_per_event"]:.2f} µs per event**
  with the shipped fee schedule, {f["money"]["money_no_fees_us_per_event"]:.2f} µs with no fees,
  {f["money"].get("money_fx_us_per_event", float("nan")):.2f} µs with fees and FX (the generator's
  payee directory and rates) ({f["money"]["money_events"]:,} events in {f["money"]["money_batches"]:,} batches).
- Statement matching (`centflow.ops.bench_recon`, DuckDB SQL): **{f["recon"]["matched_s"]:.2f} s**
  for {f["recon"]["payouts"]:,} payouts against {f["recon"]["entries"]:,} statement entries
  (goal ≤ {f["recon"]["goal_s"]:g} s: {"met" if f["recon"]["matched_s"] <= f["recon"]["goal_s"] else "not met"}),
  every break kind among them; {f["recon"]["built_s"]:.1f} s to build them.
- DuckDB load of the one-process replay's dataset ({f["duckdb"]["rows"]:,} rows in {len(TABLES)} tables):
  {f["duckdb"]["first_s"]:.1f} s, and {f["duckdb"]["again_s"]:.1f} s to load it again.
- The whole `centflow run --replay` (one process, a process of its own, wall time):
  {whole["wall_s"]:.1f} s, of which the pipeline {whole["pipeline_s"]:.1f} s
  ({f["lines"] / whole["pipeline_s"]:,.0f} lines/s, start-up included), then the DuckDB load
  {whole["load_s"]:.1f} s and the report {whole["report_s"]:.1f} s: **{whole["after_share"]:.1%}**
  of the run after the pipeline finished (goal ≤ {LOAD_SHARE_GOAL:.0%}: {load_verdict}).
- "events/s" is lines over the workers' wall time, start-up included (Kafka runs exclude
  the idle wait that ends them), the median of {f.get("repeat", 1)} runs, one- and two-process
  runs taken in turn; "start-up excluded" is lines over the time from the first message
  read to the last event settled, from the workers' status files (Kafka runs again less
  the idle wait), also a median.
"""


def run_latency(work: Path, repeat: int) -> list[dict[str, Any]]:
    """Only the latency measurement, `repeat` times (a fresh topic each), on a small log."""
    work.mkdir(parents=True, exist_ok=True)
    log = work / "latency.jsonl.gz"
    write_log(
        log,
        LATENCY_LOG_EVENTS,
        seed=1,
        start_us=parse_rfc3339_us("2026-11-02T00:00:00Z"),
        duration_s=600,
        window_hint_s=300,
    )
    runs = []
    with LocalBroker(log_path=work / "broker.log") as broker:
        client = client_config(broker.bootstrap)
        for index in range(repeat):
            runs.append(_latency(client, log, work / "latency", topic=f"latency-{index}"))
            print(_latency_markdown(runs[-1]), flush=True)
    return runs


def _latency_only_markdown(runs: list[dict[str, Any]], command: str) -> str:
    tables = "\n".join(
        f"Run {index} of {len(runs)}:\n\n{_latency_markdown(latency)}"
        for index, latency in enumerate(runs, 1)
    )
    return f"""## {datetime.now(UTC):%Y-%m-%d %H:%M} UTC — decision latency only

Command: `{command}`. Machine: {os.cpu_count()} cores, {platform.machine()}, Python {platform.python_version()}.
Windows {WINDOW_S} s, lateness {LATENESS_S} s, topic of {PARTITIONS} partitions.

{tables}"""


def main() -> None:
    parser = argparse.ArgumentParser(
        prog="python -m centflow.ops.bench", description=__doc__.splitlines()[0]
    )
    parser.add_argument("--events", type=int, default=500_000)
    parser.add_argument(
        "--repeat", type=int, default=3, help="runs of each throughput measurement (median)"
    )
    parser.add_argument("--work", type=Path, default=Path("bench-out"))
    parser.add_argument(
        "--write", type=Path, default=None, help="append the figures to this Markdown file"
    )
    parser.add_argument(
        "--only",
        choices=["latency"],
        default=None,
        help="only this measurement (latency: on a small log, --repeat runs)",
    )
    args = parser.parse_args()
    if args.repeat < 1:
        parser.error("--repeat must be at least 1")
    if args.only == "latency":
        text = _latency_only_markdown(
            run_latency(args.work, args.repeat),
            f"python -m centflow.ops.bench --only latency --repeat {args.repeat}",
        )
    else:
        figures = run(args.events, args.work, args.repeat)
        text = _markdown(
            figures,
            f"make bench (python -m centflow.ops.bench --events {args.events} --repeat {args.repeat})",
        )
    print(text)
    if args.write is not None:
        header = "# Benchmarks\n\nFigures from `make bench`, newest first. See `centflow/ops/bench.py` for what each one measures.\n\n"
        old = args.write.read_text() if args.write.exists() else header
        body = old[len(header) :] if old.startswith(header) else old
        args.write.write_text(header + text + "\n" + body)
    shutil.rmtree(args.work / "latency", ignore_errors=True)


if __name__ == "__main__":
    main()
