"""One cluster over several hosts, on loopback: two separate ``centflow run --process-id I
--addresses A,B`` commands sharing one --out give the tables of a one-process run of the
same log; SIGTERM to one of them stops both cleanly, and the state resumes on one host; a
one-host state resumes as a cluster; bad flags are one line; the out-dir lock lets one
cluster's processes share the directory and refuses everything else; the recovery
partitions go where `centflow.ops.multihost` says, on a fresh state and on a rescale."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from pathlib import Path

import pytest
import tomli_w

from centflow.config import load_file_config
from centflow.errors import ConfigError
from centflow.generate.logs import write_log
from centflow.ingest.timeparse import parse_rfc3339_us
from centflow.ops.broker import free_loopback_port
from centflow.ops.kafka import client_config, ensure_topics, produce_log
from centflow.ops.multihost import (
    ClusterPlace,
    find_partitions,
    gather_partitions,
    prepare_recovery,
)
from centflow.ops.runner import out_dir_lock
from centflow.ops.status import read_status
from dataflows.recovery import init_recovery
from tests.test_pipeline import WINDOW, _snapshots, centflow, tables

EVENTS = 40_000
RUN_WAIT_S = 240.0
START_WAIT_S = 120.0
EDGE = Path(__file__).resolve().parent.parent / "replay_data" / "edge_cases.jsonl"


@pytest.fixture(scope="module")
def log(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("multihost") / "log.jsonl.gz"
    write_log(path, EVENTS, seed=31, start_us=parse_rfc3339_us("2026-11-02T09:00:00Z"), duration_s=3 * 3600)  # fmt: skip
    return path


def _topic_with_the_log(log: Path, bootstrap: str) -> str:
    topic = f"multihost-{uuid.uuid4().hex[:12]}"
    ensure_topics(client_config(bootstrap), {topic: 4})
    produce_log(log, client_config(bootstrap), topic)
    return topic


@pytest.fixture(scope="module")
def one_process_tables(
    log: Path, kafka_bootstrap: str, tmp_path_factory: pytest.TempPathFactory
) -> dict[str, list[tuple]]:
    """The tables of one process on one host reading the log from a topic of its own (the
    tables name no topic: every topic holding the log gives these)."""
    out = tmp_path_factory.mktemp("one")
    centflow(*_kafka_args(kafka_bootstrap, _topic_with_the_log(log, kafka_bootstrap)), "--out", str(out))  # fmt: skip
    return tables(out)


def _kafka_args(bootstrap: str, topic: str) -> list[str]:
    return [
        "run", "--kafka", bootstrap, "--topic", topic,
        "--dlq-topic", f"{topic}.dlq", "--decisions-topic", f"{topic}.decisions",
        "--until-idle", "--idle-s", "2", "--snapshot-s", "1", *WINDOW,
    ]  # fmt: skip


def _following(args: list[str]) -> list[str]:
    """The same run, following the topic instead of ending when it is idle: a stop then
    always lands mid-stream, with every window still open."""
    return ["--follow" if arg == "--until-idle" else arg for arg in args]


def _addresses() -> str:
    return ",".join(f"127.0.0.1:{free_loopback_port()}" for _ in range(2))


def _start(args: list[str]) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "centflow", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )


def _finish(processes: list[subprocess.Popen[str]]) -> list[tuple[int, str, str]]:
    """Each process's (status, stdout, stderr), within `RUN_WAIT_S` (killed after)."""
    results = []
    deadline_s = time.monotonic() + RUN_WAIT_S
    try:
        for process in processes:
            stdout, stderr = process.communicate(timeout=max(deadline_s - time.monotonic(), 1))
            results.append((process.returncode, stdout, stderr))
    finally:
        for process in processes:
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait(10)
    return results


def _cluster(args: list[str], out: Path) -> list[subprocess.Popen[str]]:
    addresses = _addresses()
    return [
        _start([*args, "--out", str(out), "--process-id", str(index), "--addresses", addresses])
        for index in range(2)
    ]


