"""Hyperparameter sweeps: ``axes`` parses ``--sweep KEY=VALUES`` into axes, ``study`` runs one
training per combination on an Optuna study (SQLite by default, any database URL for several
machines) and writes the comparison report of the sweep's runs."""
