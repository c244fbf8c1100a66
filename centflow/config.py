"""Pipeline configuration: one validated, serialisable record.

`PipelineConfig` travels from the command line to every worker process as
JSON in one environment variable (`CONFIG_ENV`); `from_environment` is the one
function that reads it. Every value is checked in `validate`, which raises
`ConfigError` with a one-line message naming the bad value and a hint.
"""

from __future__ import annotations

import os
from pathlib import Path

import msgspec

from centflow.errors import ConfigError
from centflow.limits import (
    DEDUPE_HORIZON_S_DEFAULT,
    DEDUPE_HORIZON_S_MAX,
    FUTURE_SKEW_S_DEFAULT,
    IDLE_S_DEFAULT,
    IDLE_S_MAX,
    LATENESS_S_DEFAULT,
    LATENESS_S_MAX,
    MICROS_PER_SECOND,
    SOURCE_BATCH_MESSAGES_MAX,
    WINDOW_LENGTH_S_DEFAULT,
    WINDOW_LENGTH_S_MAX,
    WINDOW_LENGTH_S_MIN,
)
from centflow.money.fees import DEFAULT_SCHEDULE, RailFee, schedule_terms

CONFIG_ENV = "CENTFLOW_PIPELINE_CONFIG"


class Topics(msgspec.Struct, frozen=True):
    """Kafka topic names (DESIGN.md's defaults)."""

    payments: str = "payments"
    dead_letters: str = "payments.dlq"
    decisions: str = "payments.decisions"
    fx_rates: str = "fx-rates"


