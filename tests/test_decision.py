"""Decision messages: the templated fast path gives the bytes of encoding each message whole."""

from __future__ import annotations

import msgspec
import pyarrow as pa
from hypothesis import given, settings
from hypothesis import strategies as st

from centflow.risk.decision import DecisionMessage, _one_by_one, decision_messages

_ROW = st.tuples(
    st.text(min_size=1, max_size=20),  # event ids with quotes, backslashes, control characters
    st.integers(-(2**63), 2**63 - 1),
)
_SHARED = st.tuples(
    st.sampled_from(["approve", "review", "decline", None]),
    st.one_of(st.none(), st.floats(0, 1)),
    st.one_of(st.none(), st.sampled_from(["none", "iforest-3", 'a "quoted" model'])),
    st.one_of(st.none(), st.sampled_from(["no_risk_model", "velocity;new_device", ""])),
)


def _block(rows, decisions) -> pa.RecordBatch:
    return pa.record_batch(
        {
            "event_id": pa.array([event_id for event_id, _ in rows], pa.string()),
            "decision": pa.array([row[0] for row in decisions], pa.string()),
            "risk_score": pa.array([row[1] for row in decisions], pa.float64()),
            "model_version": pa.array([row[2] for row in decisions], pa.string()),
            "reasons": pa.array([row[3] for row in decisions], pa.string()),
            "ingest_us": pa.array([ingest for _, ingest in rows], pa.int64()),
        }
    )


@settings(max_examples=200, deadline=None)
@given(rows=st.lists(_ROW, min_size=1, max_size=30), shared=_SHARED)
def test_a_block_decided_alike_gives_the_messages_of_encoding_each_one(rows, shared):
    block = _block(rows, [shared] * len(rows))
    messages = decision_messages(block)
    assert messages == _one_by_one(block)
    for (key, value), (event_id, ingest_us) in zip(messages, rows, strict=True):
        decoded = msgspec.json.decode(value, type=DecisionMessage)
        assert key == event_id.encode()
        assert (decoded.event_id, decoded.ingested_at_us) == (event_id, ingest_us)


@settings(max_examples=100, deadline=None)
@given(data=st.data(), rows=st.lists(_ROW, min_size=2, max_size=30))
def test_a_block_decided_differently_is_encoded_one_by_one(data, rows):
    decisions = data.draw(st.lists(_SHARED, min_size=len(rows), max_size=len(rows)))
    block = _block(rows, decisions)
    assert decision_messages(block) == _one_by_one(block)
    assert decision_messages(block.slice(0, 0)) == []
