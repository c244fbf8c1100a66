"""Joining a cluster of worker processes without losing a second.

Worker *i* of a multi-process run connects to the workers numbered below it,
and Bytewax's networking waits a whole second before it retries a refused
connection. ``centflow run`` starts the workers together (their imports
overlap) and tells each, in `PEERS_ENV`, the addresses of the workers below
it; the worker calls `wait_for_peers` just before it joins. This module is
imported by every worker, so it imports nothing heavy.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

PEERS_ENV = "CENTFLOW_WAIT_FOR_PEERS"  # "host:port;host:port": the workers numbered below
PEER_WAIT_S = 30.0
PEER_POLL_S = 0.01
TCP_LISTEN = "0A"  # the LISTEN state in /proc/net/tcp


def wait_for_peers(timeout_s: float = PEER_WAIT_S) -> None:
    """In a worker process: wait until the workers numbered below this one listen.

    Reads the kernel's socket table (Linux); elsewhere, or after `timeout_s`,
    it returns at once and Bytewax's own retry takes over, so it can only
    shorten a start, never fail one.
    """
    wanted = {
        int(address.rpartition(":")[2])
        for address in os.environ.get(PEERS_ENV, "").split(";")
        if address
    }
    deadline = time.monotonic() + timeout_s
    while wanted and time.monotonic() < deadline:
        listening = _listening_ports()
        if listening is None:
            return
        wanted -= listening
        if wanted:
            time.sleep(PEER_POLL_S)


def _listening_ports() -> set[int] | None:
    """TCP ports in the LISTEN state on this host (None where /proc/net/tcp is absent)."""
    try:
        table = Path("/proc/net/tcp").read_text()
    except OSError:
        return None
    ports = set()
    for line in table.splitlines()[1:]:
        fields = line.split()
        if len(fields) > 3 and fields[3] == TCP_LISTEN:
            ports.add(int(fields[1].rpartition(":")[2], 16))
    return ports
