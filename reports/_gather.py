"""Everything the sections draw beyond the run table, fetched in one pass before any figure is made: the metric
histories of the trials whose curves are drawn (the top trials and the baseline), and the artifacts of the leader
and the finalists. Only what a reader looks at is fetched: 6 trials' curves, not 1,000."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from reports._detail import Predictions, read_predictions
from reports._fetch_extra import Downloads, download, download_folder, fetch_histories
from reports._rank import Ranking, Row
from trainables.contract import Artifact

TOP_CURVES = 5  # learning curves of the top 5 against the baseline: more lines stop being readable
CURVES = ("train/loss", "val/loss", "train/lr")
TELEMETRY = ("perf/samples_per_s", "perf/data_wait_frac", "sys/rss_gb", "sys/cpu_pct")
STEP_TIME = ("perf/step_ms_p50", "perf/step_ms_p95")
GPU_MEMORY_TOTAL = "sys/gpu_mem_total_gb"  # the device's memory, when the trial logged it
GPU_PLOTTED = ("sys/gpu_mem_peak_reserved_gb", "sys/gpu_util_pct", "sys/gpu_alloc_retries", "sys/gpu_procs_sharing")
GPU_TABLE = ("sys/gpu_mem_peak_reserved_gb", GPU_MEMORY_TOTAL, "sys/gpu_alloc_retries", "sys/gpu_ooms",
             "sys/gpu_procs_sharing", "sys/gpu_proc_mem_gb", "sys/gpu_proc_util_pct", "sys/gpu_mem_peak_gb",
             "sys/gpu_fragmentation", "sys/gpu_power_w")


@dataclass
class Details:
    curve_rows: list[Row]
    histories: dict[str, dict[str, list]]  # run_id -> metric -> [(step, value)]
    downloads: Downloads
    leader_split: str = ""  # the split of the leader's artifacts: test (a final) or val
    test_predictions: dict[str, Predictions] = field(default_factory=dict)  # run_id -> finalist's test predictions
    explain_dir: Path | None = None  # the leader's `scanner explain` maps, when it has them

    def leader_file(self, ranking: Ranking, filename: str) -> Path | None:
        leader = ranking.leader
        return None if leader is None else self.downloads.get(leader.trial.run_id, self.leader_split, filename)

    def leader_predictions(self, ranking: Ranking) -> Predictions | None:
        """The leader's predictions.h5 (checked for aligned events), None when it has none."""
        path = self.leader_file(ranking, Artifact.PREDICTIONS)
        if path is None:
            return None
        return read_predictions(path, artifact_name(ranking.leader.trial.run_id, self.leader_split))


def artifact_name(run_id: str, split: str) -> str:
    """How an error names a downloaded predictions.h5: by the run and artifact path, not the temporary copy."""
    return f"artifact {split}/{Artifact.PREDICTIONS} of run {run_id}"


def curve_rows(ranking: Ranking) -> list[Row]:
    rows = ranking.top(TOP_CURVES)
    base = ranking.baseline
    if base is not None and base not in rows:
        rows = rows + [base]
    return rows


def history_keys(ranking: Ranking, rows: list[Row]) -> list[str]:
    """The metrics drawn as curves that at least one of these trials logged (a CPU sweep asks for no GPU key)."""
    wanted = list(dict.fromkeys([*CURVES[:2], ranking.sweep.objective, CURVES[2], *TELEMETRY, *STEP_TIME,
                                 *GPU_PLOTTED, *GPU_TABLE]))
    logged = set().union(*(r.trial.metrics for r in rows)) if rows else set()
    return [k for k in wanted if k in logged]


def fetch_details(ranking: Ranking, folder: Path) -> Details:
    uri = ranking.sweep.tracking_uri
    rows = curve_rows(ranking)
    histories = fetch_histories(uri, [r.trial.run_id for r in rows], history_keys(ranking, rows))
    finalists = [r.trial.run_id for r in ranking.finalists()]
    leader = ranking.leader.trial.run_id if ranking.leader is not None else None
    wanted = [(rid, "test", Artifact.PREDICTIONS) for rid in finalists]
    if leader is not None:
        wanted.append((leader, "test", Artifact.CONFUSION))
        if leader not in finalists:
            wanted.append((leader, "test", Artifact.PREDICTIONS))
    downloads = download(uri, wanted, folder)
    split = "test"
    if leader is not None and downloads.get(leader, "test", Artifact.PREDICTIONS) is None:
        split = "val"  # not a final (yet): its validation artifacts
        more = download(uri, [(leader, "val", Artifact.CONFUSION), (leader, "val", Artifact.PREDICTIONS)], folder)
        downloads.files.update(more.files)
    preds = {rid: read_predictions(p, artifact_name(rid, s)) for (rid, s, name), p in downloads.files.items()
             if s == "test" and name == Artifact.PREDICTIONS and rid in finalists}
    maps = download_folder(uri, leader, Artifact.EXPLAIN_DIR, folder / "maps") if leader is not None else None
    return Details(rows, histories, downloads, split, preds, maps)
