"""Every validation error: a real YAML file in tmp_path, one line naming the file, the key path and a fix."""

from __future__ import annotations

import copy
from pathlib import Path

import h5py
import numpy as np
import pytest
import yaml

from search_spaces import load_space, parse_set
from trainables.errors import BadInput

BASE = {
    "name": "t-space",
    "task": "classification",
    "data": {"path": "events.h5"},
    "objective": {"metric": "val/accuracy", "mode": "max"},
    "budget": {"trials": 4, "max_epochs": 2},
    "fixed": {"batch_size": 16},
    "baseline": {"model": "small_cnn", "lr": 1e-3},
    "space": {
        "loss": {"choice": ["ce", "focal"]},
        "focal_gamma": {"when": {"loss": "focal"}, "float": [0.5, 5.0]},
        "lr": {"float": [1e-4, 1e-1], "log": True},
    },
}


def write_yaml(tmp_path: Path, doc: dict | str, name: str = "space.yaml") -> Path:
    path = tmp_path / name
    path.write_text(doc if isinstance(doc, str) else yaml.safe_dump(doc, sort_keys=False))
    return path


def write_events(path: Path, class_names=("NC", "nueCC", "numuCC")) -> Path:
    with h5py.File(path, "w") as f:
        f.create_dataset("images", data=np.zeros((6, 2, 8, 8), np.float32))
        f.create_dataset("labels", data=np.arange(6) % len(class_names))
        f.attrs["class_names"] = list(class_names)
    return path


def variant(**changes) -> dict:
    """BASE with dotted-path changes; a value of ``...`` deletes the key."""
    doc = copy.deepcopy(BASE)
    for dotted, value in changes.items():
        *parents, last = dotted.split("__")
        node = doc
        for p in parents:
            node = node.setdefault(p, {})
        if value is ...:
            node.pop(last)
        else:
            node[last] = value
    return doc


def load_error(tmp_path: Path, doc: dict | str, require_data: bool = False) -> str:
    path = write_yaml(tmp_path, doc)
    with pytest.raises(BadInput) as info:
        load_space(path, require_data=require_data)
    message = str(info.value)
    assert "\n" not in message, message
    assert message.startswith(f"{path}: "), message  # names the file
    assert "; " in message, message  # ... and a fix after the problem
    return message


def test_base_document_is_valid(tmp_path):
    space = load_space(write_yaml(tmp_path, BASE), require_data=False)
    assert space.varied_keys == ["loss", "focal_gamma", "lr"]


def test_checkpoints_are_logged_by_default_on_a_server_only(tmp_path):
    space = load_space(write_yaml(tmp_path, BASE), require_data=False)
    assert space.tracking.logs_checkpoints("http://mlflow:5000") and not space.tracking.logs_checkpoints("sqlite:///m.db")
    doc = variant(tracking={"log_checkpoints": "none"})
    assert not load_space(write_yaml(tmp_path, doc), require_data=False).tracking.logs_checkpoints("http://m:5000")


