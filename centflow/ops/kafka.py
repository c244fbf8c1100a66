"""confluent-kafka helpers: client settings, reachability, topics, and publishing a replay log.

This module owns every Kafka client centflow creates outside the dataflows
(admin clients and the replay producer). It never imports Bytewax. Every
call is bounded in time and releases its client when it returns, and
librdkafka's log lines go to the ``centflow.ops.kafka.librdkafka`` logger (silent
unless the application configures logging) instead of being printed to
stderr every few milliseconds while a broker is down.

Topics are always looked up in the full metadata listing: some brokers (Tansu,
the local development broker) create a topic when a metadata request merely
names it.

Secrets. Client settings are passed to librdkafka untouched, but no message
centflow prints or logs carries a secret value: `redacted_settings` is the
form to show settings in (every key `is_secret_setting` names, such as
``sasl.password``, ``ssl.key.password``, ``ssl.key.pem`` or
``sasl.oauthbearer.client.secret``, has its value replaced by `REDACTED`), a
malformed setting is reported by its place (file and line, or the number of
the ``-X``) and its key, never its text, and a message from librdkafka about
the settings has every secret value cut out (`redact_text`).
"""

from __future__ import annotations

import fcntl
import logging
import os
import re
import select
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import msgspec
from confluent_kafka import KafkaError, KafkaException, Message, Producer
from confluent_kafka.admin import AdminClient, ClusterMetadata, NewTopic

from centflow.errors import (
    ConfigError,
    InvariantViolation,
    TerminalError,
    TransientError,
    invariant,
)
from centflow.ingest.replay import (
    CLOCK_START_US,
    LineBatches,
    LogClock,
    log_files,
)
from centflow.limits import MICROS_PER_MILLISECOND, MICROS_PER_SECOND

REACHABLE_TIMEOUT_S = 10.0
TOPICS_TIMEOUT_S = 20.0
PARTITION_COUNT_TIMEOUT_S = 10.0
FLUSH_TIMEOUT_S = 60.0
# One metadata request waits at most this long, so deadlines are kept.
METADATA_SLICE_S = 1.0
TOPIC_POLL_INTERVAL_S = 0.1
BUFFER_FULL_POLL_S = 0.05
PACING_SLEEP_S_MIN = 0.001
PROGRESS_EVERY_MESSAGES = 10_000
PARTITIONS_MAX = 10_000
PROPERTIES_LINES_MAX = 10_000
HEADER_ORIGIN = "origin"
# The replay log is parsed by a child process, in frames of this many records.
READER_FRAME_RECORDS = 2_048
# The parent parses in smaller frames, so it notices soon that the child is ready.
LOCAL_FRAME_RECORDS = 256
READER_FRAME_BYTES_MAX = 1 << 30
READER_PIPE_BYTES = 1 << 20  # a frame of 2048 typical lines is about 0.6 MB
READER_STOP_TIMEOUT_S = 5.0
# librdkafka treats a timestamp of 0 as "now": the earliest log-clock
# instant it can carry is 1 ms after the epoch.
TIMESTAMP_MS_MIN = 1

# Throughput settings for the replay producer; any of them can be overridden
# by the client settings given to `produce_log`.
PRODUCER_DEFAULTS: Mapping[str, Any] = {
    "enable.idempotence": True,
    "acks": "all",
    "linger.ms": 20,
    "batch.size": 1_000_000,
    "batch.num.messages": 10_000,
    "queue.buffering.max.messages": 500_000,
    "queue.buffering.max.kbytes": 512 * 1024,
    "compression.type": "none",
    # Java clients' partitioner: the same payer lands in the same partition
    # whichever client language produced it.
    "partitioner": "murmur2_random",
    "delivery.report.only.error": True,
}

# Error codes that no retry cures, reported through error_cb.
_AUTH_ERRORS = frozenset(
    {
        KafkaError._AUTHENTICATION,
        KafkaError._SSL,
        KafkaError.SASL_AUTHENTICATION_FAILED,
        KafkaError.CLUSTER_AUTHORIZATION_FAILED,
    }
)

REDACTED = "[redacted]"
# Keys whose values are secrets, whatever the client: passwords, private keys, tokens.
_SECRET_KEY = re.compile(
    r"password|secret|jaas|token|credential|private|\.key\.pem$|oauthbearer\.config|\bapi\.key",
    re.IGNORECASE,
)

LIBRDKAFKA_LOGGER = logging.getLogger("centflow.ops.kafka.librdkafka")
LIBRDKAFKA_LOGGER.addHandler(logging.NullHandler())


