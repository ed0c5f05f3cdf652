"""Training: configs, optimizers, the train state, the per-device steps, the loop."""
