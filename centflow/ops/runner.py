"""Running the dataflow: worker processes, recovery state, and the load into DuckDB.

``centflow run`` starts one Bytewax process per worker (``python -m
bytewax.run dataflows.pipeline:flow``; worker threads in one process share one
interpreter lock, so parallelism comes from processes), all on loopback
addresses, with recovery on; or, given a `ClusterPlace` (``--process-id`` and
``--addresses``), the one process of a cluster spread over hosts that is this
host's (`centflow.ops.multihost` says what the hosts share). Everything a run
keeps lives in its output directory::

    DIR/recovery/        Bytewax recovery partitions (snapshots of every state);
                         a cluster's process I keeps its own in recovery/process-<I>/
    DIR/parquet/<table>/ the Parquet dataset, one writer per partition
    DIR/centflow.duckdb  the analyst tables, loaded from the dataset at the end
    DIR/status/          live progress of each input partition
    DIR/status/metrics/  each worker's counts of this execution (`centflow.ops.metrics`)
    DIR/logs/            each worker's output
    DIR/state.json       what this state belongs to (input, windows, shards)
    DIR/.centflow.lock   held by the run using DIR (`out_dir_lock`): one run at a time
                         (shared by the processes of one cluster, `multihost.cluster_lock`)
    DIR/cluster/         each cluster process's report of its state (`multihost.ClusterMarkers`)
    DIR/stop.request     written on SIGTERM/SIGINT: the workers stop at an epoch's end

Owner only. Everything a run writes under DIR is created with the umask
`OUTPUT_UMASK_DEFAULT` (077: directories 0700, files 0600; ``--umask 027``
lets a group read), set while `out_dir_lock` is held and inherited by the
worker processes, and DIR itself is made 0700 (less the umask's bits), so even
a file made earlier with looser bits cannot be reached through it by others.

Stopping. SIGTERM or SIGINT (Ctrl-C) to ``centflow run`` stops the workers at
the end of an epoch, after a last snapshot and with the sinks flushed
(`centflow.ops.lifecycle` says how); `run_workers` then returns normally,
with `RunStats.stopped_by` naming the signal. A second signal, or a stop that
outlasts `centflow.ops.lifecycle.STOP_GRACE_S`, kills the workers and raises
`RunInterrupted`.

Broker outages. The workers wait for a Kafka broker that stops answering
(a paused or restarting broker, a network cut) and carry on when it is back;
a `BrokerWatch` bounds the wait: after ``broker_timeout_s`` without an answer
the workers are stopped and `run_workers` raises TransientError, the state
kept as of the last snapshot, for the same command to resume.

Rerunning the same command after a crash or a kill resumes from the last
snapshot: the sources seek back, state is restored, and the output produced
after the snapshot is produced again, which the idempotent sinks absorb. A
command whose settings would change the meaning of the saved state (another
input, window length, lateness...) is refused with a one-line message.
"""

from __future__ import annotations

import fcntl
import os
import select
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, nullcontext
from pathlib import Path

import msgspec

from centflow.config import PipelineConfig, to_environment, validate
from centflow.errors import ConfigError, TerminalError
from centflow.limits import (
    RECOVERY_PARTITION_COUNT,
    SHARD_COUNT,
    WORKERS_MAX,
    WRITER_PARTITION_COUNT,
)
from centflow.ops.broker import free_loopback_port
from centflow.ops.cluster import PEERS_ENV
from centflow.ops.kafka import BROKER_TIMEOUT_S_DEFAULT, BrokerWatch
from centflow.ops.lifecycle import (
    EXIT_CODE_BY_SIGNAL,
    STOP_FILE,
    STOP_GRACE_S,
    STOP_SIGNALS,
    RunInterrupted,
    clear_stop,
    ignore_stop_signals,
    request_stop,
)
from centflow.ops.metrics import METRICS_FILE_ENV, clear_counts
from centflow.ops.multihost import (
    MARKERS_DIR,
    ClusterMarkers,
    ClusterPlace,
    cluster_lock,
    directory_guard,
    gather_partitions,
    live_processes,
    prepare_recovery,
)

SNAPSHOT_S_DEFAULT = 10  # long epochs: each epoch change drains the pipeline once
POLL_S = 0.1
STOP_TIMEOUT_S = 10.0
STATE_FILE = "state.json"
OUTPUT_UMASK_DEFAULT = 0o077  # owner only: directories 0700, files 0600
KEPT_NAMES = (
    "recovery",
    "parquet",
    "centflow.duckdb",
    "centflow.duckdb.wal",
    "status",
    "logs",
    MARKERS_DIR,
    STATE_FILE,
)


