"""The sweep's comparison table: one row per combination tried, its latest attempt."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import optuna

from configuration import Config
from workflows.runs.comparison import RunRecord, load_run, report

# Trial attributes: the run folder, why a trial did not train, the error of a failed one, and
# the combination a queued grid trial stands for.
RUN_DIR, SKIPPED, ERROR, COMBINATION = "run_dir", "skipped", "error", "combination"
STALE = (
    "its process stopped mid-run (killed, or its machine went down) before the run ended; "
    "run the same command again to train it"
)
_State = optuna.trial.TrialState


def params_key(params: dict[str, Any]) -> str:
    return json.dumps({k: str(v) for k, v in params.items()}, sort_keys=True)


def sweep_report(study: optuna.Study, base: Config, name: str) -> tuple[dict[str, Path], str]:
    """Write the report of every ended trial and return it with its table. A failed attempt
    of a combination that has trained since, or failed again, is left out."""
    trials = [
        t
        for t in study.get_trials(deepcopy=False)
        if not t.user_attrs.get(SKIPPED) and t.state not in (_State.WAITING, _State.RUNNING)
    ]
    ended = {params_key(t.params) for t in trials if t.state != _State.FAIL}
    last_failure = {params_key(t.params): t.number for t in trials if t.state == _State.FAIL}
    records: list[RunRecord] = []
    for trial in trials:
        key = params_key(trial.params)
        if trial.state == _State.FAIL and (key in ended or last_failure[key] != trial.number):
            continue
        records.append(_record(trial))
    if not records:
        return {}, "No run of this sweep has ended yet.\n"
    return report(records, Path(base.output_path) / "reports" / f"sweep-{name}")


def _record(trial: optuna.trial.FrozenTrial) -> RunRecord:
    run_dir = trial.user_attrs.get(RUN_DIR)
    record = load_run(Path(run_dir)) if run_dir else None
    error = str(trial.user_attrs.get(ERROR) or STALE)
    if record is None:  # failed before its first epoch: no folder
        settings = ", ".join(f"{k}={v}" for k, v in trial.params.items())
        return RunRecord(
            path=Path(f"trial {trial.number} ({settings})"),
            config={},
            rows=[],
            summary=None,
            status="failed",
            error=error,
        )
    if trial.state == _State.PRUNED:
        record.status = "pruned"
    elif trial.state == _State.FAIL and not (record.summary or {}).get("interrupted"):
        record.status, record.error = "failed", error
    return record
