"""Risk state packed in ``array("q")`` objects, and its MessagePack snapshots.

A key's state as lists of int objects and dicts of strings costs some hundreds of
bytes a key before it holds anything: a Python int is 28 to 32 bytes, a list or
dict 56 to 232. Packed, an integer costs 8 bytes and a key one array object (64
bytes), which is what lets the risk state of a million payers fit in memory
(`centflow.risk.features.PayerBook`, `centflow.risk.tiers.Spending`).

A snapshot encodes an array as its raw bytes, in this machine's byte order: a
recovery store is read back by the machine kind that wrote it.
"""

from __future__ import annotations

from array import array
from typing import Any

import msgspec


def _encode(value: object) -> bytes:
    if isinstance(value, array):
        return value.tobytes()
    raise NotImplementedError(f"cannot encode {type(value).__name__}")


def _decode(kind: type, value: object) -> array:
    if kind is array and isinstance(value, bytes):
        data = array("q")
        data.frombytes(value)
        return data
    raise NotImplementedError(f"cannot decode {kind.__name__}")


ENCODER = msgspec.msgpack.Encoder(enc_hook=_encode)


def decoder(kind: Any) -> msgspec.msgpack.Decoder[Any]:
    """A decoder of `kind`, whose packed arrays come back as ``array("q")``.

    >>> decoder(dict[str, array]).decode(ENCODER.encode({"a": array("q", [1, -2])}))
    {'a': array('q', [1, -2])}
    """
    return msgspec.msgpack.Decoder(kind, dec_hook=_decode)
