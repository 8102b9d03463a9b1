"""MLflow tracking: the store, run names and tags, and the spooled writer that every write of a sweep goes through.

Importing it does not load torch (import-linter keeps it so).
"""

from scanner.tracking.faults import WriterFailed
from scanner.tracking.journal import JournalFull, JournalRunIds
from scanner.tracking.naming import checkpoint_artifact_files, log_checkpoint_artifacts, trial_run_name, trial_tags
from scanner.tracking.replay import MAX_BATCH_METRICS
from scanner.tracking.store import (check_reachable, ensure_experiment, find_runs_by_tag, git_sha,
                                    quiet_store_creation, search_all)
from scanner.tracking.writer import PARENT_KEY, MlflowWriter, finite_metrics, report_dropped

__all__ = ["MAX_BATCH_METRICS", "PARENT_KEY", "JournalFull", "JournalRunIds", "MlflowWriter", "WriterFailed",
           "check_reachable", "checkpoint_artifact_files", "ensure_experiment", "find_runs_by_tag", "finite_metrics",
           "git_sha", "log_checkpoint_artifacts", "quiet_store_creation", "report_dropped", "search_all",
           "trial_run_name", "trial_tags"]
