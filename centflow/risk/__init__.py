"""Risk: every event is scored and decided before it can settle.

`decision` fills the decision columns of a block and encodes the
``payments.decisions`` messages.
"""
