"""Networks: the RRDB generator and its checkpoints."""
