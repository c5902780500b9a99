"""Contrastive training: the TF side of the distributed step, strategies, optimizers, the schedule,
callbacks, inputs, and the `align-tf train` recipe."""