class StateIdentity(msgspec.Struct, frozen=True):
    """What saved state means; a resume must match it exactly."""

    input: str
    partitions: tuple[str, ...]
    window_length_s: int
    lateness_s: int
    dedupe_horizon_s: int
    future_skew_s: int
    shard_count: int
    writer_partition_count: int
    # The layout of the recovery state; files written before it was recorded are 1.
    state_format: int = 1


#: 2: admission snapshots as an id list and a list of facts (2026-12-05).
#: 3: the risk stages (payee context, payer scoring) and settlement hearing from them.
#: 4: reversals held until every partition passes them.
#: 5: split parties' carries; settlement_batches with FX columns, and settlement_fx.
#: 6: settlement hears from the review input and holds events in review.
#: 7: payee risk state counts refunds.
#: 8: payer features in their own step; one decision step (one model) for all payers.
#: 9: packed payer and spending state; held feature rows in chunks; snapshots compressed.
STATE_FORMAT = 9


def state_identity(config: PipelineConfig) -> StateIdentity:
    """The identity of the state a run with `config` builds."""
    if config.replay_path is not None:
        source = f"replay:{Path(config.replay_path).resolve()}"
    else:
        kafka = config.kafka or {}
        source = f"kafka:{kafka.get('bootstrap.servers')}/{config.topics.payments}"
    return StateIdentity(
        source,
        config.partitions,
        config.window_length_s,
        config.lateness_s,
        config.dedupe_horizon_s,
        config.future_skew_s,
        SHARD_COUNT,
        WRITER_PARTITION_COUNT,
        STATE_FORMAT,
    )


LOCK_FILE = ".centflow.lock"


@contextmanager
def out_dir_lock(
    out_dir: Path, umask: int = OUTPUT_UMASK_DEFAULT, place: ClusterPlace | None = None
) -> Iterator[None]:
    """Hold `out_dir` for one run: a second run into the same directory is refused
    in one line instead of mixing its state, files and counts with the first's.

    While it is held, this process's umask is `umask` (the workers inherit it)
    and `out_dir`, if centflow made it, is chmod-ed to 0777 less the umask:
    outputs are owner-only unless the umask says otherwise. The previous umask
    is restored on exit.

    An advisory lock (``flock``) on ``DIR/.centflow.lock``, held from before
    ``--fresh`` clears anything to after the report: the kernel drops it when the
    holder exits, however it exits, so a crash never leaves the directory locked.
    The file is never removed (``--fresh`` leaves it alone): a run that removed it
    while another waited could let two runs hold two different files.

    Given `place`, the process of a cluster holds the directory with the cluster's
    other processes and against everything else (`centflow.ops.multihost.cluster_lock`).
    """
    if out_dir.exists() and not out_dir.is_dir():
        raise ConfigError(f"--out {out_dir} is a file, not a directory")
    if not 0 <= umask <= 0o777:
        raise ConfigError(f"--umask {umask:o} is not an octal file-mode mask like 077")
    previous_umask = os.umask(umask)
    try:
        with _locked(out_dir, umask, place):
            yield
    finally:
        os.umask(previous_umask)


@contextmanager
def _locked(out_dir: Path, umask: int, place: ClusterPlace | None = None) -> Iterator[None]:
    try:
        ours = not out_dir.exists() or (out_dir / LOCK_FILE).exists()
        out_dir.mkdir(parents=True, exist_ok=True)
        if ours:  # a directory centflow made; another (``--out .``) keeps its mode
            out_dir.chmod(0o777 & ~umask)
        handle = (out_dir / LOCK_FILE).open("a+")
    except OSError as error:
        raise ConfigError(f"cannot use {out_dir} as --out: {error.strerror or error}") from None
    if place is not None:
        handle.close()
        with cluster_lock(out_dir, place, LOCK_FILE):
            yield
        return
    with handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            holder = handle.read().strip() or "another process"
            cluster = live_processes(out_dir)
            if cluster:
                index, who = next(iter(cluster.items()))
                holder = f"a cluster: process {index}, {who}"
            raise ConfigError(
                f"{out_dir} is in use by another centflow run ({holder}); "
                "wait for it to end, or use another --out"
            ) from None
        handle.seek(0)
        handle.truncate()
        handle.write(f"pid {os.getpid()}\n")
        handle.flush()
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def clear_state(out_dir: Path) -> None:
    """Remove what a run keeps in `out_dir` (``--fresh``); other files are left alone."""
    for name in KEPT_NAMES:
        path = out_dir / name
        if path.is_dir():
            shutil.rmtree(path)
        elif path.exists():
            path.unlink()


