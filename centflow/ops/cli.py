"""The ``centflow`` command line: run, produce, generate, recon, review, broker, demo.

Every failure a user can cause (a bad flag, a missing file, an unreachable
broker) ends in one line on stderr, ``centflow: error: ...``, and exit status
2; a bug still shows its traceback, because hiding it would hide the bug.
"""

from __future__ import annotations

import logging
import os
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, TypeVar

import msgspec
import typer
from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

from centflow import limits
from centflow.config import (
    PipelineConfig,
    PipelineSection,
    Topics,
    load_file_config,
    validate,
)
from centflow.errors import CentflowError, ConfigError, InvariantViolation
from centflow.ingest.timeparse import format_us
from centflow.money.fees import DEFAULT_SCHEDULE
from centflow.ops import logs
from centflow.ops.cli_config import config_app
from centflow.ops.cli_recon import (
    database_of,
    demo_reconciliation,
    import_command,
    match_command,
    run_holding,
    statement_app,
    write_html_report,
)
from centflow.ops.cli_review import review_app
from centflow.ops.status import read_status

if TYPE_CHECKING:
    from centflow.ops.multihost import ClusterPlace
    from centflow.ops.runner import RunStats

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    help="Stream settlement of global micro-payments: Kafka or replay logs in, "
    "netted batches, a balanced ledger and DuckDB reconciliation tables out.",
)
console = Console(stderr=True)
report_console = Console(width=None if sys.stdout.isatty() else 132)

KafkaSetting = Annotated[
    list[str] | None,
    typer.Option(
        "--kafka-setting",
        "-X",
        help="librdkafka client setting KEY=VALUE (SASL/TLS ...); repeatable.",
    ),
]
Workers = Annotated[int, typer.Option(help="Worker processes.")]
WindowS = Annotated[int, typer.Option(help="Settlement window length, seconds.")]
LatenessS = Annotated[int, typer.Option(help="Allowed lateness, seconds.")]
KafkaConfigFile = Annotated[
    Path | None,
    typer.Option("--kafka-config", help="A .properties file of librdkafka client settings."),
]


def _client(
    bootstrap: str,
    config_file: Path | None,
    settings: list[str] | None,
    configured: dict[str, str] | None = None,
) -> dict[str, str]:
    """Client settings: ``[kafka.settings]`` of --config, then --kafka-config, then -X."""
    from centflow.ops.kafka import client_config, load_client_settings

    return client_config(
        bootstrap, {**(configured or {}), **load_client_settings(config_file, settings or [])}
    )


T = TypeVar("T")


def _pick(flag: T | None, configured: T | None, default: T) -> T:
    """A flag given wins, then the configuration (file and CENTFLOW_*), then the default."""
    if flag is not None:
        return flag
    return configured if configured is not None else default


def _count_lines(path: Path) -> int:
    """Lines of a log, for the progress bar; a log that cannot be read (corrupt,
    truncated) fails here, with a one-line message, before anything starts."""
    from centflow.ingest.replay import iter_lines

    return sum(1 for _ in iter_lines(path))


def _refuse_a_grown_replay(log: Path, out: Path, lines: int) -> None:
    """A replay that ended has closed every window for good: lines added to its log
    since would all be late, so they are refused in one line rather than skipped
    without a word (a rerun of an unchanged log is still a quiet no-op)."""
    inputs = [status for status in read_status(out) if status.kind == "input"]
    if inputs and all(status.ended for status in inputs):
        read = sum(status.messages for status in inputs)
        if read != lines:
            raise ConfigError(
                f"{log} has {lines:,} lines now, but the replay that ended in {out} read "
                f"{read:,}: a finished replay is not extended; use --fresh to replay the "
                "whole log again, or another --out"
            )


PROGRESS_LOG_S = 5.0  # --log-format json: seconds between progress lines


class _ProgressLines:
    """--log-format json: a ``progress`` line every `PROGRESS_LOG_S`, and one at the end."""

    def __init__(self, out_dir: Path, total: int | None) -> None:
        self._out_dir = out_dir
        self._total = total
        self._started_s = time.monotonic()
        self._logged_s = self._started_s

    def tick(self, final: bool = False) -> None:
        now_s = time.monotonic()
        if not final and now_s - self._logged_s < PROGRESS_LOG_S:
            return
        self._logged_s = now_s
        statuses = read_status(self._out_dir)
        inputs = [status for status in statuses if status.kind == "input"]
        read = sum(status.messages for status in inputs)
        settled = sum(status.messages for status in statuses if status.kind == "settled")
        live = [status.watermark_us for status in inputs if status.watermark_us > 0]
        rate_per_s = read / max(now_s - self._started_s, 1e-3)
        of = f" of {self._total:,}" if self._total is not None else ""
        logs.emit(
            logging.INFO,
            "progress",
            f"read {read:,}{of} messages, {settled:,} settled, {rate_per_s:,.0f} msg/s",
            read=read,
            total=self._total,
            settled=settled,
            rate_per_s=round(rate_per_s, 1),
            event_clock=format_us(min(live)) if live else None,
        )


