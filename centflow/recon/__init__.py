"""Reconciliation: the analyst tables and the report read from them.

`tables` (the analyst tables' Arrow schemas and rows), `report` (the summary
printed after a run, from the SQL in ``queries/``).
"""