def _all_snapshots(out: Path) -> int:
    return sum(_snapshots(directory) for directory in (out / "recovery").glob("process-*"))


def _read(out: Path) -> int:
    return sum(status.messages for status in read_status(out) if status.kind == "input")


@pytest.mark.kafka
def test_two_hosts_give_the_tables_of_one_process(
    log, kafka_bootstrap, one_process_tables, tmp_path
):
    args = _kafka_args(kafka_bootstrap, _topic_with_the_log(log, kafka_bootstrap))
    two = tmp_path / "two"
    (zero, first) = _finish(_cluster(args, two))
    assert zero[0] == 0, zero[2][-3000:]
    assert first[0] == 0, first[2][-3000:]
    assert tables(two) == one_process_tables
    # process 0 loaded the tables and printed the report; process 1 only said it was done
    assert "pass  ledger sums to zero per currency" in zero[1] and first[1] == ""
    assert "process 1 of 2 is done" in " ".join(first[2].split())
    assert "Traceback" not in zero[2] + first[2]
    layout = {index: path.parent.name for index, path in find_partitions(two / "recovery").items()}
    assert layout == {0: "process-0", 1: "process-1", 2: "process-0", 3: "process-1"}
    assert sorted(path.name for path in (two / "logs").glob("*.log")) == ["worker-0.log", "worker-1.log"]  # fmt: skip


@pytest.mark.kafka
def _wait_until_reading(processes: list[subprocess.Popen[str]], out: Path, snapshots: Callable[[Path], int]) -> None:  # fmt: skip
    deadline_s = time.monotonic() + START_WAIT_S
    while time.monotonic() < deadline_s and all(p.poll() is None for p in processes):
        if _read(out) >= 5_000 and snapshots(out) > 0:
            return
        time.sleep(0.05)
    raise AssertionError(f"the run did not get going (exits {[p.poll() for p in processes]})")


def _not_ended(out: Path) -> bool:
    inputs = [status for status in read_status(out) if status.kind == "input"]
    return _read(out) > 0 and not any(status.ended for status in inputs)


@pytest.mark.kafka
def test_sigterm_to_one_host_stops_the_cluster_and_one_host_resumes_it(
    log, kafka_bootstrap, one_process_tables, tmp_path
):
    """SIGTERM to process 1's command: both processes stop at the end of an epoch and exit
    0; then the state, rescaled to one process on one host, ends with the clean tables."""
    args = _kafka_args(kafka_bootstrap, _topic_with_the_log(log, kafka_bootstrap))
    stopped = tmp_path / "stopped"
    processes = _cluster(_following(args), stopped)
    _wait_until_reading(processes, stopped, _all_snapshots)
    os.kill(processes[1].pid, signal.SIGTERM)
    (zero, first) = _finish(processes)
    assert zero[0] == 0 and first[0] == 0, zero[2][-2000:] + first[2][-2000:]
    assert "stopped on SIGTERM at the end of an epoch" in " ".join(first[2].split())
    assert "stopped on a stop request at the end of an epoch" in " ".join(zero[2].split())
    assert _not_ended(stopped), "the cluster ended before it could be stopped"
    resumed = centflow(*args, "--out", str(stopped))  # one host, one process, the same state
    assert "pipeline finished" in resumed.stderr
    assert sorted(path.name for path in (stopped / "recovery").glob("part-*.sqlite3")) == [
        f"part-{index}.sqlite3" for index in range(4)
    ]
    assert tables(stopped) == one_process_tables


