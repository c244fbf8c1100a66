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

CONFIG_ENV = "CENTFLOW_PIPELINE_CONFIG"


class Topics(msgspec.Struct, frozen=True):
    """Kafka topic names (DESIGN.md's defaults)."""

    payments: str = "payments"
    dead_letters: str = "payments.dlq"
    decisions: str = "payments.decisions"


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
    if not config.partitions:
        raise ConfigError("the input has no partitions (is the topic empty of partitions?)")
    return config


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
