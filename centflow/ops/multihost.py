"""One cluster over several hosts: ``centflow run --process-id I --addresses A,B,...``.

Each host runs one ``centflow run`` with the same flags but its own
``--process-id``; each starts one Bytewax worker process (``-i I -a A;B;...``),
and together they are one dataflow: Bytewax spreads the input partitions and
the keyed state over them, exactly as over the processes of ``--workers N`` on
one host. This module owns what the hosts share and how they keep out of each
other's way; it never imports Bytewax.

**One shared ``--out``.** Every process is given the same ``--out``, one
directory shared by the hosts (NFS, CephFS, EFS ...): each process writes its
Parquet files into ``DIR/parquet/`` (file names carry the writer, so they
never collide), its input partitions' progress into ``DIR/status/``, its
output into ``DIR/logs/worker-<I>.log``; and process 0, once every process
has reported its end (`ClusterMarkers`), loads ``DIR/centflow.duckdb`` from
the whole dataset and prints the report. The others exit once their worker
has, and say so. Without a shared directory process 0 would load a part of the
dataset; it waits `END_WAIT_S` for the others' end reports in the directory,
then fails in one line that says so.

**Recovery partitions, one directory per process.** Bytewax opens every
``*.sqlite3`` file in its ``-r`` directory and needs only that the cluster, all
processes together, holds every partition once. Process I uses
``DIR/recovery/process-<I>/``: a partition file is only ever opened by the host
of its process, so SQLite is never shared between hosts (its WAL mode cannot
be), and a partition's place says which process holds it. On a fresh state
process I creates the partitions ``p`` with ``p % N == I`` (N processes;
`RECOVERY_PARTITION_COUNT` in all, recorded in ``DIR/recovery/partitions.json``
as they are created, so one never created and one lost are told apart).
`prepare_recovery` runs as each process starts, holding the directory guard:
it moves into its own directory its partitions lying where no process of this
cluster looks (the top of ``DIR/recovery/``, where a one-host run keeps them,
or the directory of a process numbered N or above, after the cluster shrank),
creates its partitions never created, and refuses in one line a partition
created once and now found nowhere. A partition in the directory of another
process of the cluster stays there (that process may already have opened it).

**The lock.** A one-host run holds ``DIR/.centflow.lock`` exclusively; a
cluster process holds it shared, plus ``DIR/.centflow.process-<I>.lock``
exclusively, and the cluster's addresses are written in ``DIR/.centflow.cluster``.
So the processes of one cluster share the directory, while a one-host run, a
second process I, and a process of another cluster (other addresses) are each
refused in one line. The checks are made under ``DIR/.centflow.guard``, held
for a moment only, so two processes starting together cannot both pass them.

**Stopping.** SIGTERM or Ctrl-C to any process's ``centflow run`` writes the
stop request into the shared directory: every process's input partitions stop
at the end of the epoch, the cluster takes its last snapshot and each process
exits 0, and the same commands resume. (A process that starts after the
request clears it, as any new run does.)
"""

from __future__ import annotations

import fcntl
import ipaddress
import os
import re
import shutil
import socket
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import IO

import msgspec

from centflow.errors import ConfigError, TerminalError, invariant
from centflow.limits import RECOVERY_PARTITION_COUNT, WORKERS_MAX

GUARD_FILE = ".centflow.guard"
CLUSTER_FILE = ".centflow.cluster"
PROCESS_LOCK_PATTERN = re.compile(r"\.centflow\.process-(\d+)\.lock")
MARKERS_DIR = "cluster"
PARTITIONS_RECORD = "partitions.json"
PART_FILE_PATTERN = re.compile(r"part-(\d+)\.sqlite3")
GUARD_WAIT_S = 10.0
GUARD_POLL_S = 0.01
END_WAIT_S = 120.0
END_POLL_S = 0.1
PORT_MAX = 65_535
HOST_LENGTH_MAX = 253
_HOSTNAME = re.compile(r"[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?(\.[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*")  # fmt: skip
ENDED = ("finished", "stopped")
FAILED = ("failed", "interrupted")


