"""A resumed run goes on in the tracker runs it started: the identities kept in the run
folder's ``trackers.json`` (``RunFolder.record_tracker``) say which.

- MLflow: the same run when the tracking URI is the same and the run still exists (not
  deleted); its status goes back to RUNNING while it trains. MLflow refuses to change a logged
  parameter, so only new parameters are logged and a changed one becomes the tag
  ``resumed.<name>``. A run that is gone, or a new URI, gets a new run and one warning.
- TensorBoard: the same folder; the resumed writer hides what the interrupted process logged
  from the resumed epoch on (``purge_step``).
- Neptune, online (``async``/``sync``): the same run (``with_id``, else the stored
  ``custom_run_id``). Offline, the client can only make a new offline run per process, and
  ``neptune sync`` registers each as a run of its own: the resumed segment has the same name,
  the same ``custom_run_id`` field and ``resumed_at_epoch``.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable
from typing import Any

from utils.text import without_credentials

log = logging.getLogger(__name__)

MLFLOW = "mlflow"
NEPTUNE = "neptune"
# MLflow keeps parameter values of up to this many characters (Lightning cuts them there).
_PARAM_CHARS = 250
_TAG_CHARS = 5000


def public_uri(uri: str) -> str:
    """``uri`` without a user name or password (``http://user:pass@host`` -> ``http://host``)."""
    return without_credentials(uri)


# ---- MLflow --------------------------------------------------------------------------------
def mlflow_run_to_continue(
    stored: dict[str, Any] | None, uri: str, get_run: Callable[[str], Any]
) -> str | None:
    """The id of the stored MLflow run when it can go on (same URI, run still there); else
    None, with one warning when a stored run cannot be continued. ``get_run`` is the client's:
    any error other than "does not exist" (a server down) is raised, for the tracker to
    report."""
    if not stored or not stored.get("run_id"):
        return None
    run_id = str(stored["run_id"])
    before = str(stored.get("tracking_uri") or "")
    if before != public_uri(uri):
        log.warning(
            "MLflow: this run was tracked at '%s' and mlflow_tracking_uri is now '%s': the rest "
            "of it goes to a new MLflow run there. Set mlflow_tracking_uri back to continue the "
            "same MLflow run.",
            before,
            public_uri(uri),
        )
        return None
    try:
        found = get_run(run_id)
    except Exception as err:  # MlflowException, named by its code: mlflow loads only when used
        if getattr(err, "error_code", None) != "RESOURCE_DOES_NOT_EXIST":
            raise
        found = None
    if found is None or found.info.lifecycle_stage == "deleted":
        log.warning(
            "MLflow: the run's MLflow run %s no longer exists in '%s' (deleted?): the rest of "
            "the training goes to a new MLflow run.",
            run_id,
            public_uri(uri),
        )
        return None
    return run_id


def continue_mlflow_run(
    client: Any,
    run_id: str,
    params: dict[str, Any],
    tags: dict[str, str],
    resume_at: int,
    log_params: Callable[[dict[str, Any]], None],
) -> dict[str, str]:
    """Take up an existing MLflow run: log the parameters it lacks (``log_params``), record a
    changed one as the tag ``resumed.<name>``, refresh the tags and set it RUNNING. Returns the
    changed parameters."""
    logged = client.get_run(run_id).data.params
    new = {k: v for k, v in params.items() if k not in logged}
    changed = {
        k: str(v)[:_TAG_CHARS]
        for k, v in params.items()
        if k in logged and logged[k] != str(v)[:_PARAM_CHARS]
    }
    if new:
        log_params(new)
    all_tags = {
        **tags,
        **{f"resumed.{k}": v for k, v in changed.items()},
        "resumed_at_epoch": str(resume_at),
    }
    for key, value in all_tags.items():
        client.set_tag(run_id, key, value)
    client.update_run(run_id, status="RUNNING")
    return changed


def mlflow_identity(uri: str, experiment_id: str | None, run_id: str | None) -> dict[str, Any]:
    return {"tracking_uri": public_uri(uri), "experiment_id": experiment_id, "run_id": run_id}


# ---- Neptune -------------------------------------------------------------------------------
def neptune_run_kwargs(
    stored: dict[str, Any] | None, local: bool, resume_at: int | None
) -> tuple[dict[str, Any], str]:
    """The ``init_run`` arguments that continue the stored Neptune run (online modes), and
    the run's custom id (kept for the whole run, made on its first start)."""
    stored = stored or {}
    custom_id = str(stored.get("custom_run_id") or uuid.uuid4().hex)
    if local:  # the offline client makes a new run in any case
        return {}, custom_id
    if resume_at is not None and stored.get("sys_id"):
        return {"with_id": str(stored["sys_id"])}, custom_id
    return {"custom_run_id": custom_id}, custom_id