def _run_with_progress(
    config: PipelineConfig,
    workers: int,
    snapshot_s: int,
    total: int | None,
    broker_timeout_s: float | None = None,
    place: ClusterPlace | None = None,
) -> RunStats:
    """Run the workers under a live progress bar and summary line (or, with
    --log-format json, with a progress line every `PROGRESS_LOG_S`)."""
    from centflow.ops.runner import check_run, run_workers

    check_run(config, workers, snapshot_s, place)  # bad settings fail before any progress
    out_dir = Path(config.out_dir)
    if logs.is_json():
        lines = _ProgressLines(out_dir, total)
        stats = run_workers(config, workers, snapshot_s, lines.tick, broker_timeout_s, place=place)
        lines.tick(final=True)
        return stats
    with Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[rate]}"),
        TextColumn("{task.fields[clock]}"),
        TimeElapsedColumn(),
        console=console,
        transient=False,
    ) as progress:
        task = progress.add_task("reading", total=total, rate="", clock="")
        started_s = time.monotonic()

        def tick() -> None:
            statuses = read_status(out_dir)
            inputs = [status for status in statuses if status.kind == "input"]
            read = sum(status.messages for status in inputs)
            settled = sum(status.messages for status in statuses if status.kind == "settled")
            live = [status.watermark_us for status in inputs if status.watermark_us > 0]
            rate = read / max(time.monotonic() - started_s, 1e-3)
            clock = f"event clock {format_us(min(live))[:19]}" if live else ""
            progress.update(
                task, completed=read, rate=f"{rate:,.0f} msg/s, {settled:,} settled", clock=clock
            )

        stats = run_workers(config, workers, snapshot_s, tick, broker_timeout_s, place=place)
        tick()
    return stats


SUMMARY_TABLES = (
    "payments",
    "settlement_batches",
    "settlement_payouts",
    "settlement_fees",
    "settlement_fx",
    "ledger_entries",
    "dead_letters",
)


def _table_rows(database: Path) -> dict[str, int]:
    """Rows of each analyst table in `database` (for the json ``summary`` line)."""
    import duckdb

    connection = duckdb.connect(str(database), read_only=True)
    try:
        return {
            table: int(connection.execute(f"SELECT count(*) FROM {table}").fetchall()[0][0])
            for table in SUMMARY_TABLES
        }
    finally:
        connection.close()


def _finish(out_dir: Path, html: Path | None = None, reload: bool = True) -> None:
    from centflow.recon.report import render, summarize
    from sinks.duckdb import materialize

    database = materialize(out_dir) if reload else database_of(out_dir)
    summary = summarize(database)
    render(summary, report_console)
    if logs.is_json():
        failed = [name for name, failures in summary.checks if failures]
        logs.emit(
            logging.INFO if summary.ok else logging.ERROR,
            "summary",
            f"tables loaded into {database}; "
            + ("every check passed" if summary.ok else f"checks failed: {', '.join(failed)}"),
            database=str(database),
            ok=summary.ok,
            outcomes=dict(summary.outcomes),
            checks=dict(summary.checks),
            tables=_table_rows(database),
            repeated_event_ids=summary.repeated_event_ids,
        )
    if html is not None:  # written even when a check fails: the page shows which
        write_html_report(database, html)
    if not summary.ok:
        raise CentflowError("reconciliation checks failed (see the report above)")


def _say_reviews_waiting(out: Path) -> None:
    """One line on the review queue, when payments wait in it."""
    from centflow.risk.review import pending_reviews

    try:
        waiting = len(pending_reviews(out).waiting)
    except ConfigError:  # no payments written at all: nothing waits
        return
    if waiting:
        logs.say(
            console,
            "reviews_waiting",
            f"{waiting:,} payments wait for review: `centflow review list --out {out}`, "
            f"then `centflow review release|decline EVENT_ID... --out {out}`",
            payments=waiting,
        )


