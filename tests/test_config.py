"""One configuration: a TOML file, CENTFLOW_* overrides, flags over both; validated once,
one line for a wrong key, type or value; `centflow config show` with secrets redacted."""

from __future__ import annotations

from pathlib import Path

import duckdb
import pytest

from centflow.config import load_file_config
from tests.factories import centflow

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "centflow.example.toml"
EDGE = ROOT / "replay_data" / "edge_cases.jsonl"


def test_the_shipped_example_is_valid_and_show_prints_it_back_as_a_config(tmp_path: Path):
    example = load_file_config(EXAMPLE, {})
    assert example.pipeline.window_s == 3600 and [t.name for t in example.risk.tiers] == ["basic", "verified"]  # fmt: skip
    assert example.fx.payee_directory is not None and Path(example.fx.payee_directory).is_file()
    shown = centflow("config", "show", "--config", str(EXAMPLE))
    assert shown.returncode == 0, shown.stderr
    again = tmp_path / "again.toml"
    again.write_text(shown.stdout)
    assert load_file_config(again, {}) == example


def test_environment_overrides_the_file_and_secrets_are_never_shown(tmp_path: Path):
    env = {
        "CENTFLOW_PIPELINE_WINDOW_S": "60",
        "CENTFLOW_RISK_REVIEW_AT": "0.7",
        "CENTFLOW_KAFKA_SETTING_SASL_PASSWORD": "hunter2-secret",
        "CENTFLOW_KAFKA_SETTING_SASL_USERNAME": "svc",
    }
    loaded = load_file_config(EXAMPLE, env)
    assert loaded.pipeline.window_s == 60 and loaded.risk.review_at == 0.7
    assert loaded.kafka.settings == {"sasl.password": "hunter2-secret", "sasl.username": "svc"}
    shown = centflow("config", "show", "--config", str(EXAMPLE), env=env)
    assert shown.returncode == 0, shown.stderr
    assert "hunter2-secret" not in shown.stdout + shown.stderr
    assert '"sasl.password" = "[redacted]"' in shown.stdout and '"sasl.username" = "svc"' in shown.stdout  # fmt: skip
    assert "window_s = 60" in shown.stdout


@pytest.mark.parametrize(
    ("text", "env", "message"),
    [
        ("[pipline]\nwindow_s = 60\n", {}, "unknown field `pipline`"),
        ('[pipeline]\nwindow_s = "an hour"\n', {}, "$.pipeline.window_s"),
        ("[risk]\nreview_at = 0.95\ndecline_at = 0.9\n", {}, "review_at 0.95"),
        ('[[fees]]\nrail = "card"\ncurrency = "USD"\nfixed = "-1"\n', {}, "fixed"),
        ("[fx]\nspread_bps = 20000\n", {}, "FX spread"),
        ("", {"CENTFLOW_PIPELINE_WINDOW_S": "soon"}, "CENTFLOW_PIPELINE_WINDOW_S"),
        ("", {"CENTFLOW_WINDOW_S": "60"}, "unknown environment override CENTFLOW_WINDOW_S"),
    ],
)
def test_a_bad_key_type_or_value_is_one_line_naming_it(tmp_path: Path, text, env, message):
    path = tmp_path / "bad.toml"
    path.write_text(text)
    result = centflow("config", "show", "--config", str(path), env=env)
    assert result.returncode == 2
    assert result.stderr.startswith("centflow: error:") and result.stderr.count("\n") == 1
    assert message in result.stderr and "Traceback" not in result.stderr


def test_flags_win_over_the_environment_which_wins_over_the_file(tmp_path: Path):
    config = tmp_path / "c.toml"
    config.write_text("[pipeline]\nwindow_s = 30\nlateness_s = 10\n")

    def window_lengths(out: Path, *flags: str, env: dict[str, str] | None = None) -> set:
        result = centflow("run", "--replay", str(EDGE), "--out", str(out), "--config", str(config), *flags, env=env)  # fmt: skip
        assert result.returncode == 0, result.stderr[-2000:]
        with duckdb.connect(str(out / "centflow.duckdb"), read_only=True) as db:
            return set(db.execute("SELECT DISTINCT epoch(window_end - window_start) FROM settlement_batches").fetchall())  # fmt: skip

    assert window_lengths(tmp_path / "file") == {(30,)}
    env = {"CENTFLOW_PIPELINE_WINDOW_S": "90"}
    assert window_lengths(tmp_path / "env", env=env) == {(90,)}
    assert window_lengths(tmp_path / "flag", "--window-s", "120", env=env) == {(120,)}
