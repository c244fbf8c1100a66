"""Ingestion: from raw bytes to admitted events.

`decode` (total: every message becomes one event or one dead letter), `events`
and `columns` (the event record and its Arrow form), `timeparse` (RFC 3339),
`replay` (reading logs and the log clock) and `admission` (de-duplication and
reference checks, in ingestion order).
"""