@app.command()
def run(
    replay: Annotated[
        Path | None, typer.Option(help="Replay log: .jsonl, .jsonl.gz or a directory of them.")
    ] = None,
    kafka: Annotated[
        str | None, typer.Option(help="Kafka bootstrap servers, e.g. 127.0.0.1:9092.")
    ] = None,
    out: Annotated[Path | None, typer.Option(help="Output and state directory [out].")] = None,
    until_idle: Annotated[
        bool | None,
        typer.Option(
            "--until-idle/--follow",
            help="Stop when input is idle, or keep following the topic (--kafka follows "
            "unless told --until-idle; a replay always stops at its end).",
        ),
    ] = None,
    workers: Annotated[int | None, typer.Option(help="Worker processes [1].")] = None,
    process_id: Annotated[
        int | None,
        typer.Option(
            help="Several hosts: this host's process of the cluster, 0 .. (addresses - 1); "
            "every host runs the same command with its own id.",
        ),
    ] = None,
    addresses: Annotated[
        str | None,
        typer.Option(
            help="Several hosts: host:port of every process of the cluster, in process-id "
            "order, comma-separated (host1:2101,host2:2101); --out must be one shared directory.",
        ),
    ] = None,
    window_s: Annotated[
        int | None,
        typer.Option(help=f"Settlement window length, seconds [{limits.WINDOW_LENGTH_S_DEFAULT}]."),
    ] = None,
    lateness_s: Annotated[
        int | None, typer.Option(help=f"Allowed lateness, seconds [{limits.LATENESS_S_DEFAULT}].")
    ] = None,
    dedupe_horizon_s: Annotated[
        int | None,
        typer.Option(help=f"De-duplication horizon, seconds [{limits.DEDUPE_HORIZON_S_DEFAULT}]."),
    ] = None,
    future_skew_s: Annotated[
        int | None,
        typer.Option(
            help=f"Largest event time ahead of ingestion, seconds [{limits.FUTURE_SKEW_S_DEFAULT}]."
        ),
    ] = None,
    idle_s: Annotated[
        float | None,
        typer.Option(
            help=f"Kafka: seconds without a message that count as idle [{limits.IDLE_S_DEFAULT}]."
        ),
    ] = None,
    broker_timeout_s: Annotated[
        float | None,
        typer.Option(
            help="Kafka: seconds to wait for a broker that stops answering; past them the run "
            "exits 2, its state kept for a rerun [60]."
        ),
    ] = None,
    topic: Annotated[str | None, typer.Option(help="Payments topic [payments].")] = None,
    dlq_topic: Annotated[str | None, typer.Option(help="Dead-letter topic [payments.dlq].")] = None,
    decisions_topic: Annotated[
        str | None, typer.Option(help="Decisions topic [payments.decisions].")
    ] = None,
    fx_rates_topic: Annotated[
        str | None,
        typer.Option(help="FX rates topic, read when no --fx-rates file is given [fx-rates]."),
    ] = None,
    payee_directory_topic: Annotated[
        str | None,
        typer.Option(
            help="A topic of payee directory entries {payee_id, settlement_currency}, each in "
            "force from its message's timestamp (over --payee-directory's)."
        ),
    ] = None,
    kafka_config: KafkaConfigFile = None,
    kafka_setting: KafkaSetting = None,
    snapshot_s: Annotated[
        int | None, typer.Option(help="Seconds between recovery snapshots [10].")
    ] = None,
    fresh: Annotated[
        bool, typer.Option(help="Discard the state kept in --out and start over.")
    ] = False,
    config_file: Annotated[
        Path | None,
        typer.Option(
            "--config",
            help="A TOML file (centflow.example.toml shows every key); CENTFLOW_* variables "
            "override it, flags override both.",
        ),
    ] = None,
    payer_directory: Annotated[
        Path | None,
        typer.Option(help="JSON lines {payer_id, tier}: each payer's verification tier."),
    ] = None,
    umask: Annotated[
        str,
        typer.Option(help="Octal umask for everything written under OUT (077: owner only)."),
    ] = "077",
    fx_rates: Annotated[
        Path | None,
        typer.Option(help="JSON lines {base, quote, rate, as_of}: FX rates over the log's time."),
    ] = None,
    payee_directory: Annotated[
        Path | None,
        typer.Option(help="JSON lines {payee_id, settlement_currency}: who settles in what."),
    ] = None,
    fx_spread_bps: Annotated[
        int | None, typer.Option(help="FX spread kept as revenue, basis points (default 20).")
    ] = None,
    metrics_port: Annotated[
        int | None,
        typer.Option(
            help="Serve Prometheus metrics on this port, at /metrics, while the run lasts."
        ),
    ] = None,
    metrics_host: Annotated[
        str, typer.Option(help="Address the metrics endpoint listens on.")
    ] = "127.0.0.1",
    log_format: Annotated[
        str | None,
        typer.Option(
            help="text: lines under a live progress bar; json: every line on stderr as one "
            "JSON object (ts, level, event, message, fields), no bar [text]."
        ),
    ] = None,
) -> None:
    """Run the pipeline into OUT (resumes from OUT's recovery state after a crash).

    With --process-id and --addresses, this is one host's process of a cluster over
    several hosts sharing one OUT (`centflow.ops.multihost`); process 0 loads the
    tables once every process has ended.

    SIGTERM or Ctrl-C stops it cleanly: the current epoch is finished and
    snapshotted, the sinks are flushed, and the same command resumes. Exit
    status: 0 done (or stopped cleanly); 1 a bug (with its traceback); 2 a
    one-line error (usage, configuration, broker, a failed worker or check);
    130 / 143 a second Ctrl-C / SIGTERM killed the workers before their last
    snapshot (the same command still resumes, from the snapshot before).
    """
    from centflow.ops.lifecycle import RunInterrupted
    from centflow.ops.metrics import serve_metrics
    from centflow.ops.runner import clear_state, out_dir_lock

    # the format first, so that even a bad configuration file is reported in it
    early_format = log_format or os.environ.get("CENTFLOW_PIPELINE_LOG_FORMAT")
    logs.configure(logs.check_log_format(early_format or logs.LOG_FORMAT_DEFAULT))
    file_config = load_file_config(config_file)  # with the CENTFLOW_* overrides
    section = file_config.pipeline
    log_format = _pick(log_format, section.log_format, logs.LOG_FORMAT_DEFAULT)
    logs.configure(logs.check_log_format(log_format), file_config.kafka.settings)
    out = out or Path(section.out or "out")
    place = _cluster_place(process_id, addresses, workers, section)
    workers = place.process_count if place is not None else _pick(workers, section.workers, 1)
    if place is not None and fresh and place.process_id != 0:
        raise ConfigError(
            "--fresh clears the state of the whole cluster: give it to process 0 alone, "
            "start it first, then the other processes without --fresh"
        )
    window_s = _pick(window_s, section.window_s, limits.WINDOW_LENGTH_S_DEFAULT)
    lateness_s = _pick(lateness_s, section.lateness_s, limits.LATENESS_S_DEFAULT)
    dedupe_horizon_s = _pick(dedupe_horizon_s, section.dedupe_horizon_s, limits.DEDUPE_HORIZON_S_DEFAULT)  # fmt: skip
    future_skew_s = _pick(future_skew_s, section.future_skew_s, limits.FUTURE_SKEW_S_DEFAULT)
    idle_s = _pick(idle_s, section.idle_s, limits.IDLE_S_DEFAULT)
    if broker_timeout_s is not None:
        from centflow.ops.kafka import check_broker_timeout

        check_broker_timeout(broker_timeout_s)
    snapshot_s = _pick(snapshot_s, section.snapshot_s, 10)
    topic = _pick(topic, file_config.topics.payments, "payments")
    dlq_topic = _pick(dlq_topic, file_config.topics.dead_letters, "payments.dlq")
    decisions_topic = _pick(decisions_topic, file_config.topics.decisions, "payments.decisions")
    fx_rates_topic = _pick(fx_rates_topic, file_config.topics.fx_rates, "fx-rates")
    if kafka is None and replay is None:
        kafka = file_config.kafka.bootstrap_servers
    if (replay is None) == (kafka is None):
        raise ConfigError("give exactly one input: --replay FILE or --kafka BOOTSTRAP")
    if replay is not None and until_idle is False:
        raise ConfigError(
            "--follow needs --kafka: a replay log has an end, and a replay stops there"
        )
    if replay is not None and (kafka_config is not None or kafka_setting):
        raise ConfigError("--kafka-config and --kafka-setting (-X) need --kafka")
    if replay is not None and (payee_directory_topic or file_config.fx.payee_directory_topic):
        raise ConfigError("a payee directory topic needs --kafka (give --payee-directory FILE)")
    topics = Topics(topic, dlq_topic, decisions_topic, fx_rates_topic)
    risk = file_config.risk
    fees = DEFAULT_SCHEDULE if file_config.fees is None else file_config.fees
    if payer_directory is not None:
        if not payer_directory.is_file():
            raise ConfigError(f"--payer-directory {payer_directory}: no such file")
        risk = msgspec.structs.replace(risk, payer_directory=str(payer_directory.resolve()))
    fx = msgspec.structs.replace(
        file_config.fx,
        **{
            name: value
            for name, value in (
                ("rates", fx_rates and str(fx_rates.resolve())),
                ("payee_directory", payee_directory and str(payee_directory.resolve())),
                ("payee_directory_topic", payee_directory_topic),
                ("spread_bps", fx_spread_bps),
            )
            if value is not None
        },
    )
    common = dict(
        risk=risk,
        fees=fees,
        fx=fx,
        out_dir=str(out),
        topics=topics,
        window_length_s=window_s,
        lateness_s=lateness_s,
        dedupe_horizon_s=dedupe_horizon_s,
        future_skew_s=future_skew_s,
        idle_s=idle_s,
    )
    total = None
    if replay is not None:
        from centflow.ingest.replay import log_files

        log_files(replay)  # a missing log is a one-line error before anything starts
        partitions = tuple(f"replay/{index}" for index in range(max(workers, 1)))
        config = PipelineConfig(
            replay_path=str(replay.resolve()),
            partitions=partitions,
            until_idle=True,
            **common,  # type: ignore[arg-type]
        )
        total = _count_lines(replay)
    else:
        from centflow.ops.kafka import check_reachable, ensure_topics, topic_partition_count

        client = _client(kafka, kafka_config, kafka_setting, file_config.kafka.settings)  # type: ignore[arg-type]
        logs.configure(log_format, client)  # every secret given is cut out of every line
        check_reachable(client)
        partition_count = topic_partition_count(client, topic)
        ensure_topics(client, {dlq_topic: partition_count, decisions_topic: partition_count})
        partitions = tuple(f"{topic}/{index}" for index in range(partition_count))
        rate_partitions: tuple[str, ...] = ()
        payee_partitions: tuple[str, ...] = ()
        directory_topic = fx.payee_directory_topic
        if (fx.payee_directory or directory_topic) and fx.rates is None:  # rates from the topic
            rate_count = topic_partition_count(client, fx_rates_topic)
            rate_partitions = tuple(f"{fx_rates_topic}/{index}" for index in range(rate_count))
        if directory_topic is not None:
            payee_count = topic_partition_count(client, directory_topic)
            payee_partitions = tuple(f"{directory_topic}/{index}" for index in range(payee_count))
        config = PipelineConfig(
            kafka=client,
            partitions=partitions,
            rate_partitions=rate_partitions,
            payee_partitions=payee_partitions,
            until_idle=until_idle is True,  # a stream is followed unless told otherwise
            **common,  # type: ignore[arg-type]
        )
    validate(config)
    from centflow.risk.tiers import TierLimits

    TierLimits.from_config(config.risk)  # a bad payer directory fails here, in one line
    from centflow.money.fx import fx_book

    fx_book(config.fx)  # and a bad rate or payee line here
    if place is not None:
        from centflow.ops.multihost import check_bindable

        check_bindable(place)
    # one run (or one cluster's processes) at a time per OUT, to the report
    with out_dir_lock(out, _parse_umask(umask), place):
        if fresh:
            _refuse_a_fresh_start_under_peers(out, place)
            clear_state(out)
        elif replay is not None and total is not None:
            _refuse_a_grown_replay(replay, out, total)
        _log_start(config, workers, out, place)
        try:
            with serve_metrics(config, metrics_port, metrics_host, total):
                stats = _run_with_progress(
                    config, workers, snapshot_s, total, broker_timeout_s, place
                )
        except RunInterrupted as interrupted:
            logs.say(
                console,
                "interrupted",
                f"centflow: stopped: {interrupted}",
                logging.ERROR,
                status=interrupted.exit_code,
            )
            raise typer.Exit(interrupted.exit_code) from None
        if stats.stopped_by is not None:  # the way to stop --follow: a clean stop
            logs.say(
                console,
                "run_stopped",
                f"stopped on {stats.stopped_by} at the end of an epoch, after a snapshot; "
                f"the state is kept in {out}: run the same command again to resume",
                signal=stats.stopped_by,
                seconds=round(stats.seconds, 3),
                out=str(out),
            )
        else:
            logs.say(
                console,
                "run_finished",
                f"pipeline finished in {stats.seconds:.1f} s",
                seconds=round(stats.seconds, 3),
            )
        if place is not None and place.process_id != 0:
            logs.say(
                console,
                "process_done",
                f"process {place.process_id} of {place.process_count} is done; process 0 "
                f"loads the tables into {out / 'centflow.duckdb'} once every process is",
                process_id=place.process_id,
                processes=place.process_count,
            )
            return
        _finish(out)
        _say_reviews_waiting(out)


