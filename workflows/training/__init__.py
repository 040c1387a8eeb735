"""One training run: ``run.run_training`` assembles the data, the network, the Lightning module,
the callbacks and the trackers from a validated config, then fits. Resuming, fine-tuning from
another checkpoint, signals and failures, and atomic checkpoint writes live beside it."""
