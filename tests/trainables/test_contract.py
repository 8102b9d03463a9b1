"""The contract names: class and target names that MLflow refuses in metric names become metric keys by one rule,
everywhere a metric name is made; two names that would meet there are refused when the file is opened."""

from __future__ import annotations

import numpy as np
import pytest
from mlflow.entities import Metric
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from trainables.config import DataConfig
from trainables.contract import MAX_METRIC_KEY, colliding_keys, is_fraction, logged_metrics, metric_key, tag_value
from trainables.data import open_events
from trainables.errors import BadInput
from trainables.metrics import classification_metrics, prefixed, regression_metrics

HOSTILE = ["nue+CC", "CC(1pi)", "a<b", 'say "hi"', "x/y", "NC"]


def test_metric_key_keeps_safe_names_and_maps_the_rest():
    assert metric_key("numuCC") == "numuCC" and metric_key("n_pi0-1.5") == "n_pi0-1.5"
    assert [metric_key(n) for n in HOSTILE] == ["nue_CC", "CC_1pi_", "a_b", "say__hi_", "x_y", "NC"]
    assert colliding_keys(["a+b", "a_b", "c"]) == {"a_b": ["a+b", "a_b"]}


@pytest.mark.parametrize("name, fraction", [
    ("val/accuracy", True), ("accuracy", True), ("test/efficiency/nue_CC", True), ("efficiency/nue_CC", True),
    ("seeds/test/purity/NC", True), ("syst/noisy/fom/numuCC", True), ("ref/val/auc/NC", True),
    ("val/purity/efficiency", True),  # a class named efficiency
    ("val/loss", False), ("val/resolution68_deg", False), ("val/bias/accuracy", False),  # a target named accuracy
    ("rms/x", False), ("perf/data_wait_frac", False),
])
def test_a_fraction_is_told_by_its_family_whatever_the_prefix(name, fraction):
    assert is_fraction(name) is fraction


def test_every_metric_of_hostile_class_names_is_accepted_by_mlflow(tmp_path):
    """A real sqlite store takes every name the metrics produce (it refused the whole batch before)."""
    rng = np.random.default_rng(0)
    scores = rng.dirichlet(np.ones(len(HOSTILE)), size=60)
    labels = np.arange(60) % len(HOSTILE)
    metrics, _ = classification_metrics(scores, labels, HOSTILE)
    assert "efficiency/nue_CC" in metrics and not any("+" in k or "(" in k for k in metrics)
    assert set(prefixed(metrics, "val")) <= logged_metrics("classification", HOSTILE)
    targets = rng.standard_normal((40, 2))
    reg = regression_metrics(targets + 0.1, targets, ["E(GeV)", "phi"])
    assert "bias/E_GeV_" in reg
    client = MlflowClient(f"sqlite:///{tmp_path / 'm.db'}")
    run = client.create_run(client.create_experiment("hostile"))
    client.log_batch(run.info.run_id, metrics=[Metric(k, v, 0, 1) for k, v in {**prefixed(metrics, "val"),
                                                                             **prefixed(reg, "val")}.items()])
    assert set(client.get_run(run.info.run_id).data.metrics) == set(prefixed(metrics, "val")) | set(
        prefixed(reg, "val"))


def test_a_name_of_only_dots_becomes_underscores_because_mlflow_refuses_such_a_level(tmp_path):
    assert [metric_key(n) for n in (".", "..", "...", "a.b", ".5")] == ["_", "__", "___", "a.b", ".5"]
    client = MlflowClient(f"sqlite:///{tmp_path / 'm.db'}")
    run = client.create_run(client.create_experiment("dots")).info.run_id
    with pytest.raises(MlflowException):
        client.log_metric(run, "val/efficiency/..", 0.5)  # why the rule exists
    client.log_batch(run, metrics=[Metric(f"val/efficiency/{metric_key(n)}", 0.5, 0, 1) for n in (".", "..")])
    assert set(client.get_run(run).data.metrics) == {"val/efficiency/_", "val/efficiency/__"}


def test_a_class_name_too_long_for_mlflow_metric_names_is_refused_in_one_line(write_h5):
    long = "n" * (MAX_METRIC_KEY + 1)
    path = write_h5(images=np.zeros((6, 1, 4, 4), np.float32), labels=np.arange(6) % 2,
                    attrs={"class_names": ["NC", long]})
    with pytest.raises(BadInput, match=f"a name of {MAX_METRIC_KEY + 1} characters") as info:
        open_events(DataConfig(path=str(path)), "classification")
    assert "\n" not in str(info.value)
    assert len(f"seeds/syst/{'l' * 100}/efficiency/{'n' * MAX_METRIC_KEY}_err") <= 250  # MLflow's limit


def test_class_names_that_share_a_key_are_refused_in_one_line(write_h5):
    path = write_h5(images=np.zeros((6, 1, 4, 4), np.float32), labels=np.arange(6) % 2,
                    attrs={"class_names": ["nue+CC", "nue_CC"]})
    with pytest.raises(BadInput, match="share the metric name key 'nue_CC'") as info:
        open_events(DataConfig(path=str(path)), "classification")
    assert "\n" not in str(info.value)


def test_tag_values_keep_the_end_of_a_long_failure():
    text = "x" * 5000 + "ValueError: the reason"
    assert tag_value(text).endswith("ValueError: the reason") and len(tag_value(text)) == 4000
    assert tag_value("short") == "short"
