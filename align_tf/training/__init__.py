"""Contrastive training: the distributed step's TF side, strategies, optimizers, schedule, callbacks, inputs and the `align-tf train` recipe."""
