"""Synthetic logs: seeded payers, payees, faults and labelled fraud scenarios (`logs`)."""