CASES = [
    # (id, document, key path in the message, words of the fix)
    ("unknown-top-key", variant(spcae={}), "spcae", "did you mean 'space'"),
    ("unknown-budget-key", variant(budget__trails=3), "budget.trails", "did you mean 'trials'"),
    ("unknown-param-key", variant(space__lr={"float": [1e-4, 1e-1], "lgo": True}), "space.lr.lgo", "'log'"),
    ("unknown-objective-key", variant(objective__metrc="x"), "objective.metrc", "'metric'"),
    ("unknown-data-key", variant(data__pth="x.h5"), "data.pth", "'path'"),
    ("unknown-resources-key", variant(resources={"gpus": 1}), "resources.gpus", "'gpu'"),
    ("missing-name", variant(name=...), "name: missing", "add 'name:'"),
    ("missing-task", variant(task=...), "task: missing", "add 'task:'"),
    ("missing-data-path", variant(data={"images": "x"}), "data.path: missing", "give the HDF5 file"),
    ("missing-objective-metric", variant(objective={"mode": "max"}), "objective.metric: missing", "val/accuracy"),
    ("bad-task", variant(task="classifcation"), "task:", "did you mean 'classification'"),
    ("bad-name", variant(name="my sweep/1"), "name:", "letters, digits"),
    ("low-above-high", variant(space__lr={"float": [0.1, 1e-4]}), "space.lr.float", "smaller value first"),
    ("log-low-zero", variant(space__weight_decay={"float": [0.0, 0.1], "log": True}), "space.weight_decay.float",
     "raise low above 0"),
    ("empty-choice", variant(space__loss={"choice": []}), "space.loss.choice", "list the values"),
    ("step-not-dividing", variant(fixed__batch_size=..., space__batch_size={"int": [16, 100], "step": 32}),
     "space.batch_size.step",
     "move high to 80"),
    ("step-with-log", variant(space__lr={"float": [1e-4, 1e-1], "log": True, "step": 1e-4}), "space.lr.step",
     "drop step"),
    ("two-distributions", variant(space__lr={"float": [1e-4, 1e-1], "choice": [1e-3]}), "space.lr",
     "exactly one of"),
    ("float-range-on-int-key", variant(fixed__batch_size=..., space__batch_size={"float": [16, 128]}),
     "space.batch_size.float",
     "int: [16, 128]"),
    ("wrong-value-type", variant(fixed__batch_size="sixteen"), "fixed.batch_size", "value of that type"),
    ("value-outside-limits", variant(space__ema_decay={"choice": [0.0, 1.0]}), "space.ema_decay.choice[1]",
     "in that range"),
    ("fixed-and-varied", variant(fixed__lr=1e-3), "space.lr", "remove it from fixed"),
    ("when-unknown-parent", variant(space__focal_gamma={"when": {"los": "focal"}, "float": [0.5, 5.0]}),
     "space.focal_gamma.when.los", "parameters in space: loss"),
    ("when-impossible-value", variant(space__focal_gamma={"when": {"loss": "focall"}, "float": [0.5, 5.0]}),
     "space.focal_gamma.when.loss", "a value loss can take"),
    ("when-on-float", variant(space__loss={"when": {"focal_gamma": 1.0}, "choice": ["ce", "focal"]}),
     "space.loss.when.focal_gamma", "make focal_gamma a choice"),
    ("when-cycle", variant(space__loss={"when": {"ema_decay": 0.0}, "choice": ["ce", "focal"]},
                           space__ema_decay={"when": {"loss": "ce"}, "choice": [0.0, 0.99]}),
     "space.loss.when", "make one of these parameters unconditional"),
    ("unknown-model", variant(baseline__model="resnet_18"), "baseline.model", "did you mean 'resnet18'"),
    ("unknown-model-in-space", variant(space__model={"choice": ["small_cnn", "resnt18"]}), "space.model.choice[1]",
     "timm:<name>"),
    ("unknown-loss", variant(space__loss={"choice": ["ce", "focall"]}, space__focal_gamma=...),
     "space.loss.choice[1]", "did you mean 'focal'"),
    ("unknown-schedule", variant(fixed__lr_schedule="cosin"), "fixed.lr_schedule", "did you mean 'cosine'"),
    ("loss-of-wrong-task", variant(task="regression", objective={"metric": "val/resolution68_deg"}),
     "space.loss.choice[0]", "use a regression loss"),
    ("unknown-trial-key", variant(fixed__lrr=1e-3), "fixed.lrr", "did you mean 'lr'"),
    ("unknown-space-key", variant(space__focal_gama={"float": [1.0, 2.0]}), "space.focal_gama", "'focal_gamma'"),
    ("bad-scheduler", variant(budget__scheduler="ashaa"), "budget.scheduler", "did you mean 'asha'"),
    ("bad-sampler", variant(budget__sampler="tpee"), "budget.sampler", "did you mean 'tpe'"),
    ("grid-with-float", variant(budget__sampler="grid"), "space.focal_gamma.float", "make focal_gamma a choice"),
    ("grid-smaller-than-trials", variant(budget__sampler="grid", budget__trials=5, space__focal_gamma=...,
                                         space__lr={"choice": [1e-3, 1e-2]}),
     "budget.trials", "set budget.trials: 4"),
    ("cmaes-multi-objective", variant(objective__also=[{"metric": "perf/samples_per_s"}], budget__sampler="cmaes"),
     "budget.sampler", "nsga2 or tpe"),
    ("bad-trials", variant(budget__trials=0), "budget.trials", "integer >= 1"),
    ("grace-above-max", variant(budget__grace_epochs=5), "budget.grace_epochs", "grace_epochs <= max_epochs"),
    ("metric-never-logged", variant(objective__metric="val/acuracy"), "objective.metric",
     "did you mean 'val/accuracy'"),
    ("metric-of-other-task", variant(objective__metric="val/resolution68_deg"), "objective.metric", "val/accuracy"),
    ("also-never-logged", variant(objective__also=[{"metric": "perf/sample_per_s"}]), "objective.also[0].metric",
     "perf/samples_per_s"),
    ("test-metric-objective", variant(objective__metric="test/accuracy"), "objective.metric", "val/accuracy"),
    ("bad-mode", variant(objective__mode="maximise"), "objective.mode", "mode: max"),
    ("best-of-with-varied-model", variant(fixed__init="best-of:pretrain", fixed__mode="finetune",
                                          space__model={"choice": ["small_cnn", "resnet18"]}),
     "space.model", "set model in fixed"),
    ("finetune-without-init", variant(baseline__mode="finetune"), "baseline.mode", "add init:"),
    ("space-mode-without-init", variant(space__mode={"choice": ["scratch", "frozen"]}), "space.mode.choice[1]",
     "add init:"),
    ("gpu-fraction-above-one", variant(resources={"gpu": 1.5}), "resources.gpu", "fraction < 1"),
    ("unknown-oom-policy", variant(resources={"oom": "retry"}), "resources.oom", "oom: halve_batch"),
    ("amp-as-bool", variant(fixed__amp=True), "fixed.amp", "one of bf16, fp16, off"),
    ("amp-typo", variant(space__amp={"choice": ["bf16", "fp32"]}), "space.amp.choice[1]", "one of bf16, fp16, off"),
    ("negative-precise-bn", variant(fixed__precise_bn=-1), "fixed.precise_bn", "keep precise_bn in that range"),
    ("space-not-mapping", variant(space=["lr"]), "space:", "write it as"),
    ("bad-log-checkpoints", variant(tracking={"log_checkpoints": "all"}), "tracking.log_checkpoints",
     "log_checkpoints: best"),
    ("unknown-tracking-key", variant(tracking={"log_checkpoint": "best"}), "tracking.log_checkpoint",
     "did you mean 'log_checkpoints'"),
    ("final-seeds-zero", variant(budget__final_seeds=0), "budget.final_seeds", "integer >= 1"),
]