class ClusterPlace(msgspec.Struct, frozen=True):
    """This process's place in a cluster: its id and every process's address, in order."""

    process_id: int
    addresses: tuple[str, ...]

    @property
    def process_count(self) -> int:
        return len(self.addresses)

    @property
    def identity(self) -> str:
        """What names the cluster: its addresses, in process order."""
        return ",".join(self.addresses)


def _check_address(text: str) -> str:
    """One ``host:port``: a hostname, an IPv4 address or a bracketed IPv6 one, a port 1-65535.

    >>> _check_address("host1:2101"), _check_address("[::1]:2101")
    ('host1:2101', '[::1]:2101')
    """
    host, colon, port = text.rpartition(":")
    if not colon or not host or not port.isascii() or not port.isdigit():
        raise ConfigError(f"--addresses: {text!r} is not host:port (e.g. host1:2101)")
    if not 1 <= int(port) <= PORT_MAX:
        raise ConfigError(f"--addresses: {text!r} has port {port}, out of range 1..{PORT_MAX}")
    if host.startswith("[") and host.endswith("]"):
        try:
            ipaddress.IPv6Address(host[1:-1])
        except ValueError:
            raise ConfigError(f"--addresses: {text!r} has no valid IPv6 address in []") from None
    elif len(host) > HOST_LENGTH_MAX or _HOSTNAME.fullmatch(host) is None:
        raise ConfigError(
            f"--addresses: {text!r} has no valid host (a name or IPv4 address; IPv6 in [])"
        )
    return text


def parse_addresses(value: str | list[str] | tuple[str, ...]) -> tuple[str, ...]:
    """Every process's ``host:port``, from ``a,b`` (a flag, an environment variable) or a list.

    >>> parse_addresses("host1:2101, host2:2101")
    ('host1:2101', 'host2:2101')
    """
    items = value.split(",") if isinstance(value, str) else list(value)
    addresses = tuple(_check_address(item.strip()) for item in items if item.strip())
    if not addresses:
        raise ConfigError("--addresses is empty: give host:port of every process, comma-separated")
    if len(addresses) > WORKERS_MAX:
        raise ConfigError(
            f"--addresses names {len(addresses)} processes, over {WORKERS_MAX} (the state's shards)"
        )
    repeated = sorted({address for address in addresses if addresses.count(address) > 1})
    if repeated:
        raise ConfigError(f"--addresses names {repeated[0]} twice: each process needs its own")
    return addresses


def cluster_place(process_id: int | None, addresses: str | list[str] | None) -> ClusterPlace | None:
    """The place given by --process-id and --addresses (None: neither, a one-host run)."""
    if process_id is None and addresses is None:
        return None
    if process_id is None or addresses is None:
        raise ConfigError(
            "--process-id and --addresses go together: the process's id (0, 1, ...) and "
            "host:port of every process of the cluster"
        )
    listed = parse_addresses(addresses)
    if not 0 <= process_id < len(listed):
        raise ConfigError(
            f"--process-id {process_id} is out of range 0..{len(listed) - 1} "
            f"(--addresses names {len(listed)} processes)"
        )
    place = ClusterPlace(process_id, listed)
    invariant(place.process_count == len(listed), "the place lost an address")
    return place


def check_bindable(place: ClusterPlace) -> None:
    """One line now if this process cannot listen on its own address (Bytewax would fail
    later, in a worker's log): a name that is not this host's, or a port in use."""
    address = place.addresses[place.process_id]
    host, _, port = address.rpartition(":")
    host = host.strip("[]")
    try:
        infos = socket.getaddrinfo(host, int(port), type=socket.SOCK_STREAM)
    except socket.gaierror as error:
        raise ConfigError(f"--addresses: cannot resolve {address} ({error.strerror})") from None
    family, kind, protocol, _, where = infos[0]
    with socket.socket(family, kind, protocol) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind(where)
        except OSError as error:
            raise ConfigError(
                f"--process-id {place.process_id} listens on {address}, but cannot here "
                f"({error.strerror}): give this host's own address at that place in --addresses"
            ) from None