def _cluster_place(
    process_id: int | None, addresses: str | None, workers: int | None, section: PipelineSection
) -> ClusterPlace | None:
    """--process-id and --addresses (or their configuration), checked; None for a one-host run."""
    from centflow.ops.multihost import cluster_place

    place = cluster_place(
        _pick(process_id, section.process_id, None),
        addresses if addresses is not None else section.addresses,
    )
    # [pipeline] workers counts the processes of a one-host run; a cluster's count is
    # that of its addresses, so only a --workers flag that contradicts them is refused
    if place is not None and workers is not None and workers != place.process_count:
        raise ConfigError(
            f"--workers {workers} with --addresses of {place.process_count} processes: a "
            "cluster over several hosts has one worker process per address; leave --workers out"
        )
    return place


def _refuse_a_fresh_start_under_peers(out: Path, place: ClusterPlace | None) -> None:
    """--fresh on a cluster's process 0 clears what every process shares: refused while
    another process of it already runs on OUT (its state would go from under it)."""
    if place is None:
        return
    from centflow.ops.multihost import live_processes

    others = live_processes(out, besides=place.process_id)
    if others:
        index, holder = next(iter(others.items()))
        raise ConfigError(
            f"--fresh: process {index} already runs on {out} ({holder}); stop it, start "
            "process 0 with --fresh first, then the other processes without it"
        )