def client_config(bootstrap: str, settings: Mapping[str, str] | None = None) -> dict[str, str]:
    """librdkafka settings: `settings` passed through (SASL/TLS ...), `bootstrap` winning.

    >>> client_config("127.0.0.1:9092", {"security.protocol": "SASL_SSL"})
    {'security.protocol': 'SASL_SSL', 'bootstrap.servers': '127.0.0.1:9092'}
    """
    if not bootstrap.strip():
        raise ConfigError("Kafka bootstrap servers are empty (give --kafka HOST:PORT)")
    config = {str(key): str(value) for key, value in (settings or {}).items()}
    config["bootstrap.servers"] = bootstrap
    invariant(config["bootstrap.servers"] == bootstrap, "bootstrap.servers was overridden")
    return config


def is_secret_setting(key: str) -> bool:
    """Whether a client setting's value is a secret, never to be shown.

    >>> [is_secret_setting(k) for k in ("sasl.password", "ssl.key.pem", "sasl.username")]
    [True, True, False]
    """
    return _SECRET_KEY.search(key) is not None


def redacted_settings(settings: Mapping[str, Any]) -> dict[str, str]:
    """`settings` as they may be shown or logged: every secret value replaced.

    >>> redacted_settings({"sasl.username": "svc", "sasl.password": "hunter2"})
    {'sasl.username': 'svc', 'sasl.password': '[redacted]'}
    """
    return {
        str(key): REDACTED if is_secret_setting(str(key)) else str(value)
        for key, value in settings.items()
    }


def redact_text(text: str, settings: Mapping[str, Any]) -> str:
    """`text` with the value of every secret setting of `settings` cut out.

    >>> redact_text('bad value "hunter2"', {"sasl.password": "hunter2"})
    'bad value "[redacted]"'
    """
    for key, value in settings.items():
        if is_secret_setting(str(key)) and str(value):
            text = text.replace(str(value), REDACTED)
    return text


def _parse_setting(text: str, where: str) -> tuple[str, str]:
    """One ``key=value`` (or ``key: value``) setting; a ConfigError names `where`
    (the text itself is never shown: it may hold a secret)."""
    separators = [index for index in (text.find("="), text.find(":")) if index >= 0]
    key = text[: min(separators)].strip() if separators else ""
    if not key:
        raise ConfigError(
            f"{where}: expected key=value (e.g. security.protocol=SASL_SSL); "
            "the text is not shown, it may hold a secret"
        )
    return key, text[min(separators) + 1 :].strip()


def _read_properties(path: Path) -> dict[str, str]:
    """A Java-style .properties file: ``#``/``!`` comments, ``\\`` line continuations."""
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as error:
        raise ConfigError(f"cannot read client settings {path}: {error}") from error
    if len(lines) > PROPERTIES_LINES_MAX:
        raise ConfigError(f"{path} has {len(lines)} lines, over {PROPERTIES_LINES_MAX}")
    settings: dict[str, str] = {}
    pending, start = "", 0
    for number, line in enumerate(lines, start=1):
        text = pending + line.lstrip() if pending else line.strip()
        start = start if pending else number
        if not pending and (not text or text[0] in "#!"):
            continue
        trailing_backslashes = len(text) - len(text.rstrip("\\"))
        if trailing_backslashes % 2 == 1:
            pending = text[:-1]
            continue
        pending = ""
        key, value = _parse_setting(text.strip(), f"{path}:{start}")
        settings[key] = value
    if pending:
        raise ConfigError(f"{path}:{start}: the file ends inside a continued line (drop the '\\')")
    return settings


def load_client_settings(path: Path | None, pairs: list[str]) -> dict[str, str]:
    """Client settings from a .properties file, then ``KEY=VALUE`` pairs (pairs win)."""
    settings = _read_properties(path) if path is not None else {}
    for number, pair in enumerate(pairs, start=1):
        if "=" not in pair:
            raise ConfigError(
                f"client setting {number} (-X) is not KEY=VALUE (e.g. sasl.mechanism=PLAIN); "
                "the text is not shown, it may hold a secret"
            )
        key, value = _parse_setting(pair, f"client setting {number} (-X)")
        settings[key] = value
    invariant(all(key for key in settings), "an empty client setting key was accepted")
    return settings


class _ErrorLog:
    """The librdkafka errors one client reported through error_cb (served by poll)."""

    def __init__(self) -> None:
        self.errors: list[KafkaError] = []

    def __call__(self, error: KafkaError) -> None:
        self.errors.append(error)

    def cause(self) -> str:
        """The most telling error so far, as one line."""
        if not self.errors:
            return "no answer"
        telling = [e for e in self.errors if e.code() != KafkaError._ALL_BROKERS_DOWN]
        return " ".join((telling or self.errors)[-1].str().split())

    def terminal(self) -> KafkaError | None:
        """An authentication or fatal error: retrying until the deadline is pointless."""
        return next((e for e in self.errors if e.code() in _AUTH_ERRORS or e.fatal()), None)


