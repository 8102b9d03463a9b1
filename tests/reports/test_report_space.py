"""Conditional params read from the parent's space.yaml: an inactive param (focal_gamma when the loss is ce) is blank
in the ranking table and CSV, and out of the importance and the scatter plots; without space.yaml nothing changes.
Also: the ranking plot labels its trials by short id, so the plot area is not squeezed by long run names."""

from __future__ import annotations

import pandas as pd
import pytest
from fixtures_report_store import SPECS as FIXED
from fixtures_report_store import Spec, make_sweep

from reports import build_report, load_sweep, param_importance, rank
from reports._sections import _ranking_figure, val_test_section
from reports._space import space_info

SPACE = """\
name: cond
space:
  model: {choice: [resnet18, resnet34]}
  loss: {choice: [ce, focal, label_smoothing]}
  focal_gamma: {when: {loss: focal}, float: [0.5, 5.0]}
  label_smoothing: {when: {loss: [label_smoothing]}, choice: [0.05, 0.1, 0.2]}
  lr: {float: [1.0e-4, 1.0e-1], log: true}
"""

LONG = " lr_schedule=constant ema_decay=0.99 warmup_epochs=3 backbone_lr_mult=0.1 weight_decay=1e-4"


def spec(i, loss, acc, gamma="2.0", ls="0.1", lr="0.001", baseline=False):
    params = {"model": "resnet18" if i % 2 else "resnet34", "loss": loss, "focal_gamma": gamma,
              "label_smoothing": ls, "lr": lr}
    return Spec(f"t{i:02d} resnet {loss} lr={lr}" + LONG, params, [acc - 0.05, acc], 0.004, baseline=baseline)


SPECS = [
    spec(0, "ce", 0.80, baseline=True),
    spec(1, "focal", 0.86, gamma="0.7321", lr="0.003"),
    spec(2, "focal", 0.83, gamma="3.9", lr="0.0004"),
    spec(3, "ce", 0.84, lr="0.02"),
    spec(4, "label_smoothing", 0.82, ls="0.2", lr="0.0002"),
    spec(5, "label_smoothing", 0.78, ls="0.05", lr="0.05"),
    spec(6, "focal", 0.81, gamma="1.5", lr="0.0011"),
]
VARIED = ("model", "loss", "focal_gamma", "label_smoothing", "lr")


def expected_active(s: Spec, param: str) -> bool:
    return {"focal_gamma": s.params["loss"] == "focal",
            "label_smoothing": s.params["loss"] == "label_smoothing"}.get(param, True)


@pytest.fixture(scope="module")
def with_space(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("space")
    return make_sweep(tmp, "cond", SPECS, also=False, space_yaml=SPACE, varied=VARIED)


@pytest.fixture(scope="module")
def without_space(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("nospace")
    return make_sweep(tmp, "cond", SPECS, also=False, varied=VARIED)


def test_when_scalar_list_nested_and_numeric_values():
    info = space_info({"space": {
        "loss": {"choice": ["ce", "focal"]},
        "focal_gamma": {"when": {"loss": "focal"}, "float": [0.5, 5.0]},
        "ema_decay": {"choice": [0.0, 0.99]},
        "ema_warmup": {"when": {"ema_decay": [0.99]}, "int": [0, 3]},
        "gamma_decay": {"when": {"focal_gamma": [1.0]}, "choice": [1, 2]},  # its parent is conditional itself
        "lr": {"float": [1e-4, 1e-1], "log": True},
    }})
    assert info.log == {"lr"}
    assert info.inactive({"loss": "focal", "focal_gamma": "1.0", "ema_decay": "0.99"}) == set()
    assert info.inactive({"loss": "ce", "focal_gamma": "1.0", "ema_decay": "0.0"}) == {
        "focal_gamma", "ema_warmup", "gamma_decay"}  # gamma_decay: its parent focal_gamma is inactive
    assert info.inactive({"loss": "focal", "focal_gamma": "2.5", "ema_decay": "0.990"}) == {"gamma_decay"}


def test_csv_blanks_inactive_params_and_keeps_active_ones(with_space, tmp_path):
    build_report("cond", with_space["uri"], tmp_path / "r", log_to_parent=False)
    table = pd.read_csv(tmp_path / "r" / "ranking.csv", keep_default_na=False, na_values=[""])
    by_trial = table.set_index("trial")
    for s in SPECS:
        for p in ("focal_gamma", "label_smoothing"):
            cell = by_trial.loc[s.name, f"param:{p}"]
            if expected_active(s, p):
                assert float(cell) == float(s.params[p]), (s.name, p)
            else:
                assert pd.isna(cell), (s.name, p, cell)
    html = (tmp_path / "r" / "index.html").read_text()
    assert "0.732" in html and "0.7321" not in html.split('id="ranking"', 1)[1].split("</table>")[0]  # 3 digits


def test_without_space_yaml_the_logged_defaults_stay(without_space, tmp_path):
    sweep = load_sweep("cond", without_space["uri"])
    assert sweep.space is None
    table = rank(sweep).table.set_index("trial")
    assert [table.loc[s.name, "param:focal_gamma"] for s in SPECS] == [s.params["focal_gamma"] for s in SPECS]


def test_importance_and_scatter_leave_out_inactive_values(with_space, without_space):
    imp = param_importance(rank(load_sweep("cond", with_space["uri"])))
    assert set(imp.conditional) == {"focal_gamma", "label_smoothing"}
    assert not set(imp.values) & {"focal_gamma", "label_smoothing"}
    assert {"lr", "loss"} <= set(imp.values)
    assert imp.log == {"lr"}
    gammas = [v for v in imp.params["focal_gamma"] if v is not None]
    assert sorted(gammas) == sorted(s.params["focal_gamma"] for s in SPECS if s.params["loss"] == "focal")
    assert "2.0" not in gammas  # the default of the ce/label_smoothing trials is not a point
    old = param_importance(rank(load_sweep("cond", without_space["uri"])))
    assert old.conditional == [] and "2.0" in old.params["focal_gamma"]


def test_ranking_plot_uses_short_ids_and_keeps_the_plot_area_wide(with_space):
    ranking = rank(load_sweep("cond", with_space["uri"]))
    fig = _ranking_figure(ranking)
    labels = fig.meta["yticklabels"]
    assert labels[0] == "t01" and "t00 (baseline)" in labels
    assert all(len(lab) <= len("t00 (baseline)") for lab in labels)
    assert fig.meta["plot_width_frac"] > 0.6  # full run names (~100 chars) left it < 0.25 of the width
    assert fig.meta["labels_inside"]  # ... or, when even that failed, pushed the labels off the figure
    assert ranking.table["trial"].str.contains("lr_schedule=constant").all()  # the table keeps the full names


def test_val_test_rows_name_each_trial_once_and_differences_carry_errors(tmp_path):
    store = make_sweep(tmp_path)
    table = next(b for b in val_test_section(rank(load_sweep("lartpc-test", store["uri"]))).blocks
                 if not isinstance(b, str))
    named = [row[0] for row in table.rows if row[0]]
    finals = [s for s in FIXED if s.test_acc is not None]
    assert len(named) == len(finals) == len(set(named))  # one name per trial, then blank continuation rows
    acc_rows = [row for row in table.rows if row[1] == "accuracy"]
    for row in acc_rows:  # both val and test accuracy have a logged error: the difference has one too
        assert "±" in row[4], row
