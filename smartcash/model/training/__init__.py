"""Training internals: the trainer, the phase switch, optimisation, checkpoints, records, registry."""