def _log_start(
    config: PipelineConfig, workers: int, out: Path, place: ClusterPlace | None = None
) -> None:
    """--log-format json: the ``run_started`` line (the client settings redacted)."""
    if not logs.is_json():
        return
    from centflow.ops.kafka import redacted_settings

    source = config.replay_path or (config.kafka or {}).get("bootstrap.servers", "")
    fields: dict[str, object] = {
        "input": "replay" if config.replay_path is not None else "kafka",
        "source": source,
        "partitions": len(config.partitions),
        "workers": workers,
        "out": str(out),
        "until_idle": config.until_idle,
    }
    if place is not None:
        fields["process_id"] = place.process_id
        fields["addresses"] = list(place.addresses)
    if config.kafka is not None:
        fields["kafka"] = redacted_settings(config.kafka)
        fields["topic"] = config.topics.payments
    logs.emit(logging.INFO, "run_started", f"reading {source} into {out}", **fields)


def _parse_umask(text: str) -> int:
    """``--umask`` as a number: three octal digits at most, like 077 or 027."""
    if not text.isascii() or not 1 <= len(text) <= 4 or any(c not in "01234567" for c in text):
        raise ConfigError(f"--umask {text!r} is not an octal file-mode mask like 077 or 027")
    return int(text, 8) & 0o777


