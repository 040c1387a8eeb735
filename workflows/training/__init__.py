"""One training run: ``run.run_training`` assembles everything a run needs from a validated
config (``assembly``: data, network, module, run folder, trackers, callbacks), then fits it;
the run's start and every ending - finished, early-stopped, interrupted, failed - pass through
one callback (``lifecycle``). Beside them: resuming (``resume``, all of it), fine-tuning from
another checkpoint, signals (``interruptions``), failures a setting explains (``failures``),
the dry run before a folder exists (``preflight``) and atomic checkpoint writes."""
