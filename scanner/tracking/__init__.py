"""MLflow tracking: the store, run names and tags, and the spooled writer that every write of a sweep goes through.

Importing it does not load torch (import-linter keeps it so).
"""

from scanner.tracking.naming import checkpoint_artifact_files, log_checkpoint_artifacts, trial_run_name, trial_tags
from scanner.tracking.store import check_reachable, ensure_experiment, find_runs_by_tag, git_sha
from scanner.tracking.writer import MAX_BATCH_METRICS, PARENT_KEY, JournalRunIds, MlflowWriter, finite_metrics

__all__ = ["MAX_BATCH_METRICS", "PARENT_KEY", "JournalRunIds", "MlflowWriter", "check_reachable", "checkpoint_artifact_files",
           "ensure_experiment", "find_runs_by_tag", "finite_metrics", "git_sha", "log_checkpoint_artifacts",
           "trial_run_name", "trial_tags"]