# -- the lock -------------------------------------------------------------------------------


@contextmanager
def directory_guard(out_dir: Path) -> Iterator[None]:
    """Hold ``DIR/.centflow.guard`` for a moment: the checks of processes starting together
    happen one after another. Waits at most `GUARD_WAIT_S`."""
    handle = (out_dir / GUARD_FILE).open("a+")
    with handle:
        deadline_s = time.monotonic() + GUARD_WAIT_S
        while True:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > deadline_s:
                    raise ConfigError(
                        f"{out_dir / GUARD_FILE} stayed locked for {GUARD_WAIT_S:g} s"
                    ) from None
                time.sleep(GUARD_POLL_S)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _held(path: Path) -> str | None:
    """Who holds `path` locked (its text), or None if nobody does."""
    try:
        handle = path.open("r")
    except FileNotFoundError:
        return None
    with handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return handle.read().strip() or "another process"
        fcntl.flock(handle, fcntl.LOCK_UN)
    return None


def live_processes(out_dir: Path, besides: int | None = None) -> dict[int, str]:
    """The cluster processes holding `out_dir` now: id -> who (their lock file's text)."""
    live = {}
    for path in sorted(out_dir.glob(".centflow.process-*.lock")):
        found = PROCESS_LOCK_PATTERN.fullmatch(path.name)
        if found is None or int(found.group(1)) == besides:
            continue
        holder = _held(path)
        if holder is not None:
            live[int(found.group(1))] = holder
    return live