def quiet_client_config(config: Mapping[str, Any], errors: _ErrorLog | None = None) -> dict:
    """`config` with librdkafka logs routed to Python logging and errors to `errors`."""
    quiet = dict(config)
    quiet.setdefault("logger", LIBRDKAFKA_LOGGER)
    if errors is not None:
        quiet.setdefault("error_cb", errors)
    return quiet


def _bootstrap(config: Mapping[str, Any]) -> str:
    return str(config.get("bootstrap.servers", "?"))


def _metadata(
    admin: AdminClient, errors: _ErrorLog, bootstrap: str, timeout_s: float
) -> ClusterMetadata:
    """The full cluster metadata, retried in slices until `timeout_s`; TerminalError if none."""
    invariant(timeout_s > 0, f"metadata timeout must be positive, got {timeout_s}")
    deadline = time.monotonic() + timeout_s
    while True:
        remaining_s = deadline - time.monotonic()
        try:
            metadata: ClusterMetadata = admin.list_topics(
                timeout=max(min(METADATA_SLICE_S, remaining_s), 0.01)
            )
            return metadata
        except KafkaException as error:
            admin.poll(0)  # serve error_cb
            refused = errors.terminal()
            if refused is not None:
                raise TerminalError(
                    f"Kafka at {bootstrap} refused the client: {' '.join(refused.str().split())} "
                    "(check security.protocol, sasl.* and ssl.* settings)"
                ) from error
            if time.monotonic() >= deadline:
                raise TerminalError(
                    f"cannot reach Kafka at {bootstrap} within {timeout_s:g} s: "
                    f"{errors.cause()} (is the broker running? check --kafka)"
                ) from error


def _with_settings_checked(make: Callable[[dict[str, Any]], Any], settings: dict[str, Any]) -> Any:
    """A librdkafka client made from `settings`; a setting librdkafka refuses (an
    unknown name, a bad value, often from ``-X``) is a one-line ConfigError."""
    try:
        return make(settings)
    except KafkaException as error:
        reason = error.args[0].str() if error.args and hasattr(error.args[0], "str") else error
        raise ConfigError(f"Kafka client settings: {redact_text(str(reason), settings)}") from None


def _admin_client(settings: dict[str, Any]) -> AdminClient:
    return _with_settings_checked(AdminClient, settings)


def check_reachable(config: Mapping[str, Any], timeout_s: float = REACHABLE_TIMEOUT_S) -> None:
    """Return once the cluster answers a metadata request; TerminalError after `timeout_s`."""
    errors = _ErrorLog()
    admin = _admin_client(quiet_client_config(config, errors))
    metadata = _metadata(admin, errors, _bootstrap(config), timeout_s)
    invariant(metadata is not None, "metadata request returned nothing")


def _partition_counts(metadata: ClusterMetadata) -> dict[str, int]:
    return {name: len(topic.partitions) for name, topic in metadata.topics.items()}


def topic_partition_count(
    config: Mapping[str, Any], topic: str, timeout_s: float = PARTITION_COUNT_TIMEOUT_S
) -> int:
    """The number of partitions of `topic`; TerminalError if it does not exist."""
    errors = _ErrorLog()
    admin = _admin_client(quiet_client_config(config, errors))
    bootstrap = _bootstrap(config)
    metadata = _metadata(admin, errors, bootstrap, timeout_s)
    if topic not in metadata.topics:
        raise TerminalError(
            f"topic {topic!r} does not exist at {bootstrap} (check the name, or create it first)"
        )
    described = metadata.topics[topic]
    if described.error is not None:
        raise TerminalError(
            f"topic {topic!r} at {bootstrap} is unusable: {described.error.str()} "
            "(check ACLs and the topic name)"
        )
    count = len(described.partitions)
    invariant(count > 0, f"topic {topic!r} listed with no partitions")
    return count


def _create_missing(
    admin: AdminClient, wanted: list[NewTopic], bootstrap: str, timeout_s: float
) -> None:
    """Create `wanted` within `timeout_s`; a topic that already exists is fine."""
    futures = admin.create_topics(wanted, operation_timeout=timeout_s, request_timeout=timeout_s)
    for name, future in futures.items():
        try:
            future.result()
        except KafkaException as exception:
            error: KafkaError = exception.args[0]
            if error.code() == KafkaError.TOPIC_ALREADY_EXISTS:
                continue
            kind = TransientError if error.retriable() else TerminalError
            raise kind(
                f"cannot create topic {name!r} at {bootstrap}: {' '.join(error.str().split())} "
                "(check ACLs, partition count and replication_factor)"
            ) from exception


