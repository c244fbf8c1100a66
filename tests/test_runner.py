"""Starting worker processes: command lines, the wait for the lower-numbered workers,
and the check of saved state."""

from __future__ import annotations

import socket
import time
from pathlib import Path

import msgspec
import pytest

from centflow.config import PipelineConfig
from centflow.errors import ConfigError
from centflow.ops.cluster import PEERS_ENV, wait_for_peers
from centflow.ops.runner import STATE_FILE, prepare_state, worker_launches

LINUX_SOCKETS = Path("/proc/net/tcp").exists()


def test_one_worker_needs_no_cluster(tmp_path):
    [launch] = worker_launches(tmp_path, 1, 10)
    assert "-a" not in launch.command and launch.environment == {}


def test_each_worker_waits_for_the_workers_numbered_below_it(tmp_path):
    launches = worker_launches(tmp_path, 3, 10)
    addresses = launches[0].command[launches[0].command.index("-a") + 1].split(";")
    assert len(set(addresses)) == 3
    assert [launch.environment[PEERS_ENV] for launch in launches] == [
        "",
        addresses[0],
        ";".join(addresses[:2]),
    ]
    assert [launch.command[launch.command.index("-i") + 1] for launch in launches] == [
        "0",
        "1",
        "2",
    ]


@pytest.mark.skipif(not LINUX_SOCKETS, reason="reads the kernel's socket table")
def test_the_wait_ends_as_soon_as_the_peer_listens(monkeypatch):
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        monkeypatch.setenv(PEERS_ENV, f"127.0.0.1:{listener.getsockname()[1]}")
        started_s = time.monotonic()
        wait_for_peers(timeout_s=5.0)
        assert time.monotonic() - started_s < 1.0


@pytest.mark.skipif(not LINUX_SOCKETS, reason="reads the kernel's socket table")
def test_a_peer_that_never_listens_only_delays_the_start(monkeypatch):
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as bound:
        bound.bind(("127.0.0.1", 0))  # bound, not listening: nobody else takes the port
        monkeypatch.setenv(PEERS_ENV, f"127.0.0.1:{bound.getsockname()[1]}")
        started_s = time.monotonic()
        wait_for_peers(timeout_s=0.3)  # returns, no error: Bytewax's own retry takes over
        assert 0.3 <= time.monotonic() - started_s < 2.0


def test_a_failed_worker_is_reported_by_its_own_error_not_bytewaxs_wrapper(tmp_path):
    from centflow.ops.runner import _last_error_line

    log = tmp_path / "worker-0.log"
    log.write_text(
        "Traceback (most recent call last):\n"
        "centflow.errors.ConfigError: cannot read replay log x.jsonl.gz: bad (corrupt?)\n"
        "\nThe above exception was the direct cause of the following exception:\n\n"
        "bytewax.errors.BytewaxRuntimeError: error calling `next_batch` in step 'read'\n"
    )
    assert _last_error_line(log) == "cannot read replay log x.jsonl.gz: bad (corrupt?)"
    log.write_text("thread panicked\nValueError: something else\n")
    assert _last_error_line(log) == "ValueError: something else"


def test_workers_allocate_arrow_memory_with_jemalloc_unless_told_otherwise(monkeypatch):
    import pyarrow as pa

    from dataflows.pipeline import use_jemalloc

    before = pa.default_memory_pool()
    try:
        monkeypatch.setenv("ARROW_DEFAULT_MEMORY_POOL", "system")
        use_jemalloc()
        assert pa.default_memory_pool().backend_name == before.backend_name
        monkeypatch.delenv("ARROW_DEFAULT_MEMORY_POOL")
        use_jemalloc()
        try:
            pa.jemalloc_memory_pool()
        except NotImplementedError:  # this pyarrow has no jemalloc: the default stays
            assert pa.default_memory_pool().backend_name == before.backend_name
        else:
            assert pa.default_memory_pool().backend_name == "jemalloc"
    finally:
        pa.set_memory_pool(before)


def test_state_kept_in_an_older_layout_is_refused_in_one_line(tmp_path):
    """An out dir written before the recovery state's layout was recorded (format 1)
    is not resumed with today's code: a ConfigError names the difference."""
    log = tmp_path / "log.jsonl"
    log.write_text("")
    config = PipelineConfig(out_dir=str(tmp_path / "out"), replay_path=str(log))
    prepare_state(config)
    state_file = Path(config.out_dir) / STATE_FILE
    saved = msgspec.json.decode(state_file.read_bytes())
    assert saved.pop("state_format") >= 2
    state_file.write_bytes(msgspec.json.encode(saved))  # as an older version wrote it
    with pytest.raises(ConfigError, match=r"state_format: 1 → \d+.*--fresh"):
        prepare_state(config)
