"""Runs on disk: the run folder (its name, its files, who may write it), the launch-wide run
seed, the per-epoch ``metrics.csv`` and the comparison report over many run folders. Everything
that reads or writes a run folder's files starts here; nothing here trains."""