def ensure_topics(
    config: Mapping[str, Any],
    topics: Mapping[str, int],
    timeout_s: float = TOPICS_TIMEOUT_S,
    *,
    replication_factor: int = -1,
    topic_config: Mapping[str, str] | None = None,
) -> None:
    """Create the missing `topics` (name → partitions) and wait until metadata lists them.

    Idempotent. A topic that already exists is kept as it is, whatever its
    partition count. `replication_factor` -1 is the broker's default;
    `topic_config` (``retention.ms`` ...) applies to the topics created here,
    the only moment some brokers (Tansu) accept it.
    """
    for name, partitions in topics.items():
        if not name or not 0 < partitions <= PARTITIONS_MAX:
            raise ConfigError(
                f"topic {name!r} with {partitions} partitions (give a name and 1-{PARTITIONS_MAX})"
            )
    errors = _ErrorLog()
    admin = _admin_client(quiet_client_config(config, errors))
    bootstrap = _bootstrap(config)
    deadline = time.monotonic() + timeout_s
    existing = _partition_counts(_metadata(admin, errors, bootstrap, timeout_s))
    wanted = [
        NewTopic(name, partitions, replication_factor, config=dict(topic_config or {}))
        for name, partitions in topics.items()
        if name not in existing
    ]
    if wanted:
        _create_missing(admin, wanted, bootstrap, max(deadline - time.monotonic(), 0.1))
    expected = {t.topic: t.num_partitions for t in wanted}
    while True:
        remaining_s = max(deadline - time.monotonic(), 0.01)
        listed = _partition_counts(_metadata(admin, errors, bootstrap, remaining_s))
        waiting = sorted(n for n in topics if listed.get(n, 0) < expected.get(n, 1))
        if not waiting:
            invariant(all(n in listed for n in topics), "an ensured topic is not listed")
            return
        if time.monotonic() >= deadline:
            raise TransientError(
                f"topics {waiting} at {bootstrap} not listed with their partitions "
                f"after {timeout_s:g} s (broker slow? retry)"
            )
        time.sleep(TOPIC_POLL_INTERVAL_S)


# How long a run waits for a broker that stopped answering before it exits (``centflow
# run --broker-timeout-s``): past a restart or a failover, short of a real outage.
BROKER_TIMEOUT_S_DEFAULT = 60.0
BROKER_TIMEOUT_S_MIN = 1.0
BROKER_TIMEOUT_S_MAX = 86_400.0
# The watch asks the cluster for metadata this often, each request waiting at most this long.
WATCH_PROBE_INTERVAL_S = 1.0
WATCH_PROBE_TIMEOUT_S = 2.0
WATCH_JOIN_TIMEOUT_S = WATCH_PROBE_TIMEOUT_S + 1.0
# A worker that fails while the broker has been silent this long failed because of it.
WATCH_BLAME_SILENCE_S = 5.0


def check_broker_timeout(timeout_s: float) -> float:
    """`timeout_s` if it is a usable ``--broker-timeout-s``; else a one-line ConfigError.

    >>> check_broker_timeout(60)
    60
    """
    if not BROKER_TIMEOUT_S_MIN <= timeout_s <= BROKER_TIMEOUT_S_MAX:
        raise ConfigError(
            f"--broker-timeout-s {timeout_s:g} is out of range "
            f"{BROKER_TIMEOUT_S_MIN:g}..{BROKER_TIMEOUT_S_MAX:g} (seconds)"
        )
    return timeout_s


