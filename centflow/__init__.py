"""centflow: stream settlement of global micro-payments.

This package never imports Bytewax; ``dataflows/`` wires its functions into
dataflows and ``sinks/`` writes their output. Its rooms:

- ``ingest/``: decoding, the event record, replay logs, admission (de-duplication
  and references);
- ``risk/``: the decision every event gets before it can settle;
- ``money/``: exact amounts, settlement windows and batches, the ledger;
- ``recon/``: the analyst tables and the reconciliation report;
- ``generate/``: synthetic logs with faults and fraud scenarios;
- ``ops/``: process plumbing (command line, runner, broker, Kafka helpers, bench);
- beside them, what every room shares: ``config``, ``errors``, ``limits`` and
  ``progress`` (shards, envelopes and frontiers).
"""

__version__ = "0.1.0"
