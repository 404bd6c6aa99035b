"""Oracles: judging a run from what the guest and the host saw."""