@pytest.mark.parametrize("doc, key_path, fix", [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_validation_error_names_file_key_and_fix(tmp_path, doc, key_path, fix):
    message = load_error(tmp_path, doc)
    assert key_path in message, message
    assert fix in message, message


def test_yaml_syntax_error_has_the_line(tmp_path):
    text = "name: x\ntask: classification\nspace:\n  lr: {float: [1.0e-4, 0.1}\n"
    message = load_error(tmp_path, text)
    assert "line 4" in message and "fix the YAML syntax" in message, message


def test_duplicate_key_is_an_error(tmp_path):
    text = yaml.safe_dump(BASE, sort_keys=False) + "name: again\n"
    message = load_error(tmp_path, text)
    assert "'name' appears twice" in message and "line" in message, message


def test_missing_data_file_is_an_error_only_when_required(tmp_path):
    message = load_error(tmp_path, BASE, require_data=True)
    assert f"data.path: {tmp_path / 'events.h5'} does not exist" in message
    assert "scanner data synth --out" in message
    assert load_space(tmp_path / "space.yaml", require_data=False).data.path == str(tmp_path / "events.h5")


def test_data_path_resolves_against_the_yaml_folder(tmp_path, monkeypatch):
    (tmp_path / "spaces").mkdir()
    (tmp_path / "data").mkdir()
    write_events(tmp_path / "data" / "events.h5")
    path = write_yaml(tmp_path / "spaces", variant(data__path="../data/events.h5"))
    monkeypatch.chdir(tmp_path / "data")  # the working folder must not matter
    space = load_space(path)
    assert space.data.path == str((tmp_path / "data" / "events.h5").resolve())


def test_per_class_metric_checked_against_the_data_file(tmp_path):
    doc = variant(objective__metric="val/efficiency/nueCC")
    assert load_space(write_yaml(tmp_path, doc), require_data=False).objective.metric == "val/efficiency/nueCC"
    write_events(tmp_path / "events.h5")
    assert load_space(tmp_path / "space.yaml").objective.metric == "val/efficiency/nueCC"
    message = load_error(tmp_path, variant(objective__metric="val/efficiency/nue"), require_data=True)
    assert "objective.metric" in message and "'val/efficiency/nueCC'" in message, message


def test_unknown_family_is_an_error_even_without_the_data_file(tmp_path):
    message = load_error(tmp_path, variant(objective__metric="val/eficiency/nueCC"))
    assert "objective.metric" in message and "never logged by a classification trial" in message


def test_select_names_classes_of_the_file(tmp_path):
    write_events(tmp_path / "events.h5")
    doc = variant(data__select={"labels": ["nueCC", "numuC"]})
    message = load_error(tmp_path, doc, require_data=True)
    assert "data.select.labels[1]" in message and "did you mean 'numuCC'" in message


def test_not_an_hdf5_file(tmp_path):
    (tmp_path / "events.h5").write_text("not hdf5")
    message = load_error(tmp_path, BASE, require_data=True)
    assert "data.path" in message and "not a readable HDF5 file" in message


def test_set_unknown_key_names_it():
    with pytest.raises(BadInput, match=r"--set: lrr: unknown trial key 'lrr'; did you mean 'lr'"):
        parse_set(["lrr=3e-3"])
    with pytest.raises(BadInput, match="expected key=value"):
        parse_set(["lr"])
    with pytest.raises(BadInput, match="batch_size"):
        parse_set(["batch_size=big"])


def test_an_objective_names_a_class_by_its_metric_key(tmp_path):
    """Class names MLflow refuses in metric names (nue+CC) become metric keys (nue_CC), in the objective too."""
    write_events(tmp_path / "events.h5", class_names=("NC", "nue+CC", "CC(1pi)"))
    message = load_error(tmp_path, variant(objective__metric="val/efficiency/nue+CC"), require_data=True)
    assert "objective.metric" in message and "'val/efficiency/nue_CC'" in message
    ok = load_space(write_yaml(tmp_path, variant(objective__metric="val/efficiency/CC_1pi_")))
    assert ok.objective.metric == "val/efficiency/CC_1pi_"
