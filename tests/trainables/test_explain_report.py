"""The report's explain blocks from a hand-built run: real maps written by the explain pipeline, logged to a real
sqlite MLflow run under explain/, downloaded as the report downloads artifacts, turned into figures."""

from __future__ import annotations

import json

import numpy as np
from fixtures_tracking import fresh_store
from mlflow.tracking import MlflowClient

from reports._explain import INDEX_JSON as REPORT_INDEX_JSON
from reports._explain import explain_blocks
from reports._plots import Figure
from trainables.config import DataConfig
from trainables.explain import ExplainOptions, explain_events, pick_events
from trainables.explain_files import INDEX_JSON, write_explanation
from trainables.trial_model import load_trial


def test_the_report_shows_a_few_maps_per_class_from_a_runs_explain_artifacts(tiny_checkpoint, tiny_h5, tmp_path):
    trial = load_trial(tiny_checkpoint, DataConfig(path=str(tiny_h5)))
    explanation = explain_events(trial, pick_events(trial, 9), ExplainOptions(method="saliency"))
    client = MlflowClient(tracking_uri=fresh_store(tmp_path))
    run_id = client.create_run(client.create_experiment("hand", str(tmp_path / "art"))).info.run_id
    for path in write_explanation(explanation, tmp_path / "written", run_id):
        client.log_artifact(run_id, str(path), "explain")
    folder = client.download_artifacts(run_id, "explain", str(tmp_path / "downloaded"))

    blocks = explain_blocks(folder, per_class=2)
    assert isinstance(blocks[0], str) and "saliency" in blocks[0] and "of the 9 explained" in blocks[0]
    figures = [b for b in blocks if isinstance(b, Figure)]
    truths = [f.title.split("true ")[1].split(",")[0] for f in figures]
    assert sorted(truths) == ["NC", "NC", "nueCC", "nueCC", "numuCC", "numuCC"]  # 9 events, 3 per class: 2 shown
    assert all(f.png[:8] == b"\x89PNG\r\n\x1a\n" and f.key.startswith("explain_") for f in figures)
    assert REPORT_INDEX_JSON == INDEX_JSON


def test_missing_pngs_are_named_and_a_folder_without_maps_gives_nothing(tiny_checkpoint, tiny_h5, tmp_path):
    trial = load_trial(tiny_checkpoint, DataConfig(path=str(tiny_h5)))
    explanation = explain_events(trial, pick_events(trial, 3), ExplainOptions(method="saliency"))
    write_explanation(explanation, tmp_path / "ex")
    gone = json.loads((tmp_path / "ex" / INDEX_JSON).read_text())["events"][0]
    (tmp_path / "ex" / gone["png"]).unlink()
    blocks = explain_blocks(tmp_path / "ex")
    assert sum(isinstance(b, Figure) for b in blocks) == 2
    assert f"events {gone['index']} are listed" in blocks[-1]
    assert explain_blocks(tmp_path / "nothing") == []
    assert np.load(tmp_path / "ex" / "maps.npz")["index"].tolist() == [e.index for e in explanation.events]