@app.command()
def produce(
    log: Annotated[str, typer.Argument(help="Replay log to publish, or - for standard input.")],
    kafka: Annotated[str, typer.Option(help="Kafka bootstrap servers.")],
    topic: Annotated[str, typer.Option(help="Topic to publish to.")] = "payments",
    rate: Annotated[
        float | None, typer.Option(help="Messages per second (default: as fast as possible).")
    ] = None,
    speed: Annotated[
        float | None, typer.Option(help="Event-time speed-up: 60 = an hour a minute.")
    ] = None,
    partitions: Annotated[int, typer.Option(help="Partitions if the topic must be created.")] = 4,
    create_topic: Annotated[bool, typer.Option(help="Create the topic if it is missing.")] = True,
    kafka_config: KafkaConfigFile = None,
    kafka_setting: KafkaSetting = None,
) -> None:
    """Publish a replay log to Kafka, keyed by payer_id, stamped with the log clock.

    From standard input (``-``) the log is first spooled to a temporary file:
    pacing by event time and the progress bar need the whole log.
    """
    import tempfile

    from centflow.ingest.replay import log_files

    if log == "-":
        with tempfile.TemporaryDirectory(prefix="centflow-produce-") as spool:
            path = Path(spool) / "stdin.jsonl"
            with path.open("wb") as stream:
                while chunk := sys.stdin.buffer.read(1 << 20):
                    stream.write(chunk)
            _produce(
                path,
                kafka,
                topic,
                rate,
                speed,
                partitions,
                create_topic,
                kafka_config,
                kafka_setting,
            )
        return
    log_files(Path(log))
    _produce(
        Path(log), kafka, topic, rate, speed, partitions, create_topic, kafka_config, kafka_setting
    )