def _lock(path: Path, kind: int, refusal: Callable[[str], str]) -> IO[str]:
    """`path` opened and flock-ed with `kind` (non-blocking), or a ConfigError of `refusal`."""
    handle = path.open("a+")
    try:
        fcntl.flock(handle, kind | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.seek(0)
        holder = handle.read().strip() or "another process"
        handle.close()
        raise ConfigError(refusal(holder)) from None
    return handle


@contextmanager
def cluster_lock(out_dir: Path, place: ClusterPlace, lock_file: str) -> Iterator[None]:
    """Hold `out_dir` as process ``place.process_id`` of the cluster `place` names: shared
    with the other processes of that cluster, refused to anything else (see the module)."""
    with ExitStack() as held, directory_guard(out_dir):
        others = live_processes(out_dir, besides=place.process_id)
        cluster_file = out_dir / CLUSTER_FILE
        recorded = cluster_file.read_text().strip() if cluster_file.exists() else ""
        if others and recorded != place.identity:
            index, holder = next(iter(others.items()))
            raise ConfigError(
                f"{out_dir} is in use by another centflow cluster ({recorded or 'unknown'}; "
                f"its process {index}: {holder}); wait for it to end, or use another --out"
            )
        mine = out_dir / f".centflow.process-{place.process_id}.lock"
        handle = held.enter_context(
            _lock(
                mine,
                fcntl.LOCK_EX,
                lambda holder: (
                    f"process {place.process_id} of this cluster already runs on "
                    f"{out_dir} ({holder}); each process needs its own --process-id"
                ),
            )
        )
        held.enter_context(
            _lock(
                out_dir / lock_file,
                fcntl.LOCK_SH,
                lambda holder: (
                    f"{out_dir} is in use by another centflow run ({holder}); "
                    "wait for it to end, or use another --out"
                ),
            )
        )
        handle.seek(0)
        handle.truncate()
        handle.write(
            f"process {place.process_id} of {place.process_count} ({place.identity}), "
            f"pid {os.getpid()} on {socket.gethostname()}\n"
        )
        handle.flush()
        temporary = cluster_file.with_name(cluster_file.name + ".tmp")
        temporary.write_text(place.identity + "\n")
        os.replace(temporary, cluster_file)
        guarded = held.pop_all()
    with guarded:
        yield


# -- recovery partitions ----------------------------------------------------------------------


def process_recovery_dir(recovery: Path, process_id: int) -> Path:
    """Where process `process_id` keeps its recovery partitions."""
    return recovery / f"process-{process_id}"


def find_partitions(recovery: Path) -> dict[int, Path]:
    """Every recovery partition under `recovery` (its top and ``process-*/``): index -> file."""
    found: dict[int, Path] = {}
    places = [recovery, *sorted(recovery.glob("process-*"))]
    for directory in places:
        for path in sorted(directory.glob("part-*.sqlite3")):
            match = PART_FILE_PATTERN.fullmatch(path.name)
            if match is None:
                continue
            index = int(match.group(1))
            if index in found:
                raise ConfigError(
                    f"recovery partition {index} is in two places, {found[index]} and {path}: "
                    "keep the newer (the one its process last used) and remove the other"
                )
            found[index] = path
    return found


def move_partition(path: Path, directory: Path) -> None:
    """Move a partition file and its SQLite companions (``-wal``, ``-shm``) into `directory`."""
    directory.mkdir(parents=True, exist_ok=True)
    for companion in sorted(path.parent.glob(path.name + "*")):
        os.replace(companion, directory / companion.name)
    invariant((directory / path.name).exists(), "partition %s was not moved", path.name)


class PartitionsRecord(msgspec.Struct, frozen=True):
    """``DIR/recovery/partitions.json``: the partitions ever created in this state."""

    count: int
    created: list[int]


def _created(recovery: Path, found: dict[int, Path]) -> set[int]:
    record = recovery / PARTITIONS_RECORD
    if not record.exists():
        return set(found)
    try:
        created = msgspec.json.decode(record.read_bytes(), type=PartitionsRecord).created
    except msgspec.DecodeError as error:
        raise ConfigError(f"{record} is damaged ({error}): restore it, or --fresh") from None
    return set(created) | set(found)


def _record_created(recovery: Path, created: set[int]) -> None:
    record = recovery / PARTITIONS_RECORD
    temporary = record.with_name(record.name + ".tmp")
    temporary.write_bytes(
        msgspec.json.encode(PartitionsRecord(RECOVERY_PARTITION_COUNT, sorted(created)))
    )
    os.replace(temporary, record)


def prepare_recovery(
    recovery: Path, place: ClusterPlace, init: Callable[[Path, int], None]
) -> Path:
    """Make `place`'s recovery directory hold its partitions (see the module); return it.

    Call it holding `directory_guard`. `init(directory, count)` creates `count` empty
    partitions in `directory` (Bytewax's ``init_db_dir``)."""
    own = process_recovery_dir(recovery, place.process_id)
    own.mkdir(parents=True, exist_ok=True)
    found = find_partitions(recovery)
    created = _created(recovery, found)
    mine = [p for p in range(RECOVERY_PARTITION_COUNT) if p % place.process_count == place.process_id]  # fmt: skip
    members = {process_recovery_dir(recovery, index) for index in range(place.process_count)}
    lost = sorted(p for p in mine if p in created and p not in found)
    if lost:
        raise ConfigError(
            f"recovery partition{'s' if len(lost) > 1 else ''} {', '.join(map(str, lost))} of "
            f"{recovery} {'were' if len(lost) > 1 else 'was'} created once and {'are' if len(lost) > 1 else 'is'} "
            "nowhere now: put back the part-<n>.sqlite3 files from the host or backup that has them, "
            "or start over with --fresh"
        )
    for index in mine:
        if index in found and found[index].parent not in members:
            move_partition(found[index], own)  # a one-host layout, or a process no longer here
    new = [p for p in mine if p not in created]
    if new:
        staging = recovery / f".new-{place.process_id}"
        shutil.rmtree(staging, ignore_errors=True)
        staging.mkdir()
        init(staging, RECOVERY_PARTITION_COUNT)
        for index in new:
            move_partition(staging / f"part-{index}.sqlite3", own)
        shutil.rmtree(staging)
        _record_created(recovery, created | set(new))
    invariant(
        all(p in find_partitions(recovery) for p in mine), "a partition of this process is missing"
    )
    return own


def gather_partitions(recovery: Path) -> None:
    """For a one-host run: every partition back at the top of `recovery`, from the
    ``process-*/`` directories of a cluster that used it (no process of it may run)."""
    for index, path in find_partitions(recovery).items():
        if path.parent != recovery:
            move_partition(path, recovery)
            invariant((recovery / f"part-{index}.sqlite3").exists(), "partition not gathered")
    for directory in recovery.glob("process-*"):
        if directory.is_dir() and not any(directory.iterdir()):
            directory.rmdir()
    found = find_partitions(recovery)
    lost = sorted(_created(recovery, found) - set(found))
    if lost:
        raise ConfigError(
            f"recovery partitions {lost} of {recovery} were created once and are nowhere now: "
            "put back their part-<n>.sqlite3 files from the hosts of the cluster that ran here, "
            "or start over with --fresh"
        )


# -- the end of a run -------------------------------------------------------------------------


class Marker(msgspec.Struct, frozen=True):
    """What one process says of itself in ``DIR/cluster/process-<I>.json``."""

    process_id: int
    status: str  # running, finished, stopped, failed, interrupted
    host: str
    pid: int
    detail: str = ""


class ClusterMarkers:
    """The processes' reports of their state, in the shared directory (see the module)."""

    def __init__(self, out_dir: Path, place: ClusterPlace) -> None:
        self._directory = out_dir / MARKERS_DIR
        self._place = place

    @property
    def place(self) -> ClusterPlace:
        return self._place

    def _path(self, process_id: int) -> Path:
        return self._directory / f"process-{process_id}.json"

    def start(self) -> None:
        """This process runs. Process 0 also forgets every earlier report: no process can
        end this execution before process 0 has joined it."""
        self._directory.mkdir(parents=True, exist_ok=True)
        if self._place.process_id == 0:
            for path in self._directory.glob("process-*.json"):
                path.unlink(missing_ok=True)
        self.report("running")

    def report(self, status: str, detail: str = "") -> None:
        marker = Marker(self._place.process_id, status, socket.gethostname(), os.getpid(), detail)
        path = self._path(self._place.process_id)
        temporary = path.with_name(path.name + ".tmp")
        temporary.write_bytes(msgspec.json.encode(marker))
        os.replace(temporary, path)

    def read(self, process_id: int) -> Marker | None:
        try:
            return msgspec.json.decode(self._path(process_id).read_bytes(), type=Marker)
        except (OSError, msgspec.DecodeError):
            return None

    def wait_for_the_others(
        self, on_tick: Callable[[], None] | None = None, timeout_s: float = END_WAIT_S
    ) -> list[Marker]:
        """Process 0: wait until every other process has reported its end; return the reports.

        A process that failed, or none reporting within `timeout_s`, is a TerminalError."""
        waiting = set(range(1, self._place.process_count))
        ended: list[Marker] = []
        deadline_s = time.monotonic() + timeout_s
        while waiting:
            for index in sorted(waiting):
                marker = self.read(index)
                if marker is None or marker.status not in ENDED + FAILED:
                    continue
                if marker.status in FAILED:
                    raise TerminalError(
                        f"process {index} of the cluster {marker.status} on {marker.host}: "
                        f"{marker.detail or 'see its log'}"
                    )
                ended.append(marker)
                waiting.discard(index)
            if not waiting:
                break
            if time.monotonic() > deadline_s:
                missing = ", ".join(map(str, sorted(waiting)))
                raise TerminalError(
                    f"process {missing} of the cluster did not report its end in "
                    f"{self._directory} within {timeout_s:g} s: every process must be given "
                    "the same --out, one directory shared by the hosts; the tables are not loaded"
                )
            if on_tick is not None:
                on_tick()
            time.sleep(END_POLL_S)
        invariant(len(ended) == self._place.process_count - 1, "an end report was lost")
        return ended


__all__ = [
    "ClusterMarkers",
    "ClusterPlace",
    "check_bindable",
    "cluster_lock",
    "cluster_place",
    "directory_guard",
    "gather_partitions",
    "live_processes",
    "parse_addresses",
    "prepare_recovery",
]
