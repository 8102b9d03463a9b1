"""Done-when of "ship the winner", on the shared tiny sweep: `scanner export best-of:tiny` writes an ONNX file whose
outputs match the best trial's predictions.h5 for the same events to 1e-4, and `scanner explain best-of:tiny` logs
maps that the report turns into figures.

Writes to the shared sweep's store only under names nobody else reads: the export/ metrics and the export/ and
explain/ artifacts of the best trial's run (what `make demo` does too)."""

from __future__ import annotations

import h5py
import numpy as np
import onnx
import onnxruntime as ort
import pytest
from mlflow.tracking import MlflowClient

from reports import build_report
from reports._explain import explain_blocks
from reports._plots import Figure
from scanner.cli import main
from scanner.targets import resolve_run
from trainables.config import DataConfig
from trainables.trial_model import read_images

pytestmark = pytest.mark.slow


def test_export_and_explain_of_the_sweeps_best_trial(tiny_sweep, tmp_path, capsys):
    assert tiny_sweep.exit_code == 0, tiny_sweep.output
    uri = tiny_sweep.tracking_uri
    best = resolve_run("best-of:tiny", uri)
    client = MlflowClient(tracking_uri=uri)
    out = tmp_path / "best.onnx"
    assert main(["export", "best-of:tiny", "--out", str(out), "--tracking-uri", uri]) == 0
    assert capsys.readouterr().out.strip().splitlines()[-1] == str(out)

    predictions = client.download_artifacts(best.run_id, "val/predictions.h5", str(tmp_path / "val"))
    with h5py.File(predictions, "r") as f:
        index, scores = f["index"][:], f["scores"][:]
    images = read_images(DataConfig(path=str(tiny_sweep.folder / "tiny.h5")), index)
    session = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    onnx_scores = session.run(None, {"images": images})[0]
    assert np.max(np.abs(onnx_scores - scores)) <= 1e-4 and len(index) > 30

    meta = {p.key: p.value for p in onnx.load(str(out)).metadata_props}
    run = client.get_run(best.run_id)
    assert meta["run_id"] == best.run_id and meta["git_sha"] == run.data.tags.get("scan.git_sha", "")
    assert meta["data_hash"] == run.data.tags["scan.data_hash"]
    assert run.data.metrics["export/max_abs_diff"] <= 1e-4 and run.data.metrics["export/argmax_agreement"] == 1.0
    assert "export/best.onnx" in {a.path for a in client.list_artifacts(best.run_id, "export")}

    assert main(["explain", "best-of:tiny", "--events", "6", "--out", str(tmp_path / "explain"),
                 "--tracking-uri", uri]) == 0
    folder = client.download_artifacts(best.run_id, "explain", str(tmp_path / "downloaded"))
    figures = [b for b in explain_blocks(folder) if isinstance(b, Figure)]
    assert len(figures) == 6 and all(f.png.startswith(b"\x89PNG") for f in figures)  # 2 per class, 3 classes

    # the report's "best trial in detail" shows them: the leader is the trial best-of: named
    index = build_report("tiny", uri, tmp_path / "report", log_to_parent=False)
    markdown = (index.parent / "report.md").read_text()
    shown = [f.key for f in figures if f"figures/{f.key}.png" in markdown]
    assert shown == [f.key for f in figures] and "scanner explain" in index.read_text(), shown
