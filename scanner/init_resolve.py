"""``init: best-of:<sweep>`` and ``init: run:<id>`` -> a checkpoint path, through MLflow, in the driver.

Trials receive the resolved path, so they never query MLflow, and a transfer chain records which checkpoint it
actually started from (the ``init`` param of every child run).
"""

from __future__ import annotations

from pathlib import Path

from trainables.errors import BadInput

PREFIXES = ("best-of:", "run:")


def needs_resolving(init: str | None) -> bool:
    return bool(init) and str(init).startswith(PREFIXES)


def resolve_init(init: str | None, tracking_uri: str) -> str | None:
    """A checkpoint path for ``best-of:``/``run:``; anything else (a file, ``hub:``, None) is returned as is."""
    if not needs_resolving(init):
        return init
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri)
    if init.startswith("run:"):
        run_id = init[len("run:"):]
        try:
            run = client.get_run(run_id)
        except Exception:  # noqa: BLE001  MLflow raises a generic error for an unknown id
            raise BadInput(f"init '{init}': no MLflow run {run_id} in {tracking_uri}; copy the id from 'scanner ui'") from None
        return _checkpoint_of(run, init)
    return _checkpoint_of(best_run(client, init[len("best-of:"):], tracking_uri), init)


def best_run(client, sweep: str, tracking_uri: str):
    """The child run of ``sweep`` with the best ``best/<objective>``, the objective and mode read from its parent."""
    exp = client.get_experiment_by_name(sweep)
    if exp is None:
        raise BadInput(f"init 'best-of:{sweep}': no sweep '{sweep}' in {tracking_uri}; run it first or fix the name")
    parents = client.search_runs([exp.experiment_id], filter_string="tags.`scan.role` = 'parent'", max_results=1)
    objective = parents[0].data.tags.get("scan.objective", "val/accuracy") if parents else "val/accuracy"
    mode = parents[0].data.tags.get("scan.objective_mode", "max") if parents else "max"
    order = "DESC" if mode == "max" else "ASC"
    runs = client.search_runs(
        [exp.experiment_id],
        filter_string="tags.`scan.status` != 'failed' and attributes.status = 'FINISHED'",
        order_by=[f"metrics.`best/{objective}` {order}"],
        max_results=50,
    )
    runs = [r for r in runs if f"best/{objective}" in r.data.metrics and r.data.tags.get("scan.checkpoint")]
    if not runs:
        raise BadInput(f"init 'best-of:{sweep}': sweep '{sweep}' has no finished trial with a checkpoint yet")
    return runs[0]


def _checkpoint_of(run, init: str) -> str:
    path = run.data.tags.get("scan.checkpoint")
    if not path:
        raise BadInput(f"init '{init}': run {run.info.run_id} has no scan.checkpoint tag (it never finished an epoch)")
    if not Path(path).exists():
        raise BadInput(f"init '{init}': checkpoint {path} of run {run.info.run_id} is gone; restore it or pick another")
    return path
