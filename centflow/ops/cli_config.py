"""``centflow config show``: the effective configuration, as TOML, secrets redacted.

What a run would use from ``--config FILE`` and the ``CENTFLOW_*`` environment
overrides (`centflow.config.load_file_config`), every default filled in, the
Kafka client settings with every secret value (passwords, keys, tokens,
JAAS configs) replaced by ``[redacted]``. Command-line flags of ``centflow
run`` still win over what is shown. The output is itself a valid ``--config``
file.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import msgspec
import tomli_w
import typer

from centflow import limits
from centflow.config import FileConfig, load_file_config
from centflow.money.fees import DEFAULT_SCHEDULE

config_app = typer.Typer(no_args_is_help=True, help="The configuration: show what a run uses.")

#: ``[pipeline]`` and ``[topics]`` defaults (those of ``centflow run``'s flags).
PIPELINE_DEFAULTS: dict[str, Any] = {
    "window_s": limits.WINDOW_LENGTH_S_DEFAULT,
    "lateness_s": limits.LATENESS_S_DEFAULT,
    "dedupe_horizon_s": limits.DEDUPE_HORIZON_S_DEFAULT,
    "future_skew_s": limits.FUTURE_SKEW_S_DEFAULT,
    "idle_s": limits.IDLE_S_DEFAULT,
    "workers": 1,
    "snapshot_s": 10,
    "out": "out",
    "log_format": "text",
    "process_id": None,  # a one-host run unless set (with addresses)
    "addresses": None,
}
TOPIC_DEFAULTS = {
    "payments": "payments",
    "dead_letters": "payments.dlq",
    "decisions": "payments.decisions",
    "fx_rates": "fx-rates",
}


def _without_nulls(value: Any) -> Any:
    """TOML has no null: a key left unset is left out."""
    if isinstance(value, dict):
        return {key: _without_nulls(item) for key, item in value.items() if item is not None}
    if isinstance(value, (list, tuple)):
        return [_without_nulls(item) for item in value]
    return value


def effective(config: FileConfig) -> dict[str, Any]:
    """`config` as plain data with every default filled in and secrets redacted."""
    from centflow.ops.kafka import redacted_settings

    data = msgspec.to_builtins(config)
    data["pipeline"] = {
        key: default if data["pipeline"].get(key) is None else data["pipeline"][key]
        for key, default in PIPELINE_DEFAULTS.items()
    }
    data["topics"] = {
        key: default if data["topics"].get(key) is None else data["topics"][key]
        for key, default in TOPIC_DEFAULTS.items()
    }
    data["kafka"]["settings"] = redacted_settings(data["kafka"]["settings"])
    if data["fees"] is None:
        data["fees"] = msgspec.to_builtins(DEFAULT_SCHEDULE)
    return _without_nulls(data)


@config_app.command("show")
def show(
    config_file: Annotated[
        Path | None, typer.Option("--config", help="A TOML configuration file.")
    ] = None,
) -> None:
    """Print the effective configuration (file, then CENTFLOW_* overrides) as TOML."""
    typer.echo(tomli_w.dumps(effective(load_file_config(config_file))), nl=False)