class Tier(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """A payer verification tier's limits, in major units of the payment's currency.

    ``payment_max_units`` and ``day_max_units`` hold for every currency that
    ``per_currency`` does not name; ``per_currency`` maps a currency to its own
    ``(payment_max_units, day_max_units)`` (1,000 dollars are not 1,000 yen).
    """

    name: str
    payment_max_units: int
    day_max_units: int
    per_currency: dict[str, tuple[int, int]] = {}

    def limits(self, currency: str) -> tuple[int, int]:
        """(per payment, per day) in major units of `currency`."""
        return self.per_currency.get(currency, (self.payment_max_units, self.day_max_units))


def _tier(name: str, payment_max: int, day_max: int) -> Tier:
    """A tier whose limits scale to the currencies far from the dollar's magnitude."""
    scale = {"JPY": 150, "KRW": 1_400, "INR": 85, "BRL": 5, "MXN": 20, "ZAR": 18, "IDR": 16_000}
    return Tier(
        name,
        payment_max,
        day_max,
        {code: (payment_max * factor, day_max * factor) for code, factor in scale.items()},
    )


class RiskConfig(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """Decision thresholds, label age, tiers (lowest first) and the payer directory."""

    review_at: float = 0.5
    decline_at: float = 0.9
    label_age_s: int = 1800
    tiers: tuple[Tier, ...] = (
        _tier("basic", 1_000, 3_000),
        _tier("verified", 10_000, 50_000),
        _tier("business", 1_000_000, 10_000_000),
    )
    payer_directory: str | None = None

    @property
    def label_age_us(self) -> int:
        return self.label_age_s * MICROS_PER_SECOND


class FxConfig(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """FX (`centflow.money.fx`): the rates file, the payee directory, the spread.

    Without a payee directory every payee settles in its events' currency and no
    rate is needed. Without a rates file, a run from Kafka reads the rates from
    the ``fx-rates`` topic. A batch whose rate is missing when its window closes
    waits for it; `rate_wait_s` later it is marked ``awaiting_rate`` (and still
    settles when the rate comes). Rates from the topic are kept for
    `rate_horizon_s` past their as-of time (and each pair's latest before that):
    an event older than that finds no rate and awaits one."""

    rates: str | None = None
    payee_directory: str | None = None
    #: a topic of payee directory entries (a run from Kafka): each in force from its
    #: message timestamp, over the file's
    payee_directory_topic: str | None = None
    spread_bps: int = 20
    rate_wait_s: int = 900
    rate_horizon_s: int = 7 * 86_400


class PipelineConfig(msgspec.Struct, frozen=True):
    """Everything a worker needs to build the dataflow."""

    out_dir: str
    replay_path: str | None = None
    kafka: dict[str, str] | None = None  # librdkafka client settings incl. bootstrap.servers
    topics: Topics = Topics()
    partitions: tuple[str, ...] = ("replay/0",)  # replay: one per worker (dataflows.sources)
    until_idle: bool = True
    idle_s: float = IDLE_S_DEFAULT
    window_length_s: int = WINDOW_LENGTH_S_DEFAULT
    lateness_s: int = LATENESS_S_DEFAULT
    dedupe_horizon_s: int = DEDUPE_HORIZON_S_DEFAULT
    future_skew_s: int = FUTURE_SKEW_S_DEFAULT
    batch_messages_max: int = SOURCE_BATCH_MESSAGES_MAX
    risk: RiskConfig = RiskConfig()
    fees: tuple[RailFee, ...] = DEFAULT_SCHEDULE
    fx: FxConfig = FxConfig()
    #: partitions ``<topic>/<n>`` of the FX rates topic, when rates come from one
    rate_partitions: tuple[str, ...] = ()
    #: partitions of the payee directory topic, when there is one
    payee_partitions: tuple[str, ...] = ()

    @property
    def window_us(self) -> int:
        return self.window_length_s * MICROS_PER_SECOND

    @property
    def lateness_us(self) -> int:
        return self.lateness_s * MICROS_PER_SECOND

    @property
    def dedupe_horizon_us(self) -> int:
        return self.dedupe_horizon_s * MICROS_PER_SECOND

    @property
    def future_skew_us(self) -> int:
        return self.future_skew_s * MICROS_PER_SECOND

    @property
    def parquet_dir(self) -> Path:
        return Path(self.out_dir) / "parquet"


def _check_range(name: str, value: float, low: float, high: float, flag: str) -> None:
    if not low <= value <= high:
        raise ConfigError(f"{name} {value} is out of range {low}..{high} (set {flag})")


def validate(config: PipelineConfig) -> PipelineConfig:
    """Return `config` if every value is usable; else raise a one-line `ConfigError`."""
    if (config.replay_path is None) == (config.kafka is None):
        raise ConfigError("give exactly one input: --replay FILE or --kafka BOOTSTRAP")
    _check_range(
        "window length",
        config.window_length_s,
        WINDOW_LENGTH_S_MIN,
        WINDOW_LENGTH_S_MAX,
        "--window-s",
    )
    _check_range("allowed lateness", config.lateness_s, 0, LATENESS_S_MAX, "--lateness-s")
    _check_range(
        "dedupe horizon", config.dedupe_horizon_s, 1, DEDUPE_HORIZON_S_MAX, "--dedupe-horizon-s"
    )
    _check_range("future skew", config.future_skew_s, 0, LATENESS_S_MAX, "--future-skew-s")
    _check_range("idle time", config.idle_s, 0.1, IDLE_S_MAX, "--idle-s")
    _check_range("batch size", config.batch_messages_max, 1, 100_000, "batch_messages_max")
    _validate_risk(config.risk)
    schedule_terms(config.fees)
    _validate_fx(config.fx, bool(config.rate_partitions))
    if not config.partitions:
        raise ConfigError("the input has no partitions (is the topic empty of partitions?)")
    return config


def _validate_fx(fx: FxConfig, rates_topic: bool = False) -> None:
    _check_range("FX spread", fx.spread_bps, 0, 9_999, "[fx] spread_bps")
    _check_range("FX rate wait", fx.rate_wait_s, 0, 30 * 86_400, "[fx] rate_wait_s")
    _check_range("FX rate horizon", fx.rate_horizon_s, 3_600, 366 * 86_400, "[fx] rate_horizon_s")
    has_directory = fx.payee_directory is not None or fx.payee_directory_topic is not None
    if has_directory and fx.rates is None and not rates_topic:
        raise ConfigError(
            "a payee directory needs FX rates to convert with: give --fx-rates FILE "
            "(or [fx] rates) beside --payee-directory, or run from --kafka, which reads "
            "the fx-rates topic"
        )
    for name, path in (("--fx-rates", fx.rates), ("--payee-directory", fx.payee_directory)):
        if path is not None and not Path(path).is_file():
            raise ConfigError(f"{name} {path}: no such file")


def _validate_risk(risk: RiskConfig) -> None:
    if not 0.0 < risk.review_at <= risk.decline_at <= 1.0:
        raise ConfigError(
            f"risk thresholds review_at {risk.review_at} and decline_at {risk.decline_at} "
            "must satisfy 0 < review_at <= decline_at <= 1"
        )
    _check_range("label age", risk.label_age_s, 1, LATENESS_S_MAX, "--label-age-s")
    if not risk.tiers:
        raise ConfigError("the risk configuration needs at least one tier")
    names = [tier.name for tier in risk.tiers]
    if len(set(names)) != len(names) or not all(names):
        raise ConfigError(f"risk tiers need distinct, non-empty names (got {names})")
    for tier in risk.tiers:
        for currency, (payment_max, day_max) in {
            "": (tier.payment_max_units, tier.day_max_units),
            **tier.per_currency,
        }.items():
            if payment_max <= 0 or day_max < payment_max:
                where = f" in {currency}" if currency else ""
                raise ConfigError(
                    f"tier {tier.name!r}{where}: limits must satisfy 0 < per payment <= per day"
                )


class PipelineSection(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """``[pipeline]``: what ``centflow run``'s flags of the same names set (None: the
    flag's default)."""

    window_s: int | None = None
    lateness_s: int | None = None
    dedupe_horizon_s: int | None = None
    future_skew_s: int | None = None
    idle_s: float | None = None
    workers: int | None = None
    snapshot_s: int | None = None
    out: str | None = None
    log_format: str | None = None  # "text" or "json" (`centflow.ops.logs`)
    #: several hosts (`centflow.ops.multihost`): this host's process, and every
    #: process's host:port (a list, or one comma-separated string as in the environment)
    process_id: int | None = None
    addresses: str | list[str] | None = None


class KafkaSection(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """``[kafka]``: the bootstrap servers, and librdkafka client settings passed
    through untouched (``[kafka.settings]``: security.protocol, sasl.*, ssl.* ...)."""

    bootstrap_servers: str | None = None
    settings: dict[str, str] = {}


class TopicsSection(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """``[topics]``: topic names (None: DESIGN.md's defaults)."""

    payments: str | None = None
    dead_letters: str | None = None
    decisions: str | None = None
    fx_rates: str | None = None


class FileConfig(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """What a ``--config`` TOML file may set, after ``CENTFLOW_*`` environment overrides
    (`ENV_PREFIX`); `centflow.ops.cli_config` shows it."""

    pipeline: PipelineSection = PipelineSection()
    topics: TopicsSection = TopicsSection()
    kafka: KafkaSection = KafkaSection()
    risk: RiskConfig = RiskConfig()
    #: the fee schedule (``[[fees]]`` entries); when given, it replaces the shipped one
    fees: tuple[RailFee, ...] | None = None
    fx: FxConfig = FxConfig()


#: Environment overrides: ``CENTFLOW_<SECTION>_<KEY>`` sets ``[section] key`` (e.g.
#: ``CENTFLOW_PIPELINE_WINDOW_S=60``, ``CENTFLOW_RISK_REVIEW_AT=0.6``,
#: ``CENTFLOW_KAFKA_BOOTSTRAP_SERVERS``); ``CENTFLOW_KAFKA_SETTING_<NAME>`` sets the
#: client setting NAME lower-cased with ``_`` read as ``.`` (``..._SASL_PASSWORD`` is
#: ``sasl.password``). They win over the file; command-line flags win over both.
ENV_PREFIX = "CENTFLOW_"
_ENV_SECTIONS = ("pipeline", "topics", "kafka", "risk", "fx")
#: Variables the processes hand each other, never overrides.
_INTERNAL_ENV = frozenset({CONFIG_ENV, "CENTFLOW_WAIT_FOR_PEERS"})


def _apply_environment(data: dict, environ: dict[str, str]) -> list[str]:
    """Put the ``CENTFLOW_*`` overrides of `environ` into the raw TOML `data`; return
    their names. An unknown section is one ConfigError line."""
    applied = []
    for name in sorted(environ):
        if not name.startswith(ENV_PREFIX) or name in _INTERNAL_ENV:
            continue
        rest = name.removeprefix(ENV_PREFIX).lower()
        if rest.startswith("kafka_setting_"):
            key = rest.removeprefix("kafka_setting_").replace("_", ".")
            data.setdefault("kafka", {}).setdefault("settings", {})[key] = environ[name]
        else:
            section = next((s for s in _ENV_SECTIONS if rest.startswith(f"{s}_")), None)
            if section is None:
                raise ConfigError(
                    f"unknown environment override {name}: use CENTFLOW_<SECTION>_<KEY> with a "
                    f"section of {', '.join(_ENV_SECTIONS)}, or CENTFLOW_KAFKA_SETTING_<NAME>"
                )
            data.setdefault(section, {})[rest.removeprefix(f"{section}_")] = environ[name]
        applied.append(name)
    return applied


def load_file_config(path: Path | None, environ: dict[str, str] | None = None) -> FileConfig:
    """A ``--config`` TOML file (or none) with the ``CENTFLOW_*`` overrides of `environ`
    (default: the process environment); a wrong key, type or value is one ConfigError
    line naming it.

    Paths inside the file (``risk.payer_directory``, ``fx.rates``,
    ``fx.payee_directory``) are relative to the file itself.
    """
    data: dict = {}
    where = "the environment"
    if path is not None:
        where = str(path)
        try:
            text = path.read_bytes()
        except OSError as error:
            raise ConfigError(f"cannot read the configuration {path}: {error.strerror}") from None
        try:
            data = msgspec.toml.decode(text)
        except msgspec.DecodeError as error:
            raise ConfigError(f"{path}: not valid TOML ({error})") from None
        if not isinstance(data, dict):
            raise ConfigError(f"{path}: not a TOML table")
    overrides = _apply_environment(data, dict(os.environ if environ is None else environ))
    if overrides:
        where += f" with {', '.join(overrides)}"
    try:
        loaded = msgspec.convert(data, FileConfig, strict=False)
    except msgspec.ValidationError as error:
        raise ConfigError(f"{where}: {error}") from None
    base = path.parent if path is not None else Path.cwd()
    directory = loaded.risk.payer_directory
    if directory is not None and not Path(directory).is_absolute():
        directory = str((base / directory).resolve())
        loaded = msgspec.structs.replace(
            loaded, risk=msgspec.structs.replace(loaded.risk, payer_directory=directory)
        )
    fx_paths = {}
    for name in ("rates", "payee_directory"):
        value = getattr(loaded.fx, name)
        if value is not None and not Path(value).is_absolute():
            fx_paths[name] = str((base / value).resolve())
    if fx_paths:
        loaded = msgspec.structs.replace(loaded, fx=msgspec.structs.replace(loaded.fx, **fx_paths))
    _validate_risk(loaded.risk)
    if loaded.fees is not None:
        schedule_terms(loaded.fees)
    _validate_fx(loaded.fx)
    return loaded


def to_environment(config: PipelineConfig) -> dict[str, str]:
    """The environment entry that hands `config` to worker processes."""
    return {CONFIG_ENV: msgspec.json.encode(config).decode()}


def from_environment() -> PipelineConfig:
    """Read the configuration a worker process was started with (the only reader)."""
    text = os.environ.get(CONFIG_ENV)
    if not text:
        raise ConfigError(f"{CONFIG_ENV} is not set: start workers with `centflow run`")
    try:
        return validate(msgspec.json.decode(text, type=PipelineConfig))
    except msgspec.ValidationError as error:
        raise ConfigError(f"bad {CONFIG_ENV}: {error}") from None
