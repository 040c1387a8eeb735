"""What a user does with the tool, one sub-package each, each importing only from those listed
after it (import-linter keeps the order):

- ``demo``: the whole tour on generated photos (train, evaluate, predict, export);
- ``sweep``: a hyperparameter sweep, one training run per combination, on an Optuna study;
- ``inference``: what comes after training: evaluate a checkpoint, predict photos, export;
- ``training``: one training run, from a validated config to a finished run folder;
- ``tracking``: the experiment trackers (MLflow, TensorBoard, Neptune) a run reports to;
- ``runs``: the run folder on disk, its per-epoch metrics, and the comparison of runs.
"""
