"""Reports read MLflow only: ranking, Pareto front, importance, plots, HTML/Markdown/CSV.

    from reports import build_report
    build_report("demo", "sqlite:////abs/mlflow.db", Path("report"))   # -> report/index.html
    report_files(Path("report"))       # the files that report wrote (its manifest, .scanner-report.json)

Never imports ray or torch, nor anything that does (import-linter keeps it so); optuna only inside the importance
function. The names and the physics it shares with training come from ``trainables.contract`` and
``trainables.physics``, which import neither.
"""

from reports._build import build_report, document, preload, write_report
from reports._fetch import LOCAL_UI_URL, UI_PORT, SweepRuns, Trial, client_for, load_sweep
from reports._output import MANIFEST, report_files
from reports._importance import Importance, infer_distribution, param_importance
from reports._pareto import Front, dominates, non_dominated, pareto_front
from reports._rank import Gain, Ranking, Row, gain_over_baseline, rank, relative_gain, val_test_comparison
from reports.errors import ReportInputError

__all__ = [
    "build_report",
    "write_report",
    "preload",
    "document",
    "load_sweep",
    "report_files",
    "MANIFEST",
    "LOCAL_UI_URL",
    "UI_PORT",
    "client_for",
    "SweepRuns",
    "Trial",
    "rank",
    "Ranking",
    "Row",
    "gain_over_baseline",
    "Gain",
    "relative_gain",
    "val_test_comparison",
    "pareto_front",
    "non_dominated",
    "dominates",
    "Front",
    "param_importance",
    "infer_distribution",
    "Importance",
    "ReportInputError",
]