@pytest.mark.kafka
def test_a_one_host_state_resumes_as_a_cluster_of_two_hosts(
    log, kafka_bootstrap, one_process_tables, tmp_path
):
    """A one-host run stopped mid-stream, resumed as two processes (a rescale from 1 to 2):
    each takes its recovery partitions from the one-host layout, and the tables are clean."""
    args = _kafka_args(kafka_bootstrap, _topic_with_the_log(log, kafka_bootstrap))
    runner = _start([*_following(args), "--out", str(tmp_path)])
    _wait_until_reading([runner], tmp_path, lambda out: _snapshots(out / "recovery"))
    os.kill(runner.pid, signal.SIGTERM)
    ((status, _, stderr),) = _finish([runner])
    assert status == 0 and _not_ended(tmp_path), stderr[-2000:]
    (zero, first) = _finish(_cluster(args, tmp_path))
    assert zero[0] == 0 and first[0] == 0, zero[2][-2000:] + first[2][-2000:]
    layout = {index: path.parent.name for index, path in find_partitions(tmp_path / "recovery").items()}  # fmt: skip
    assert layout == {0: "process-0", 1: "process-1", 2: "process-0", 3: "process-1"}
    assert tables(tmp_path) == one_process_tables


@pytest.mark.parametrize(
    ("args", "env", "message"),
    [
        (
            ["--process-id", "2", "--addresses", "127.0.0.1:2101,127.0.0.1:2102"],
            {},
            "--process-id 2 is out of range 0..1",
        ),
        (["--process-id", "0"], {}, "--process-id and --addresses go together"),
        (["--addresses", "127.0.0.1:2101"], {}, "--process-id and --addresses go together"),
        (["--process-id", "0", "--addresses", "host1"], {}, "'host1' is not host:port"),
        (["--process-id", "0", "--addresses", "127.0.0.1:0"], {}, "port 0, out of range"),
        (["--process-id", "0", "--addresses", "a:1,a:1"], {}, "names a:1 twice"),
        (
            ["--process-id", "0", "--addresses", "127.0.0.1:2101,127.0.0.1:2102", "--workers", "3"],
            {},
            "leave --workers out",
        ),
        (
            ["--process-id", "1", "--addresses", "127.0.0.1:2101,127.0.0.1:2102", "--fresh"],
            {},
            "give it to process 0 alone",
        ),
        (["--process-id", "0", "--addresses", "192.0.2.1:2101,127.0.0.1:2102"], {}, "cannot here"),
        (
            [],
            {
                "CENTFLOW_PIPELINE_PROCESS_ID": "3",
                "CENTFLOW_PIPELINE_ADDRESSES": "127.0.0.1:2101,127.0.0.1:2102",
            },
            "--process-id 3 is out of range 0..1",
        ),
    ],
)
def test_a_bad_cluster_flag_is_one_line_and_starts_nothing(tmp_path, args, env, message):
    clean = {k: v for k, v in os.environ.items() if not k.startswith("CENTFLOW_")}
    out = tmp_path / "out"
    result = subprocess.run(
        [sys.executable, "-m", "centflow", "run", "--replay", str(EDGE), "--out", str(out), *args],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        env={**clean, **env},
    )
    assert result.returncode == 2
    assert result.stderr.startswith("centflow: error:") and result.stderr.count("\n") == 1
    assert message in result.stderr and "Traceback" not in result.stderr
    assert not (out / "recovery").exists()


def _refused(out: Path, place: ClusterPlace | None, match: str) -> None:
    with pytest.raises(ConfigError, match=match), out_dir_lock(out, place=place):
        pass


def test_one_clusters_processes_share_the_directory_and_everything_else_is_refused(tmp_path):
    cluster = ("127.0.0.1:2101", "127.0.0.1:2102")
    zero, one = ClusterPlace(0, cluster), ClusterPlace(1, cluster)
    other = ClusterPlace(1, ("127.0.0.1:2201", "127.0.0.1:2202"))
    with out_dir_lock(tmp_path, place=zero), out_dir_lock(tmp_path, place=one):
        _refused(tmp_path, zero, "process 0 of this cluster already runs")
        _refused(tmp_path, other, "in use by another centflow cluster")
        _refused(tmp_path, None, r"in use by another centflow run \(a cluster: process 0")
    with out_dir_lock(tmp_path, place=other):  # once that cluster is gone, another may come
        _refused(tmp_path, None, "in use by another centflow run")
    with out_dir_lock(tmp_path):  # a one-host run refuses a cluster's process
        _refused(tmp_path, zero, "in use by another centflow run")


