"""Runs on disk: the run folder (its name, its files, its lock), the launch (which process this
is, the run's seed, which run folder it joins), the per-epoch ``metrics.csv`` and the comparison
report over many run folders. Everything that reads or writes a run folder's files starts here;
nothing here trains."""
