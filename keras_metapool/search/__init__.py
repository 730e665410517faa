"""PMPL search: PMPLCallback and architecture derivation (to come; see README Status)."""
