"""Networks: the RRDB generator and its checkpoints, and the discriminator."""