def _layout(recovery: Path) -> dict[int, str]:
    return {index: str(path.parent.relative_to(recovery)) for index, path in find_partitions(recovery).items()}  # fmt: skip


def test_recovery_partitions_are_shared_out_taken_over_on_a_rescale_and_gathered_back(tmp_path):
    three = ("h0:1", "h1:1", "h2:1")
    for index in range(3):
        prepare_recovery(tmp_path, ClusterPlace(index, three), init_recovery)
    assert _layout(tmp_path) == {0: "process-0", 1: "process-1", 2: "process-2", 3: "process-0"}
    # the same cluster again changes nothing
    prepare_recovery(tmp_path, ClusterPlace(2, three), init_recovery)
    assert _layout(tmp_path) == {0: "process-0", 1: "process-1", 2: "process-2", 3: "process-0"}
    # shrunk to two: process 0 takes partition 2 from the process that is gone
    two = ("h0:1", "h1:1")
    for index in range(2):
        prepare_recovery(tmp_path, ClusterPlace(index, two), init_recovery)
    assert _layout(tmp_path) == {0: "process-0", 1: "process-1", 2: "process-0", 3: "process-0"}
    # grown to four: nothing moves and nothing is created (the state is all there)
    four = ("h0:1", "h1:1", "h2:1", "h3:1")
    for index in range(4):
        prepare_recovery(tmp_path, ClusterPlace(index, four), init_recovery)
    assert _layout(tmp_path) == {0: "process-0", 1: "process-1", 2: "process-0", 3: "process-0"}
    # one host again: every partition back at the top
    gather_partitions(tmp_path)
    assert _layout(tmp_path) == {index: "." for index in range(4)}
    # a partition created once and gone is refused, never created anew
    (tmp_path / "part-1.sqlite3").unlink()
    with pytest.raises(ConfigError, match=r"partition 1 .* was created once and is nowhere now"):
        prepare_recovery(tmp_path, ClusterPlace(1, two), init_recovery)
    with pytest.raises(ConfigError, match=r"partitions \[1\] .* are nowhere now"):
        gather_partitions(tmp_path)


def test_the_cluster_comes_from_a_config_file_or_the_environment_and_shows_back(tmp_path):
    path = tmp_path / "cluster.toml"
    path.write_text('[pipeline]\nworkers = 1\nprocess_id = 1\naddresses = ["h1:2101", "h2:2101"]\n')
    from centflow.ops.cli import _cluster_place
    from centflow.ops.cli_config import effective

    loaded = load_file_config(path, {})
    assert _cluster_place(None, None, None, loaded.pipeline) == ClusterPlace(1, ("h1:2101", "h2:2101"))  # fmt: skip
    shown = tmp_path / "shown.toml"
    shown.write_text(tomli_w.dumps(effective(loaded)))
    again = load_file_config(shown, {}).pipeline
    assert (again.process_id, again.addresses) == (1, ["h1:2101", "h2:2101"])
    environ = {
        "CENTFLOW_PIPELINE_PROCESS_ID": "0",
        "CENTFLOW_PIPELINE_ADDRESSES": "h1:2101,h2:2101",
    }
    from_environment = load_file_config(path, environ).pipeline
    assert _cluster_place(None, None, None, from_environment) == ClusterPlace(0, ("h1:2101", "h2:2101"))  # fmt: skip
    with pytest.raises(ConfigError, match="leave --workers out"):
        _cluster_place(None, None, 3, loaded.pipeline)