class BrokerWatch:
    """Whether the Kafka cluster of a run keeps answering, seen from ``centflow run``.

    A daemon thread asks for the metadata of `topic` (which exists: the run
    checked it, so no broker creates it here) every `WATCH_PROBE_INTERVAL_S`,
    each request bounded by `WATCH_PROBE_TIMEOUT_S`, and notes when the last
    answer came. `check`, called from the runner's loop, raises TransientError
    once no answer came for `timeout_s`: the workers themselves wait for a
    broker however long it is away (their snapshots flush to it, their sources
    never take its silence for idleness), so this is what bounds the wait.
    Owns its admin client and its thread; `close` (or leaving the ``with``)
    stops both. `clock` is injectable for tests.
    """

    def __init__(
        self,
        config: Mapping[str, Any],
        topic: str,
        timeout_s: float,
        out_dir: Path,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._bootstrap = _bootstrap(config)
        self._topic = topic
        self._timeout_s = check_broker_timeout(timeout_s)
        self._out_dir = out_dir
        self._clock = clock
        self._answered_s = clock()  # the run found the cluster answering just before
        self._admin = _admin_client(quiet_client_config(config))
        self._closing = threading.Event()
        self._thread = threading.Thread(target=self._probe, name="broker-watch", daemon=True)

    def _probe(self) -> None:
        while not self._closing.is_set():
            try:
                self._admin.list_topics(self._topic, timeout=WATCH_PROBE_TIMEOUT_S)
                self._answered_s = self._clock()
            except KafkaException:
                pass  # no answer: the silence grows, and `check` judges it
            self._closing.wait(WATCH_PROBE_INTERVAL_S)

    def silent_s(self) -> float:
        """Seconds since the cluster last answered."""
        silent_s = self._clock() - self._answered_s
        invariant(silent_s >= 0, f"the broker answered {-silent_s:g} s in the future")
        return silent_s

    def _outage(self, silent_s: float, cause: str = "") -> TransientError:
        return TransientError(
            f"Kafka at {self._bootstrap} unreachable for {silent_s:.0f} s "
            f"(--broker-timeout-s {self._timeout_s:g}){cause}; the state is kept in "
            f"{self._out_dir}, rerun the same command to resume once the broker is back"
        )

    def check(self) -> None:
        """Raise TransientError if the cluster has been silent for over the limit."""
        if (silent_s := self.silent_s()) > self._timeout_s:
            raise self._outage(silent_s)

    def blame(self, failure: Exception) -> None:
        """Raise the outage, citing `failure` (a worker's), if the cluster has been
        silent long enough to explain it (a flush that timed out, say); else return."""
        if (silent_s := self.silent_s()) >= WATCH_BLAME_SILENCE_S:
            raise self._outage(silent_s, f", and a worker failed: {failure}") from failure

    def __enter__(self) -> BrokerWatch:
        self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def close(self) -> None:
        """Stop probing (the thread ends within one probe; it is a daemon regardless)."""
        self._closing.set()
        if self._thread.is_alive():
            self._thread.join(WATCH_JOIN_TIMEOUT_S)


@dataclass(frozen=True, slots=True)
class ProduceStats:
    """What one `produce_log` call published."""

    messages: int
    bytes: int
    seconds: float

    @property
    def rate(self) -> float:
        """Messages per second (0 for an empty log).

        >>> ProduceStats(messages=10, bytes=100, seconds=2.0).rate
        5.0
        """
        return self.messages / self.seconds if self.seconds > 0 else 0.0


class _Deliveries:
    """Failed deliveries and fatal producer errors, from librdkafka's callbacks."""

    def __init__(self) -> None:
        self.failed = 0
        self.first_failure = ""
        self.fatal: KafkaError | None = None

    def on_delivery(self, error: KafkaError | None, message: Message) -> None:
        if error is None:
            return
        self.failed += 1
        if not self.first_failure:
            # Delivery reports carry no headers: name the message by its key.
            self.first_failure = f"{error.str()} (message key {message.key()!r})"

    def on_error(self, error: KafkaError) -> None:
        if error.fatal():
            self.fatal = error


def _pacer(rate_per_s: float | None, speed: float | None) -> Callable[[int, int], float] | None:
    """A function (messages sent so far, ingestion µs) → seconds to wait; None for full speed.

    Time starts at the first message (rate) or at the first message with a
    log clock above 0 (speed: lines before the first readable event time are
    sent at once).
    """
    if rate_per_s is not None and speed is not None:
        raise ConfigError("give either a rate or a speed-up to produce, not both")
    for name, value in (("rate", rate_per_s), ("speed", speed)):
        if value is not None and not 0 < value < float("inf"):
            raise ConfigError(f"produce {name} {value} must be a positive number")
    origin: list[float] = []  # [wall-clock s, log clock µs] of the first paced message
    if rate_per_s is not None:
        messages_per_s = rate_per_s

        def wait_by_rate_s(sent: int, _ingest_us: int) -> float:
            if not origin:
                origin.append(time.monotonic())
            invariant(sent >= 0, f"negative message count {sent}")
            return origin[0] + sent / messages_per_s - time.monotonic()

        return wait_by_rate_s
    if speed is None:
        return None
    speed_up = speed

    def wait_by_speed_s(_sent: int, ingest_us: int) -> float:
        if not origin:
            if ingest_us <= 0:
                return 0.0
            origin.extend((time.monotonic(), ingest_us))
        invariant(ingest_us >= origin[1], f"log clock went back to {ingest_us} µs")
        log_elapsed_s = (ingest_us - origin[1]) / MICROS_PER_SECOND
        return origin[0] + log_elapsed_s / speed_up - time.monotonic()

    return wait_by_speed_s


def _producer(config: Mapping[str, Any], deliveries: _Deliveries) -> Producer:
    settings: dict[str, Any] = dict(PRODUCER_DEFAULTS)
    settings.update(config)
    settings["on_delivery"] = deliveries.on_delivery
    settings["error_cb"] = deliveries.on_error
    return _with_settings_checked(Producer, quiet_client_config(settings))


LogRecord = tuple[str, bytes, int, bytes | None]
#: `log_records` in columns: (positions, raw lines, ingestion µs, keys) of consecutive lines.
LogFrame = tuple[list[str], list[bytes], list[int], list[bytes | None]]


class _FrameParser:
    """A log read into `LogFrame` s, from line `start_line` on with the log clock at
    `now_us`: where one parser stops (`line_number`, ``clock.now_us``), another,
    in another process, carries on with exactly the same records.

    One JSON decode per line gives both its log-clock ingestion time and its
    key (`LogClock.advance_keyed`, the clock `centflow.ingest.replay.iter_log`
    runs); columns of strings, bytes and ints are cheap to frame and leave the
    garbage collector nothing to track.
    """

    def __init__(self, path: Path, start_line: int = 0, now_us: int = CLOCK_START_US) -> None:
        invariant(start_line >= 0 and now_us >= CLOCK_START_US, "bad parser start")
        self.clock = LogClock(now_us)
        self.line_number = start_line  # the last line read
        self._lines = LineBatches(path, start_line)

    def frame(self, size: int = READER_FRAME_RECORDS) -> LogFrame | None:
        """The next (at most `size`) records, or None at the end of the log."""
        invariant(0 < size <= READER_FRAME_RECORDS, f"frame size {size} out of range")
        advance = self.clock.advance_keyed
        positions: list[str] = []
        raws: list[bytes] = []
        ingests: list[int] = []
        keys: list[bytes | None] = []
        for name, line_number, raw in self._lines.take(size):
            ingest_us, payer_id = advance(raw)
            positions.append(f"{name}:{line_number}")
            raws.append(raw)
            ingests.append(ingest_us)
            keys.append(payer_id.encode() if payer_id else None)
            self.line_number = line_number
        return (positions, raws, ingests, keys) if raws else None

    def close(self) -> None:
        """Close the log file now rather than when the parser is collected."""
        self._lines.close()


def log_frames(path: Path, size: int = READER_FRAME_RECORDS) -> Iterator[LogFrame]:
    """`log_records` in frames of up to `size` records, as four columns."""
    parser = _FrameParser(path)
    while (frame := parser.frame(size)) is not None:
        yield frame


def log_records(path: Path) -> Iterator[LogRecord]:
    """(source position, raw line, ingestion µs, key) in log order.

    The key is the line's ``payer_id`` as UTF-8, or None when the line is not
    a JSON object with a string ``payer_id``; the rest is `iter_log`.
    """
    for frame in log_frames(path):
        yield from zip(*frame, strict=True)


def serve_log_records(path_text: str) -> None:
    """Child-process side of `_LogReader`: say it is ready (an empty frame), read where
    to start (``START_LINE NOW_US`` on stdin; nothing means the parent needs no help),
    then write the frames from there on as length-prefixed msgpack to stdout."""
    output = sys.stdout.buffer
    output.write(_READY)
    output.flush()
    handover = sys.stdin.readline().split()
    if not handover:
        return
    start_line, now_us = (int(field) for field in handover)
    parser = _FrameParser(Path(path_text), start_line, now_us)
    encoder = msgspec.msgpack.Encoder()
    while (frame := parser.frame()) is not None:
        payload = encoder.encode(frame)
        output.write(len(payload).to_bytes(4, "big") + payload)
    output.flush()


_READY = bytes(4)  # a frame of length 0


def _widen_pipe(pipe: IO[bytes] | None) -> None:
    """Make room for a whole frame in the child's pipe, so the child parses on while the
    parent produces (Linux; elsewhere, or above the system's limit, the default stays)."""
    set_size = getattr(fcntl, "F_SETPIPE_SZ", None)
    if pipe is None or set_size is None:
        return
    try:
        fcntl.fcntl(pipe.fileno(), set_size, READER_PIPE_BYTES)
    except OSError:  # above /proc/sys/fs/pipe-max-size: a slower start, nothing worse
        pass


class _LogReader:
    """`log_frames(path)`, parsed by a child process so parsing runs beside producing.

    Parsing a line (its log clock above all) costs more than producing it, so
    one process cannot keep a producer busy. The child takes a moment to
    start (imports), so the parent parses the first lines itself, in small
    frames, and hands over to the child (the line and the log clock it got
    to) once the child says it is ready; a log that ends first, or a child
    that never gets ready, is read by the parent alone. Owns the child, its
    pipes and its captured stderr; `close` always reaps the child.
    """

    def __init__(self, path: Path, hand_over_after_lines: int = 0) -> None:
        """`hand_over_after_lines`: parse at least these lines here, then wait for the
        child (tests use it to make the child's part certain)."""
        log_files(path)  # a missing log is a ConfigError here, not a child's traceback
        package_root = str(Path(__file__).resolve().parents[2])
        environment = dict(os.environ)
        environment["PYTHONPATH"] = os.pathsep.join(
            p for p in (package_root, environment.get("PYTHONPATH")) if p
        )
        command = [
            sys.executable,
            "-c",
            "import sys; from centflow.ops.kafka import serve_log_records; "
            "serve_log_records(sys.argv[1])",
            str(path),
        ]
        self._path = path
        self._hand_over_after_lines = hand_over_after_lines
        self.handed_over_at: int | None = None  # the last line the parent parsed, if it did
        self._errors = tempfile.TemporaryFile()  # noqa: SIM115 - closed by close()
        self._process = subprocess.Popen(
            command,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self._errors,
            env=environment,
        )
        _widen_pipe(self._process.stdout)

    def __iter__(self) -> Iterator[LogFrame]:
        stream, requests = self._process.stdout, self._process.stdin
        if stream is None or requests is None:
            raise InvariantViolation("log reader started without its pipes")
        parser = _FrameParser(self._path)
        while (frame := parser.frame(LOCAL_FRAME_RECORDS)) is not None:
            yield frame
            if parser.line_number >= self._hand_over_after_lines and self._child_ready(
                stream, wait=bool(self._hand_over_after_lines)
            ):
                parser.close()
                self.handed_over_at = parser.line_number
                try:
                    requests.write(f"{parser.line_number} {parser.clock.now_us}\n".encode())
                    requests.close()
                except BrokenPipeError:  # it died since: its exit status tells why, below
                    pass
                yield from self._child_frames(stream)
                return
        requests.close()  # the log ended here first: the child has nothing to do

    def _child_ready(self, stream: IO[bytes], wait: bool) -> bool:
        """Whether the child has said it is ready (without waiting, unless `wait`)."""
        if not wait and not select.select([stream], [], [], 0)[0]:
            return False
        said = stream.read(len(_READY))
        invariant(said in (_READY, b""), f"log reader said {said!r} before it was asked")
        return said == _READY  # b"": it failed to start; the parent reads on alone

    def _child_frames(self, stream: IO[bytes]) -> Iterator[LogFrame]:
        decoder = msgspec.msgpack.Decoder(
            tuple[list[str], list[bytes], list[int], list[bytes | None]]
        )
        while len(header := stream.read(4)) == 4:
            size = int.from_bytes(header, "big")
            invariant(0 < size <= READER_FRAME_BYTES_MAX, f"log reader frame of {size} bytes")
            payload = stream.read(size)
            if len(payload) < size:
                break
            frame = decoder.decode(payload)
            invariant(
                len(frame[0]) == len(frame[1]) == len(frame[2]) == len(frame[3]) > 0,
                "log reader frame with columns of different lengths",
            )
            yield frame
        status = self._process.wait(timeout=READER_STOP_TIMEOUT_S)
        if status != 0:
            self._errors.seek(0)
            lines = self._errors.read().decode(errors="replace").strip().splitlines() or ["?"]
            raise ConfigError(
                f"cannot read replay log {self._path}: {lines[-1]} "
                f"(reader exit status {status}; corrupt or truncated file?)"
            )
        invariant(not header, f"log reader exited 0 in the middle of a frame on {self._path}")

    def close(self) -> None:
        """Stop and reap the child (idempotent)."""
        for pipe in (self._process.stdin, self._process.stdout):
            if pipe is not None:
                try:
                    pipe.close()
                except BrokenPipeError:  # a buffered hand-over the child never read
                    pass
        if self._process.poll() is None:
            self._process.kill()
        self._process.wait(timeout=READER_STOP_TIMEOUT_S)
        self._errors.close()

    def __enter__(self) -> _LogReader:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


def produce_log(
    path: Path,
    config: Mapping[str, Any],
    topic: str,
    *,
    rate_per_s: float | None = None,
    speed: float | None = None,
    progress: Callable[[int], None] | None = None,
) -> ProduceStats:
    """Publish a replay log to `topic` in log order; return what was sent.

    Each line becomes one message: value = the raw bytes, key = its
    ``payer_id`` (None if the line has none), timestamp = its log-clock
    ingestion time in ms (`centflow.ingest.replay.iter_log`; 0 becomes
    `TIMESTAMP_MS_MIN`), header ``origin`` = its source position. The topic
    must exist (see `ensure_topics`). `rate_per_s` paces to a fixed rate,
    `speed` so the log clock runs `speed` times as fast as the wall clock;
    neither means as fast as possible. `progress` gets the count sent so far
    about every `PROGRESS_EVERY_MESSAGES` messages, and at the end. Raises
    TerminalError if any message failed, TransientError if some were still
    undelivered at the end.
    """
    pace = _pacer(rate_per_s, speed)
    with _LogReader(path) as frames:  # the child starts parsing while we connect
        topic_partition_count(config, topic)
        deliveries = _Deliveries()
        producer = _producer(config, deliveries)
        started_s = time.perf_counter()
        sent = sent_bytes = reported = 0
        for frame in frames:
            if pace is None:
                _produce_frame(producer, topic, frame, deliveries)
                sent += len(frame[1])
            else:
                sent = _produce_frame_paced(producer, topic, frame, deliveries, pace, sent)
            sent_bytes += sum(map(len, frame[1]))
            producer.poll(0)  # serve callbacks once a frame
            _raise_if_fatal(deliveries, topic)
            if progress is not None and sent - reported >= PROGRESS_EVERY_MESSAGES:
                progress(sent)
                reported = sent
    undelivered = producer.flush(FLUSH_TIMEOUT_S)
    seconds = time.perf_counter() - started_s
    _raise_if_fatal(deliveries, topic)
    if deliveries.failed:
        raise TerminalError(
            f"{deliveries.failed} of {sent} messages to {topic!r} failed, first: "
            f"{deliveries.first_failure} (check the broker log and the topic)"
        )
    if undelivered:
        raise TransientError(
            f"{undelivered} of {sent} messages to {topic!r} undelivered after "
            f"{FLUSH_TIMEOUT_S:g} s (broker slow or down? check it, then produce again)"
        )
    invariant(len(producer) == 0, "producer queue not empty after a complete flush")
    if progress is not None and sent != reported:
        progress(sent)
    return ProduceStats(messages=sent, bytes=sent_bytes, seconds=seconds)


def _produce_frame(
    producer: Producer, topic: str, frame: LogFrame, deliveries: _Deliveries
) -> None:
    """Queue a frame's messages as fast as the local queue takes them (the hot loop)."""
    produce = producer.produce
    for position, raw, ingest_us, key in zip(*frame, strict=True):
        timestamp_ms = ingest_us // MICROS_PER_MILLISECOND
        try:
            produce(
                topic,
                raw,
                key,
                timestamp=timestamp_ms if timestamp_ms > TIMESTAMP_MS_MIN else TIMESTAMP_MS_MIN,
                headers=[(HEADER_ORIGIN, position)],
            )
        except (BufferError, KafkaException):
            _produce_one(producer, topic, raw, key, ingest_us, position, deliveries)


def _produce_frame_paced(
    producer: Producer,
    topic: str,
    frame: LogFrame,
    deliveries: _Deliveries,
    pace: Callable[[int, int], float],
    sent: int,
) -> int:
    """Queue a frame's messages, each when `pace` says so; return the new count sent."""
    for position, raw, ingest_us, key in zip(*frame, strict=True):
        wait_s = pace(sent, ingest_us)
        while wait_s > PACING_SLEEP_S_MIN:
            producer.poll(wait_s)
            wait_s = pace(sent, ingest_us)
        _produce_one(producer, topic, raw, key, ingest_us, position, deliveries)
        sent += 1
    return sent


def _produce_one(
    producer: Producer,
    topic: str,
    raw: bytes,
    key: bytes | None,
    ingest_us: int,
    position: str,
    deliveries: _Deliveries,
) -> None:
    """Queue one message, serving delivery reports while the local queue is full."""
    timestamp_ms = max(ingest_us // MICROS_PER_MILLISECOND, TIMESTAMP_MS_MIN)
    headers: list[tuple[str, str | bytes | None]] = [(HEADER_ORIGIN, position)]
    while True:
        try:
            producer.produce(topic, raw, key, timestamp=timestamp_ms, headers=headers)
            return
        except BufferError:
            producer.poll(BUFFER_FULL_POLL_S)
            _raise_if_fatal(deliveries, topic)
        except KafkaException as exception:
            error: KafkaError = exception.args[0]
            raise TerminalError(
                f"cannot produce {position} ({len(raw)} bytes) to {topic!r}: {error.str()} "
                "(oversize line? raise message.max.bytes)"
            ) from exception


def _raise_if_fatal(deliveries: _Deliveries, topic: str) -> None:
    if deliveries.fatal is not None:
        raise TerminalError(
            f"producer to {topic!r} hit a fatal error: {deliveries.fatal.str()} "
            "(idempotent producer fenced or broker state lost; produce again)"
        )
