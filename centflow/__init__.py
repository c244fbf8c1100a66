"""centflow: stream settlement of global micro-payments.

This package is the domain: money, events, validation, admission
(de-duplication and references), settlement windows, the ledger,
reconciliation, configuration and the command line. It never imports
Bytewax; ``dataflows/`` wires these pure functions into dataflows and
``sinks/`` writes their output.
"""

__version__ = "0.1.0"
