"""The experiment trackers a run reports to: MLflow (local file store or a server), TensorBoard
and Neptune, behind one Lightning logger base that never lets a tracker's outage stop training,
and the continuation of a tracker's run when a run folder is resumed."""