def _produce(
    log: Path,
    kafka: str,
    topic: str,
    rate: float | None,
    speed: float | None,
    partitions: int,
    create_topic: bool,
    kafka_config: Path | None,
    kafka_setting: list[str] | None,
) -> None:
    from centflow.ops.kafka import (
        check_reachable,
        ensure_topics,
        produce_log,
        topic_partition_count,
    )

    client = _client(kafka, kafka_config, kafka_setting)
    check_reachable(client)
    if create_topic:
        ensure_topics(client, {topic: partitions})
    else:
        topic_partition_count(client, topic)
    total = _count_lines(log)
    with Progress(
        TextColumn("[bold]producing"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        console=console,
    ) as progress:
        task = progress.add_task("produce", total=total)
        stats = produce_log(
            log,
            client,
            topic,
            rate_per_s=rate,
            speed=speed,
            progress=lambda sent: progress.update(task, completed=sent),
        )
        progress.update(task, completed=stats.messages)
    console.print(
        f"produced {stats.messages:,} messages ({stats.bytes:,} bytes) in {stats.seconds:.2f} s: {stats.rate:,.0f} msg/s"
    )


_DURATION_UNITS_S = {"s": 1, "m": 60, "h": 3_600, "d": 86_400}


def parse_duration_s(text: str, flag: str) -> int:
    """Whole seconds of a duration written as seconds (``7200``) or with a unit.

    >>> parse_duration_s("7200", "--duration"), parse_duration_s("90m", "--duration")
    (7200, 5400)
    >>> parse_duration_s("2h", "--duration"), parse_duration_s("1d", "--duration")
    (7200, 86400)
    """
    number, unit = (text[:-1], text[-1]) if text[-1:] in _DURATION_UNITS_S else (text, "s")
    if not number.isascii() or not number.isdigit():
        raise ConfigError(
            f"{flag} {text!r} is not a duration: give seconds (7200) or a number with s, m, h or d (2h)"
        )
    return int(number) * _DURATION_UNITS_S[unit]


@app.command()
def generate(
    out: Annotated[str, typer.Argument(help="Log to write (.jsonl, .jsonl.gz, or - for stdout).")],
    events: Annotated[int, typer.Option(help="Number of lines.")] = 10_000,
    seed: Annotated[int, typer.Option(help="Random seed: same seed, same log.")] = 7,
    start: Annotated[
        str, typer.Option(help="RFC 3339 start of event time.")
    ] = "2026-11-02T09:00:00Z",
    duration_s: Annotated[int, typer.Option(help="Event-time span, seconds.")] = 7_200,
    duration: Annotated[
        str | None,
        typer.Option(help="Event-time span as 45s, 90m, 2h or 1d (instead of --duration-s)."),
    ] = None,
    window_hint_s: Annotated[
        int, typer.Option(help="Window length late events are measured in.")
    ] = 60,
    faults: Annotated[
        bool, typer.Option(help="Inject duplicates, late and malformed lines.")
    ] = True,
    scenario: Annotated[
        list[str] | None,
        typer.Option(
            help="Fraud scenario to mix in (repeatable): card-testing, account-takeover, "
            "velocity-abuse, refund-abuse."
        ),
    ] = None,
    diurnal: Annotated[bool, typer.Option(help="Pace traffic by a daily cycle.")] = False,
    labels: Annotated[
        Path | None, typer.Option(help="Scenario labels file (default OUT.labels.jsonl).")
    ] = None,
    fx_rates: Annotated[
        Path | None, typer.Option(help="Also write an FX-rate stream here.")
    ] = None,
    payee_directory: Annotated[
        Path | None, typer.Option(help="Also write the payee directory here.")
    ] = None,
) -> None:
    """Write a seeded synthetic payment log (with fraud scenarios, faults, FX rates, payee directory)."""
    from centflow.generate.logs import (
        SCENARIOS,
        GenerateStats,
        generate_lines,
        write_fx_rates,
        write_log,
        write_payee_directory,
    )
    from centflow.ingest.timeparse import parse_rfc3339_us

    if not 1 <= events <= 100_000_000:
        raise ConfigError(f"--events {events} is out of range 1..100000000")
    if duration is not None:
        duration_s = parse_duration_s(duration, "--duration")
    scenarios = tuple(scenario or ())
    unknown = sorted(set(scenarios) - set(SCENARIOS))
    if unknown:
        raise ConfigError(f"--scenario {unknown[0]!r} is not one of {', '.join(SCENARIOS)}")
    try:
        start_us = parse_rfc3339_us(start)
    except CentflowError:
        raise ConfigError(
            f"--start {start!r} is not an RFC 3339 time like 2026-11-02T09:00:00Z"
        ) from None
    options = dict(
        seed=seed,
        start_us=start_us,
        duration_s=duration_s,
        window_hint_s=window_hint_s,
        faults=faults,
        scenarios=scenarios,
        diurnal=diurnal,
    )
    started_s = time.monotonic()
    if out == "-":  # stream to stdout, e.g. into `centflow produce` or a file of your own
        stats = GenerateStats()
        stream = sys.stdout.buffer
        for line in generate_lines(events, stats=stats, **options):  # type: ignore[arg-type]
            stream.write(line.raw + b"\n")
        stream.flush()
    else:
        stats = write_log(Path(out), events, labels_path=labels, **options)  # type: ignore[arg-type]
    if fx_rates is not None:
        write_fx_rates(fx_rates, seed=seed, start_us=start_us, duration_s=duration_s)
    if payee_directory is not None:
        write_payee_directory(payee_directory, seed=seed, events=events)
    seconds = time.monotonic() - started_s
    console.print(
        f"wrote {events:,} lines to {out} in {seconds:.1f} s ({events / max(seconds, 1e-9):,.0f}/s): "
        f"{stats.payments:,} payments, {stats.refunds:,} refunds, {stats.chargebacks:,} chargebacks, "
        f"{stats.duplicates:,} duplicates, {sum(stats.malformed.values()):,} malformed"
    )


recon_app = typer.Typer(
    invoke_without_command=True,
    help="The reconciliation report; `import` and `match` reconcile against statements.",
)
recon_app.command("import")(import_command)
recon_app.command("match")(match_command)
app.add_typer(recon_app, name="recon")
app.add_typer(statement_app, name="statement")
app.add_typer(config_app, name="config")
app.add_typer(review_app, name="review")


@recon_app.callback()
def recon(
    context: typer.Context,
    out: Annotated[Path, typer.Option(help="A run's output directory.")] = Path("out"),
    html: Annotated[
        Path | None,
        typer.Option(help="Also write the report, with charts, as one self-contained HTML file."),
    ] = None,
) -> None:
    """Reload OUT's DuckDB tables from its Parquet dataset and print the reconciliation report."""
    if context.invoked_subcommand is not None:
        return
    if not (out / "parquet").is_dir():
        raise ConfigError(f"{out} holds no Parquet dataset: run `centflow run --out {out}` first")
    holder = run_holding(out)
    if holder is not None:
        console.print(
            f"a run is writing {out} ({holder}): the report is of its last load, "
            "and the run loads the tables again when it ends"
        )
    _finish(out, html, reload=holder is None)


@app.command()
def broker(
    port: Annotated[int, typer.Option(help="Loopback port to listen on.")] = 9092,
) -> None:
    """Run a local Kafka-compatible broker (memory only) until Ctrl-C."""
    from centflow.ops.broker import LocalBroker

    with LocalBroker(port=port) as local:
        console.print(f"broker listening on {local.bootstrap} (memory only); Ctrl-C stops it")
        try:
            while True:
                time.sleep(1)
        except KeyboardInterrupt:
            console.print("stopping broker")


@app.command()
def demo(
    out: Annotated[
        Path, typer.Option(help="Output directory (its old state is discarded).")
    ] = Path("out"),
    log: Annotated[Path, typer.Option(help="Replay log to publish.")] = Path(
        "replay_data/sample.jsonl.gz"
    ),
    partitions: Annotated[int, typer.Option(help="Partitions of the payments topic.")] = 4,
    workers: Workers = 1,
    window_s: WindowS = limits.WINDOW_LENGTH_S_DEFAULT,
    lateness_s: LatenessS = limits.LATENESS_S_DEFAULT,
    statement_breaks: Annotated[
        float, typer.Option(help="Share of payouts given a break in the simulated statement.")
    ] = 0.05,
    config_file: Annotated[
        Path | None,
        typer.Option(
            "--config",
            help="A TOML file (fees, FX, risk); default: the log's own <name>.toml beside it.",
        ),
    ] = None,
) -> None:
    """The whole pipeline on a log through a local broker it starts and stops itself,
    then a reconciliation against a simulated rail statement of its payouts."""
    from centflow.ingest.replay import log_files
    from centflow.ops.broker import LocalBroker
    from centflow.ops.kafka import client_config, ensure_topics, produce_log
    from centflow.ops.runner import clear_state, out_dir_lock

    log_files(log)
    if config_file is None:
        beside = log.with_name(f"{log.name.removesuffix('.gz').removesuffix('.jsonl')}.toml")
        config_file = beside if beside.is_file() else None
    file_config = load_file_config(config_file)
    fx = file_config.fx
    if fx.payee_directory is not None:
        from centflow.money.fx import fx_book

        fx_book(fx)  # a bad rate or payee line: one line, before anything starts
        console.print(f"FX: rates {fx.rates}, payee directory {fx.payee_directory}")
    with out_dir_lock(out):
        clear_state(out)
        with LocalBroker(log_path=out / "broker.log") as local:
            client = client_config(local.bootstrap)
            console.print(f"local broker on {local.bootstrap}")
            ensure_topics(
                client,
                {
                    "payments": partitions,
                    "payments.dlq": partitions,
                    "payments.decisions": partitions,
                },
            )
            stats = produce_log(log, client, "payments")
            console.print(
                f"produced {stats.messages:,} messages from {log} at {stats.rate:,.0f} msg/s"
            )
            config = PipelineConfig(
                out_dir=str(out),
                kafka=client,
                partitions=tuple(f"payments/{index}" for index in range(partitions)),
                window_length_s=window_s,
                lateness_s=lateness_s,
                idle_s=2.0,
                risk=file_config.risk,
                fees=DEFAULT_SCHEDULE if file_config.fees is None else file_config.fees,
                fx=fx,
            )
            seconds = _run_with_progress(validate(config), workers, 2, stats.messages).seconds
            console.print(f"pipeline finished in {seconds:.1f} s")
        _finish(out)
        demo_reconciliation(out, statement_breaks)
        write_html_report(out / "centflow.duckdb", out / "report.html")
        _say_reviews_waiting(out)


def _fail(message: str) -> None:
    """One line on stderr, exit status 2."""
    if logs.is_json():
        logs.emit(logging.ERROR, "error", f"centflow: error: {message}", status=2)
        sys.exit(2)
    sys.stderr.write(f"centflow: error: {' '.join(message.split())}\n")
    sys.exit(2)


def main() -> None:
    """Entry point: run the app; a CentflowError becomes one line and exit status 2.

    With --log-format json, the last line is an ``exit`` object with the status,
    and a bug's traceback is a field of a ``bug`` line."""
    status: int | str | None = 0
    try:
        _main()
    except SystemExit as done:
        status = done.code
        raise
    except BaseException as error:
        status = 1
        if logs.is_json() and isinstance(error, Exception):
            logs.bug(error)
            raise SystemExit(1) from None
        raise
    finally:
        if logs.is_json():
            code = status if isinstance(status, int) else (0 if status is None else 1)
            logs.emit(
                logging.INFO if code == 0 else logging.ERROR,
                "exit",
                f"centflow exits with status {code}",
                status=code,
            )


def _main() -> None:
    try:
        # Typer turns Ctrl-C into Exit(130) and, outside standalone mode, returns the
        # code of an Exit instead of raising it: back to an interrupt, or the exit status.
        code = app(standalone_mode=False)
        if code == 130:
            raise KeyboardInterrupt
        if isinstance(code, int) and code:
            sys.exit(code)
    except InvariantViolation:
        raise  # a bug: keep its traceback
    except CentflowError as error:
        _fail(str(error))
    except (typer.Abort, KeyboardInterrupt):
        logs.say(console, "interrupted", "centflow: interrupted", logging.ERROR, status=130)
        sys.exit(130)
    except typer.Exit as done:
        sys.exit(done.exit_code)
    except OSError as error:  # the machine's answer (a full disk, a permission): no traceback
        where = f"{error.filename}: " if error.filename else ""
        _fail(f"{where}{error.strerror or error}")
    except Exception as error:
        format_message = getattr(error, "format_message", None)
        if format_message is None:  # not a usage error: a bug, keep its traceback
            raise
        message = format_message()
        if not message:  # no command at all: the help was printed, nothing else to say
            sys.exit(2)
        _fail(message)