def prepare_state(config: PipelineConfig, place: ClusterPlace | None = None) -> Path:
    """Create or check the output directory and recovery partitions; return the recovery
    directory (of this process, for a cluster's: `centflow.ops.multihost.prepare_recovery`)."""
    from dataflows.recovery import init_recovery

    out_dir = Path(config.out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    identity = state_identity(config)
    state_file = out_dir / STATE_FILE
    recovery = out_dir / "recovery"
    if place is not None:
        with directory_guard(out_dir):  # the processes starting together, one at a time
            _check_identity(state_file, identity, out_dir)
            recovery.mkdir(exist_ok=True)
            own = prepare_recovery(recovery, place, init_recovery)
            if not state_file.exists():
                _write_atomically(state_file, msgspec.json.encode(identity))
        return own
    _check_identity(state_file, identity, out_dir)
    if not recovery.exists():
        recovery.mkdir()
        init_recovery(recovery, RECOVERY_PARTITION_COUNT)
        state_file.write_bytes(msgspec.json.encode(identity))
    else:
        gather_partitions(recovery)  # a cluster's state, run on one host now
    return recovery


def _write_atomically(path: Path, data: bytes) -> None:
    temporary = path.with_name(path.name + ".tmp")
    temporary.write_bytes(data)
    os.replace(temporary, path)


def _check_identity(state_file: Path, identity: StateIdentity, out_dir: Path) -> None:
    """A ConfigError if `state_file` records the state of another run."""
    if state_file.exists():
        saved = msgspec.json.decode(state_file.read_bytes(), type=StateIdentity)
        if saved != identity:
            differences = [
                f"{field}: {getattr(saved, field)!r} → {getattr(identity, field)!r}"
                for field in identity.__struct_fields__
                if getattr(saved, field) != getattr(identity, field)
            ]
            raise ConfigError(
                f"{out_dir} holds the state of a different run ({'; '.join(differences)}); "
                "use another --out, or --fresh to start over"
            )


class WorkerLaunch(msgspec.Struct, frozen=True):
    """How to start one worker process: its command line and its extra environment."""

    command: list[str]
    environment: dict[str, str]


def worker_launches(
    recovery: Path, workers: int, snapshot_s: int, place: ClusterPlace | None = None
) -> list[WorkerLaunch]:
    """The command line and environment of each worker process (`centflow.ops.cluster`
    says why a worker learns the addresses of the workers numbered below it); for a
    cluster's process, its one worker, told its id and every process's address (its
    peers are on other hosts: it waits for them with Bytewax's own retries)."""
    base = [
        sys.executable,
        "-m",
        "bytewax.run",
        "dataflows.pipeline:flow",
        "-r",
        str(recovery),
        "-s",
        str(snapshot_s),
        "-b",
        "0",
    ]
    if place is not None:
        cluster = ";".join(place.addresses)
        return [WorkerLaunch([*base, "-i", str(place.process_id), "-a", cluster], {})]
    if workers == 1:
        return [WorkerLaunch(base, {})]
    addresses = [f"127.0.0.1:{free_loopback_port()}" for _ in range(workers)]
    return [
        WorkerLaunch(
            [*base, "-i", str(index), "-a", ";".join(addresses)],
            {PEERS_ENV: ";".join(addresses[:index])},
        )
        for index in range(workers)
    ]


def _last_error_line(log: Path) -> str:
    """The line of a worker's log that says best why it failed: the message of a
    centflow error if it raised one (Bytewax wraps it in its own), else the last
    line that names an error."""
    lines = [line for line in log.read_text(errors="replace").splitlines() if line.strip()]
    for line in reversed(lines):
        if line.startswith("centflow.errors.") and ": " in line:
            return line.partition(": ")[2].strip()[:300]
    for line in reversed(lines):
        if "Error" in line or "error" in line or "Exception" in line:
            return line.strip()[:300]
    return lines[-1].strip()[:300] if lines else "no output"


class RunStats(msgspec.Struct):
    """What a run of the workers measured; `stopped_by` names the signal that
    stopped it cleanly (None: the input ended, or the stream went idle)."""

    seconds: float = 0.0
    peak_rss_bytes: list[int] = msgspec.field(default_factory=list)
    stopped_by: str | None = None


def _peak_rss_bytes(pid: int) -> int:
    """The high-water mark of a live process's resident memory (Linux; 0 elsewhere)."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return 0


def check_run(
    config: PipelineConfig, workers: int, snapshot_s: int, place: ClusterPlace | None = None
) -> Path:
    """Check a run's settings and prepare its state; return the recovery directory."""
    validate(config)
    if not 1 <= workers <= WORKERS_MAX:
        raise ConfigError(f"--workers {workers} is out of range 1..{WORKERS_MAX}")
    if not 1 <= snapshot_s <= 3600:
        raise ConfigError(f"--snapshot-s {snapshot_s} is out of range 1..3600 (whole seconds)")
    return prepare_state(config, place)


def run_workers(
    config: PipelineConfig,
    workers: int = 1,
    snapshot_s: int = SNAPSHOT_S_DEFAULT,
    on_tick: Callable[[], None] | None = None,
    broker_timeout_s: float | None = None,
    place: ClusterPlace | None = None,
) -> RunStats:
    """Run the dataflow to its end in `workers` processes; return what was measured.

    Given `place`, run this host's one process of a cluster of `workers` (one per
    address): it reports its end in the shared directory, and process 0 returns only
    once every process has (`ClusterMarkers`), so that the tables it loads are whole.

    A Kafka run whose cluster answers nothing for `broker_timeout_s` (`BrokerWatch`;
    None: `BROKER_TIMEOUT_S_DEFAULT`) stops its workers and raises TransientError;
    the last snapshot is kept."""
    recovery = check_run(config, workers, snapshot_s, place)
    out_dir = Path(config.out_dir)
    logs = out_dir / "logs"
    logs.mkdir(exist_ok=True)
    clear_stop(out_dir)
    first = 0 if place is None else place.process_id
    local = workers if place is None else 1  # worker processes on this host
    # counters count this execution only (a cluster's process clears its own)
    counts = clear_counts(out_dir, None if place is None else f"worker-{first}.json")
    markers = None if place is None else ClusterMarkers(out_dir, place)
    if markers is not None:
        markers.start()
    environment = {**os.environ, **to_environment(config), "PYTHONHASHSEED": "0"}
    started_s = time.monotonic()
    processes: list[tuple[subprocess.Popen[bytes], Path]] = []
    stats = RunStats(peak_rss_bytes=[0] * local)

    stop = _StopRequests(out_dir)
    watch = (
        BrokerWatch(
            config.kafka,
            config.topics.payments,
            BROKER_TIMEOUT_S_DEFAULT if broker_timeout_s is None else broker_timeout_s,
            out_dir,
        )
        if config.kafka is not None
        else None
    )

    def tick() -> None:
        if watch is not None:
            watch.check()
        stop.check(processes)
        if stop.signal is not None:
            stats.stopped_by = stop.signal.name
        for index, (process, _) in enumerate(processes):
            stats.peak_rss_bytes[index] = max(
                stats.peak_rss_bytes[index], _peak_rss_bytes(process.pid)
            )
        if on_tick is not None:
            on_tick()

    # from before the first worker starts to after the last ends
    with stop.handling(), watch or nullcontext():
        try:
            launches = worker_launches(recovery, local, snapshot_s, place)
            for index, launch in enumerate(launches, start=first):
                log = logs / f"worker-{index}.log"
                metrics_file = str(counts / f"worker-{index}.json")
                processes.append((_start_worker(launch, log, environment, metrics_file), log))
            try:
                _wait(processes, tick, first)
            except TerminalError as failure:  # a worker's, perhaps for want of a broker
                if watch is not None:
                    watch.blame(failure)
                raise
            tick()
            if markers is not None:
                _end_of_cluster_process(markers, out_dir, stats, tick)
        except BaseException as error:
            if markers is not None:
                interrupted = isinstance(error, (RunInterrupted, KeyboardInterrupt))
                markers.report("interrupted" if interrupted else "failed", str(error)[:500])
            raise
        finally:
            _stop(processes)
    stats.seconds = time.monotonic() - started_s
    return stats


def _start_worker(
    launch: WorkerLaunch, log: Path, environment: dict[str, str], metrics_file: str
) -> subprocess.Popen[bytes]:
    with log.open("wb") as stream:
        return subprocess.Popen(
            launch.command,
            stdout=stream,
            stderr=subprocess.STDOUT,
            env={**environment, **launch.environment, METRICS_FILE_ENV: metrics_file},
            preexec_fn=ignore_stop_signals,  # until the worker handles them
        )


def _end_of_cluster_process(
    markers: ClusterMarkers, out_dir: Path, stats: RunStats, tick: Callable[[], None]
) -> None:
    """A cluster's process whose worker ended well: report it; process 0 then waits for
    the others' reports. A stop asked of another process (its request is in the shared
    directory) counts as this one's stop."""
    if stats.stopped_by is None and (out_dir / STOP_FILE).exists():
        stats.stopped_by = "a stop request"
    markers.report("finished" if stats.stopped_by is None else "stopped")
    if markers.place.process_id != 0:
        return
    others = markers.wait_for_the_others(tick)
    if stats.stopped_by is None and any(marker.status == "stopped" for marker in others):
        stats.stopped_by = "a stop request"


class _StopRequests:
    """The runner's side of a clean stop: SIGINT and SIGTERM while the workers run.

    The first signal asks the workers to stop (`request_stop`); a second one, or
    a stop still unfinished after `STOP_GRACE_S`, kills them and raises
    `RunInterrupted`. Signal handlers belong to the main thread: elsewhere (a
    benchmark runs the workers from a thread) signals keep their usual effect.
    """

    def __init__(self, out_dir: Path) -> None:
        self._out_dir = out_dir
        self.signal: signal.Signals | None = None
        self._signals_seen = 0
        self._deadline_s = 0.0

    def _on_signal(self, number: int, _frame: object) -> None:
        self._signals_seen += 1
        if self.signal is None:
            self.signal = signal.Signals(number)
            self._deadline_s = time.monotonic() + STOP_GRACE_S
            request_stop(self._out_dir)

    @contextmanager
    def handling(self) -> Iterator[None]:
        if threading.current_thread() is not threading.main_thread():
            yield
            return
        previous = {number: signal.signal(number, self._on_signal) for number in STOP_SIGNALS}
        try:
            yield
        finally:
            for number, handler in previous.items():
                signal.signal(number, handler)

    def check(self, processes: list[tuple[subprocess.Popen[bytes], Path]]) -> None:
        """Kill the workers and raise `RunInterrupted` if the stop may wait no longer."""
        if self.signal is None:
            return
        again = self._signals_seen > 1
        if not again and time.monotonic() < self._deadline_s:
            return
        for process, _ in processes:
            if process.poll() is None:
                process.kill()
        for process, _ in processes:
            process.wait()
        why = "a second signal" if again else f"the stop took over {STOP_GRACE_S:g} s"
        raise RunInterrupted(
            f"workers killed before their last snapshot ({why}); the state is kept in "
            f"{self._out_dir}: run the same command again to resume from the last snapshot",
            EXIT_CODE_BY_SIGNAL[self.signal],
        )


def _wait(
    processes: list[tuple[subprocess.Popen[bytes], Path]],
    on_tick: Callable[[], None] | None,
    first: int = 0,
) -> None:
    while True:
        codes = [process.poll() for process, _ in processes]
        for (process, log), code in zip(processes, codes, strict=True):
            if code not in (None, 0):
                raise TerminalError(
                    f"worker {first + processes.index((process, log))} failed (exit {code}): {_last_error_line(log)} (full log: {log})"
                )
        if all(code == 0 for code in codes):
            return
        if on_tick is not None:
            on_tick()
        _pause(processes, POLL_S)


def _pause(processes: list[tuple[subprocess.Popen[bytes], Path]], seconds: float) -> None:
    """Sleep up to `seconds`, waking the moment a worker exits (a run ends when its
    last worker does, not up to a poll interval later). Linux pidfds; elsewhere a sleep."""
    descriptors: list[int] = []
    try:
        for process, _ in processes:
            if process.poll() is None:
                descriptors.append(os.pidfd_open(process.pid))
        if descriptors:
            select.select(descriptors, [], [], seconds)
    except (AttributeError, OSError):  # no pidfd_open here (not Linux, or an old kernel)
        time.sleep(seconds)
    finally:
        for descriptor in descriptors:
            os.close(descriptor)


def _stop(processes: list[tuple[subprocess.Popen[bytes], Path]]) -> None:
    for process, _ in processes:
        if process.poll() is None:
            process.send_signal(signal.SIGINT)
    deadline = time.monotonic() + STOP_TIMEOUT_S
    for process, _ in processes:
        try:
            process.wait(max(deadline - time.monotonic(), 0.1))
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


__all__ = [
    "check_run",
    "clear_state",
    "out_dir_lock",
    "prepare_state",
    "run_workers",
    "state_identity",
    "worker_launches",
]
