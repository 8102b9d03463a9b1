"""Shipped spaces, config merging, --set, the dry-run plan, resource checks and the space hash."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import yaml
from ray.tune.schedulers.async_hyperband import _Bracket

import search_spaces
from search_spaces import (
    ASHA_REDUCTION,
    asha_rungs,
    baseline_config,
    check_resources,
    cpu_ignored_keys,
    format_plan,
    load_space,
    parse_set,
    train_config,
    trial_config,
)
from scanner.sweep.lifecycle import warn_ignored_on_cpu
from trainables.data.synth import write_synthetic
from trainables.errors import BadInput

SHIPPED_DIR = Path(search_spaces.__file__).parent


@pytest.mark.parametrize("name", search_spaces.SHIPPED)
def test_shipped_space_loads(name):
    space = load_space(SHIPPED_DIR / name, require_data=False)
    assert Path(space.data.path).is_absolute()
    assert space.varied_keys, name
    baseline_config(space)  # a trainable reference config
    check_resources(space, cluster_cpus=2, cluster_gpus=0)  # runs on the 2-core, GPU-less machine


def test_shipped_specifics():
    demo = load_space(SHIPPED_DIR / "demo.yaml", require_data=False)
    assert demo.name == "demo" and demo.multi_objective and demo.budget.sampler == "tpe"
    assert [o.metric for o in demo.objectives] == ["val/accuracy", "perf/samples_per_s"]
    assert demo.data.path == str((SHIPPED_DIR.parent / "demo" / "lartpc_demo.h5").resolve())
    assert demo.fixed == {"batch_size": 64, "num_workers": 0}
    transfer = load_space(SHIPPED_DIR / "lartpc_transfer.yaml", require_data=False)
    assert transfer.space["mode"].choices == ("scratch", "finetune", "frozen")
    assert baseline_config(transfer).init is None  # scratch ignores the best-of: init
    assert trial_config(transfer, {"mode": "finetune", "lr": 1e-3}).init == "best-of:lartpc-3class"
    direction = load_space(SHIPPED_DIR / "lartpc_direction.yaml", require_data=False)
    assert direction.task == "regression" and direction.objective.mode == "min"
    assert direction.data.select == {"labels": ["nueCC", "numuCC"]}


def write(tmp_path: Path, doc: dict, name: str = "space.yaml") -> Path:
    path = tmp_path / name
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return path


DOC = {
    "name": "merge",
    "task": "classification",
    "data": {"path": "events.h5"},
    "objective": {"metric": "val/accuracy"},
    "fixed": {"batch_size": 32, "model": "small_cnn", "init": "weights.pt"},
    "baseline": {"lr": 1e-3, "loss": "focal"},
    "space": {"lr": {"float": [1e-4, 1e-1], "log": True}, "mode": {"choice": ["scratch", "finetune"]}},
}


def test_trial_config_is_fixed_plus_sampled(tmp_path):
    space = load_space(write(tmp_path, DOC), require_data=False)
    cfg = trial_config(space, {"lr": 3e-3, "mode": "finetune"})
    assert (cfg.lr, cfg.batch_size, cfg.model, cfg.mode, cfg.init) == (3e-3, 32, "small_cnn", "finetune", "weights.pt")
    assert cfg.loss == "ce"  # the task default, resolved: the baseline's focal does not leak in
    assert trial_config(space, {"lr": 3e-3, "mode": "scratch"}).init is None  # init ignored from scratch
    with pytest.raises(BadInput, match="trial"):
        trial_config(space, {"lr": -1.0, "mode": "scratch"})


def test_baseline_and_train_config(tmp_path):
    space = load_space(write(tmp_path, DOC), require_data=False)
    base = baseline_config(space)
    assert (base.lr, base.loss, base.batch_size, base.mode, base.init) == (1e-3, "focal", 32, "scratch", None)
    assert train_config(space) == base
    no_baseline = load_space(write(tmp_path, {**DOC, "baseline": None}, "b.yaml"), require_data=False)
    assert baseline_config(no_baseline).lr == 1e-3 and baseline_config(no_baseline).loss == "ce"  # the defaults
    overridden = load_space(tmp_path / "space.yaml", overrides=parse_set(["lr=3e-3", "amp=off", "batch_size=8"]),
                            require_data=False)
    cfg = train_config(overridden)
    # --set beats baseline and fixed; the rest of the baseline stays
    assert (cfg.lr, cfg.amp, cfg.batch_size, cfg.loss) == (3e-3, "off", 8, "focal")
    assert overridden.fixed["batch_size"] == 8 and overridden.space_hash == space.space_hash


def test_parse_set_types_values_like_yaml():
    values = parse_set(["lr=3e-3", "amp=off", "batch_size=128", "model=timm:resnet10t", "loss=none",
                        "init=best-of:lartpc-3class", "warmup_epochs=1", "ema_decay=0.999", "channels_last=true"])
    assert values == {"lr": 3e-3, "amp": "off", "batch_size": 128, "model": "timm:resnet10t", "loss": None,
                      "init": "best-of:lartpc-3class", "warmup_epochs": 1, "ema_decay": 0.999,
                      "channels_last": True}
    assert isinstance(values["lr"], float) and isinstance(values["channels_last"], bool)
    assert parse_set(["init=2024.pt"])["init"] == "2024.pt"  # a string key keeps the text


def test_gpu_keys_are_searchable_and_a_cpu_run_names_the_ones_it_ignores(tmp_path):
    space = {**DOC["space"], "amp": {"choice": ["bf16", "fp16", "off"]}, "precise_bn": {"choice": [0, 256, 1024]}}
    doc = {**DOC, "baseline": {"channels_last": True}, "resources": {"oom": "halve_batch"}, "space": space}
    text = yaml.safe_dump(doc, sort_keys=False).replace("'off'", "off")  # unquoted: a word, not YAML 1.1's false
    assert "- off\n" in text
    (tmp_path / "gpu.yaml").write_text(text)
    space = load_space(tmp_path / "gpu.yaml", require_data=False)
    assert space.space["amp"].choices == ("bf16", "fp16", "off") and space.resources.oom == "halve_batch"
    assert cpu_ignored_keys(space) == ["amp", "channels_last"]
    assert trial_config(space, {"lr": 1e-3, "mode": "scratch", "amp": "off", "precise_bn": 0}).amp == "off"
    assert cpu_ignored_keys(load_space(write(tmp_path, DOC), require_data=False)) == []
    same_as_cpu = {**DOC, "fixed": {**DOC["fixed"], "amp": "off", "channels_last": False}}
    assert cpu_ignored_keys(load_space(write(tmp_path, same_as_cpu, "off.yaml"), require_data=False)) == []
    assert load_space(write(tmp_path, DOC), require_data=False).resources.oom == "fail"


def test_a_cpu_sweep_says_once_in_one_line_which_gpu_keys_it_ignores(tmp_path, capsys):
    doc = {**DOC, "fixed": {**DOC["fixed"], "channels_last": True}, "space": {**DOC["space"],
           "amp": {"choice": ["bf16", "off"]}}}
    warn_ignored_on_cpu(load_space(write(tmp_path, doc), require_data=False))
    said = capsys.readouterr().err.splitlines()
    assert said == ["scanner: amp, channels_last are ignored on CPU (resources.gpu is 0)"]
    warn_ignored_on_cpu(load_space(write(tmp_path, DOC, "plain.yaml"), require_data=False))
    gpu = {**doc, "resources": {"gpu": 1}}
    warn_ignored_on_cpu(load_space(write(tmp_path, gpu, "gpu.yaml"), require_data=False))
    assert capsys.readouterr().err == ""


def test_yaml_reads_exponent_floats(tmp_path):
    text = yaml.safe_dump(DOC, sort_keys=False).replace("batch_size: 32", "batch_size: 32\n  weight_decay: 1e-5")
    (tmp_path / "e.yaml").write_text(text)
    assert load_space(tmp_path / "e.yaml", require_data=False).fixed["weight_decay"] == 1e-5


def test_space_hash_is_stable_and_content_sensitive(tmp_path):
    a = load_space(write(tmp_path, DOC, "a.yaml"), require_data=False)
    reordered = {k: DOC[k] for k in reversed(list(DOC))}
    b = load_space(write(tmp_path, reordered, "b.yaml"), require_data=False)
    changed = load_space(write(tmp_path, {**DOC, "fixed": {**DOC["fixed"], "batch_size": 33}}, "c.yaml"),
                         require_data=False)
    assert len(a.space_hash) == 12 and int(a.space_hash, 16) >= 0
    assert a.space_hash == b.space_hash == load_space(tmp_path / "a.yaml", require_data=False).space_hash
    assert changed.space_hash != a.space_hash


def test_plan_text(tmp_path):
    doc = {**DOC, "space": {**DOC["space"], "loss": {"choice": ["ce", "focal"]},
                            "focal_gamma": {"when": {"loss": "focal"}, "float": [0.5, 5.0]}},
           "budget": {"trials": 10, "max_epochs": 3, "final_top": 2},
           "resources": {"cpu": 2, "gpu": 0.5, "concurrent": 4}}
    space = load_space(write(tmp_path, doc), require_data=False)
    plan = format_plan(space, cluster_cpus=6, cluster_gpus=2)
    for text in ("Sweep 'merge' (classification)", str(tmp_path / "events.h5"), "MISSING", "val/accuracy (max)",
                 "sampler:    tpe", "scheduler asha on val/accuracy: compares trials at epochs 1, 2 of 3 and stops "
                 "those outside the top 1/2 there", "log-uniform float in [0.0001, 0.1]",
                 "choice of scratch, finetune", "(only when loss = focal)", "lr=0.001", "loss=focal",
                 "2 CPU and 0.5 GPU per trial", "runs 3 trial(s) at once",  # min(4, 6 // 2, 2 // 0.5)
                 "(10 trials + 1 baseline) x 3 epochs = 33 epochs", "top 2 trial(s) and the baseline",
                 "3 test evaluations", space.space_hash):
        assert text in plan, f"{text!r} not in:\n{plan}"
    assert "runs 1 trial(s) at once" in format_plan(space, cluster_cpus=2, cluster_gpus=8)
    assert "WARNING: no trial fits" in format_plan(space, cluster_cpus=1, cluster_gpus=0)


@pytest.mark.parametrize("fixed, space, budget, noted", [
    ({}, {}, {}, True),  # the default schedule is cosine, annealed at max_epochs
    ({"lr_schedule": "step"}, {}, {}, True),
    ({}, {"lr_schedule": {"choice": ["constant", "onecycle"]}}, {}, True),
    ({"ema_decay": 0.99}, {}, {}, False),  # the EMA weights are evaluated
    ({}, {"ema_decay": {"choice": [0.0, 0.99]}}, {}, False),  # the sweep itself will show the effect
    ({"lr_schedule": "constant"}, {}, {}, False),
    ({}, {}, {"scheduler": "fifo"}, False),
    ({}, {}, {"grace_epochs": 6}, False),  # no comparison before the end
])
def test_plan_notes_asha_against_an_annealed_schedule(tmp_path, fixed, space, budget, noted):
    doc = {**DOC, "fixed": {"batch_size": 32, **fixed}, "space": {"lr": DOC["space"]["lr"], **space},
           "budget": {"max_epochs": 6, **budget}}
    plan = format_plan(load_space(write(tmp_path, doc), require_data=False), cluster_cpus=2, cluster_gpus=0)
    assert ("comparisons at epochs 1, 2, 4" in plan and "ema_decay: 0.99" in plan) == noted, plan


@pytest.mark.parametrize("grace, max_epochs, bracket, rungs", [
    (1, 6, 0, [1, 2, 4]), (1, 8, 0, [1, 2, 4]), (3, 6, 0, [3]), (2, 2, 0, []), (1, 6, 1, [2, 4]), (1, 6, 2, [4]),
])
def test_asha_rungs_are_rays_milestones(grace, max_epochs, bracket, rungs):
    milestones = sorted(m for m, _ in _Bracket(grace, max_epochs, ASHA_REDUCTION, bracket)._rungs if m < max_epochs)
    assert asha_rungs(grace, max_epochs, bracket) == milestones == rungs


def test_plan_of_a_grid_and_a_pareto(tmp_path):
    doc = {**DOC, "objective": {"metric": "val/accuracy", "also": [{"metric": "perf/samples_per_s"}]},
           "budget": {"sampler": "grid", "scheduler": "fifo", "trials": 8},
           "space": {"mode": {"choice": ["scratch", "finetune"]}, "batch_size": {"int": [16, 64], "step": 16}}}
    doc["fixed"] = {"init": "weights.pt"}
    space = load_space(write(tmp_path, doc), require_data=False)
    plan = format_plan(space, cluster_cpus=2, cluster_gpus=0)
    assert "8 grid points" in plan and "-> Pareto front" in plan and "perf/samples_per_s (max)" in plan
    assert "fifo (every trial runs all epochs)" in plan


def test_check_resources(tmp_path):
    gpu = load_space(write(tmp_path, {**DOC, "resources": {"gpu": 0.5}}, "g.yaml"), require_data=False)
    with pytest.raises(BadInput) as info:
        check_resources(gpu, cluster_cpus=8, cluster_gpus=0)
    message = str(info.value)
    assert message.startswith(str(tmp_path / "g.yaml")) and "resources.gpu" in message
    assert "PENDING forever; set resources.gpu: 0 or run on a GPU node" in message
    check_resources(gpu, cluster_cpus=8, cluster_gpus=1)
    cpu = load_space(write(tmp_path, {**DOC, "resources": {"cpu": 4}}, "c.yaml"), require_data=False)
    with pytest.raises(BadInput, match=r"resources.cpu: 4 CPUs per trial, but the cluster has 2"):
        check_resources(cpu, cluster_cpus=2, cluster_gpus=0)
    gpu_metric = load_space(write(tmp_path, {**DOC, "objective": {"metric": "sys/gpu_mem_peak_gb"}}, "m.yaml"),
                            require_data=False)
    assert gpu_metric.objective.mode == "min"  # inferred: memory is better lower
    with pytest.raises(BadInput, match=r"objective.metric: 'sys/gpu_mem_peak_gb' is never logged without a GPU"):
        check_resources(gpu_metric, cluster_cpus=2, cluster_gpus=0)


def test_space_file_is_immutable(tmp_path):
    space = load_space(write(tmp_path, DOC), require_data=False)
    with pytest.raises(AttributeError):
        space.name = "other"  # type: ignore[misc]
    assert space.raw["name"] == "merge" and space.source_path == (tmp_path / "space.yaml").resolve()


def test_shipped_spaces_agree_with_the_synthetic_generator(tmp_path):
    """`scanner data synth` files satisfy the shipped spaces: class names for select, the data paths' layout."""
    (tmp_path / "search_spaces").mkdir()
    for name in search_spaces.SHIPPED:
        shutil.copy(SHIPPED_DIR / name, tmp_path / "search_spaces" / name)
    write_synthetic(tmp_path / "data" / "lartpc.h5", events=24, size=16, progress=False, workers=0)
    write_synthetic(tmp_path / "demo" / "lartpc_demo.h5", events=24, size=16, progress=False, workers=0)
    for name in search_spaces.SHIPPED:
        space = load_space(tmp_path / "search_spaces" / name)  # require_data: the files must be there
        assert Path(space.data.path).parent.parent == tmp_path.resolve()
    direction = (tmp_path / "search_spaces" / "lartpc_direction.yaml").read_text()
    (tmp_path / "search_spaces" / "bad.yaml").write_text(direction.replace("numuCC]", "numuCCC]"))
    with pytest.raises(BadInput, match=r"data.select.labels\[1\]: the file has no class 'numuCCC'"):
        load_space(tmp_path / "search_spaces" / "bad.yaml")
