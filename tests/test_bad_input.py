"""Bad input, as a new user makes it: every case is one line on stderr naming the thing, exit status 2, and nothing
left behind in the working folder (no scans/<name>/, no mlflow.db, no half-written output, no empty folder).

Each case runs `scanner ...` in this process (``scanner.cli.main``) in a fresh working folder that holds only the
case's own input files. The cases are the ones a physicist tried in their first hour: YAML, values, data files, CLI
flags, the data tools, ``init:`` and the tracking URI.
"""

from __future__ import annotations

import shutil
import socket
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import h5py
import numpy as np
import pytest
from fixtures_cli import Pretrained, folder_listing, run_cli
from fixtures_data import png_classes
from fixtures_sweep import TINY_SPACE, free_port
from mlflow.tracking import MlflowClient

SPACE = TINY_SPACE.format(name="bad", trials=2, epochs=1)
REGRESSION = (SPACE.replace("task: classification", "task: regression")
              .replace("metric: val/accuracy", "metric: val/loss").replace("mode: max", "mode: min")
              .replace("  loss: ce\n", "")
              .replace("  loss:  {choice: [ce, focal]}\n  focal_gamma: {when: {loss: focal}, float: [1.0, 3.0]}\n", ""))


@dataclass(frozen=True)
class Inputs:
    """What a case may use besides its working folder."""

    h5: Path  # a valid events file (copied in when a case needs it)
    pretrained: Pretrained  # a store with a small_cnn_tiny run: best-of:pretrain, run:<id>


@dataclass(frozen=True)
class Case:
    id: str
    prepare: Callable[[Path, Inputs], list[str]]  # writes the case's files, returns the scanner arguments
    words: tuple[str, ...]  # each must appear in the error line


# --------------------------------------------------------------------------------------------- input builders


def yaml_case(verb: str, old: str = "", new: str = "", *extra: str, text: str | None = None):
    """``scanner VERB space.yaml`` on the tiny space with ``old`` replaced by ``new``."""
    assert old in SPACE

    def prepare(work: Path, inputs: Inputs) -> list[str]:
        shutil.copy(inputs.h5, work / "tiny.h5")
        (work / "space.yaml").write_text(text if text is not None else SPACE.replace(old, new, 1))
        return [verb, "space.yaml", *extra]

    return prepare


def h5_case(verb: str, text: str = SPACE, **datasets):
    """``scanner VERB space.yaml`` (``text``) on events.h5 made of ``datasets`` (arrays; attrs under ``attrs``)."""
    assert "path: tiny.h5" in text

    def prepare(work: Path, inputs: Inputs) -> list[str]:
        write_events(work / "events.h5", **datasets)
        (work / "space.yaml").write_text(text.replace("path: tiny.h5", "path: events.h5"))
        return [verb, "space.yaml"]

    return prepare


def arrays(n: int = 40, nan_at: int | None = None, size: int = 8) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    images = rng.random((n, 2, size, size)).astype(np.float32)
    if nan_at is not None:
        images[nan_at, 0, 3, 3] = np.nan
    targets = rng.standard_normal((n, 3)).astype(np.float32)
    return {"images": images, "labels": (np.arange(n) % 3).astype(np.int64),
            "targets": targets / np.linalg.norm(targets, axis=1, keepdims=True)}


def write_events(path: Path, attrs: dict | None = None, **datasets) -> None:
    with h5py.File(path, "w") as f:
        for key, value in {"class_names": ["NC", "nueCC", "numuCC"], **(attrs or {})}.items():
            f.attrs[key] = value
        for key, value in datasets.items():
            if value is not None:
                f.create_dataset(key, data=value)


def with_(changes: dict, base: dict | None = None) -> dict:
    return {**(base or arrays()), **changes}


def pngs(damage: str):
    def prepare(work: Path, inputs: Inputs) -> list[str]:
        png_classes(work / "png", damage)
        return ["data", "import-images", "png", "--out", "events.h5"]

    return prepare


def plain(*argv: str):
    return lambda work, inputs: list(argv)


def with_store(*argv: str):
    """An existing store in the working folder that holds another sweep."""

    def prepare(work: Path, inputs: Inputs) -> list[str]:
        MlflowClient(f"sqlite:///{work / 'mlflow.db'}").create_experiment("other")
        return list(argv)

    return prepare


def started_before(work: Path, inputs: Inputs) -> list[str]:
    yaml_case("run")(work, inputs)
    (work / "scans" / "bad").mkdir(parents=True)
    (work / "scans" / "bad" / "scan.json").write_text("{}")
    return ["run", "space.yaml"]


def init_case(verb: str, fixed_extra: str, pretrain_store: bool = False):
    """The tiny space with ``fixed_extra`` added to ``fixed`` (and to every trial: no searched model)."""

    def prepare(work: Path, inputs: Inputs) -> list[str]:
        shutil.copy(inputs.h5, work / "tiny.h5")
        text = SPACE.replace("  num_workers: 0\n", f"  num_workers: 0\n{fixed_extra}", 1)
        text = text.replace("  model: {choice: [small_cnn_tiny, resnet_tiny]}\n", "")
        text = text.replace("  model: small_cnn_tiny\n", "")
        (work / "space.yaml").write_text(text)
        store = ["--tracking-uri", inputs.pretrained.tracking_uri] if pretrain_store else []
        return [verb, "space.yaml", *store]

    return prepare


OFFLINE_HUB = "  model: resnet18\n  mode: finetune\n  init: hub:ResNet18_Weights.IMAGENET1K_V1\n"
UNKNOWN_HUB = "  model: resnet18\n  mode: finetune\n  init: hub:resnet18.IMAGENET1K_V1\n"
MISMATCH = "  model: resnet_tiny\n  mode: finetune\n  init: best-of:pretrain\n"
UNKNOWN_SWEEP = "  model: small_cnn_tiny\n  mode: finetune\n  init: best-of:nosuch\n"


def tracking(uri: str):
    def prepare(work: Path, inputs: Inputs) -> list[str]:
        yaml_case("run")(work, inputs)
        return ["run", "space.yaml", "--tracking-uri", uri.format(work=work, port=free_port())]

    return prepare


def port_taken(work: Path, inputs: Inputs) -> list[str]:
    return ["ui", "--port", str(inputs_port_taken())]


_LISTENERS: list[socket.socket] = []


def inputs_port_taken() -> int:
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen()
    _LISTENERS.append(listener)  # closed after the case (see the fixture below)
    return listener.getsockname()[1]


def folder_as_data(verb: str):
    def prepare(work: Path, inputs: Inputs) -> list[str]:
        yaml_case(verb, "path: tiny.h5", "path: events")(work, inputs)
        (work / "events").mkdir()
        (work / "events" / "a.png").write_bytes(b"")
        return [verb, "space.yaml"]

    return prepare


# --------------------------------------------------------------------------------------------- the cases

YAML = [
    Case("yaml: unknown top-level key", yaml_case("run", "budget:", "budgett:"), ("budgett", "'budget'")),
    Case("yaml: nested key typo", yaml_case("run", "  trials: 2", "  trails: 2"), ("budget.trails", "'trials'")),
    Case("yaml: model typo", yaml_case("run", "  model: small_cnn_tiny\n", "  model: small_cnn_tinny\n"),
         ("small_cnn_tinny", "small_cnn_tiny")),
    Case("yaml: loss typo", yaml_case("run", "  loss: ce\n", "  loss: focall\n"), ("focall", "focal")),
    Case("yaml: syntax error", yaml_case("run", "name: bad", "name: [bad"), ("space.yaml", "line")),
    Case("yaml: duplicate key", yaml_case("run", "task: classification", "task: classification\ntask: regression"),
         ("task", "twice")),
    Case("yaml: empty file", yaml_case("run", text=""), ("space.yaml", "empty")),
    Case("yaml: missing file", plain("run", "nosuch.yaml"), ("nosuch.yaml", "not found")),
    Case("yaml: a folder as the file", lambda work, inputs: (work / "spaces").mkdir() or ["run", "spaces"],
         ("spaces", "YAML")),
]

VALUES = [
    Case("values: objective metric typo", yaml_case("run", "metric: val/accuracy", "metric: val/acuracy"),
         ("val/acuracy", "val/accuracy")),
    Case("values: mode maximize", yaml_case("run", "mode: max", "mode: maximize"), ("maximize", "mode: max")),
    Case("values: reversed range", yaml_case("run", "float: [1.0e-3, 3.0e-2]", "float: [3.0e-2, 1.0e-3]"),
         ("space.lr", "low")),
    Case("values: log range from 0",
         yaml_case("run", "space:\n", "space:\n  weight_decay: {float: [0.0, 1.0e-2], log: true}\n"),
         ("space.weight_decay", "log")),
    Case("values: empty choice", yaml_case("run", "choice: [ce, focal]", "choice: []"), ("space.loss.choice",)),
    Case("values: when on an unknown parameter", yaml_case("run", "when: {loss: focal}", "when: {losss: focal}"),
         ("space.focal_gamma.when.losss",)),
    Case("values: a key in fixed and in space", yaml_case("run", "  num_workers: 0\n", "  num_workers: 0\n  lr: 0.1\n"),
         ("space.lr", "both")),
    Case("values: grace_epochs > max_epochs", yaml_case("run", "grace_epochs: 1", "grace_epochs: 3"),
         ("grace_epochs", "max_epochs")),
    Case("values: sampler typo", yaml_case("run", "sampler: tpe", "sampler: tpee"), ("tpee", "tpe")),
    Case("values: concurrent 0", yaml_case("run", "concurrent: 2", "concurrent: 0"), ("resources.concurrent",)),
    Case("values: too many CPUs", yaml_case("run", "cpu: 1,", "cpu: 4096,"), ("resources.cpu", "4096")),
    Case("values: a GPU on a machine without one", yaml_case("run", "gpu: 0,", "gpu: 1,"), ("resources.gpu",)),
    Case("values: batch_size 0", yaml_case("run", "batch_size: 32", "batch_size: 0"), ("batch_size",)),
    Case("values: max_epochs -1", yaml_case("run", "max_epochs: 1", "max_epochs: -1"), ("budget.max_epochs",)),
    Case("values: frozen without init", yaml_case("run", "  num_workers: 0\n", "  num_workers: 0\n  mode: frozen\n"),
         ("frozen", "init")),
    Case("values: a name with ../", yaml_case("run", "name: bad", "name: ../bad"), ("name", "../bad")),
    Case("values: a classification loss on regression",
         yaml_case("run", text=REGRESSION.replace("  lr: 1.0e-3\n", "  lr: 1.0e-3\n  loss: ce\n")),
         ("'ce'", "regression")),
    Case("values: regression on a file without targets",
         h5_case("run", text=REGRESSION, **with_({"targets": None})), ("events.h5", "'targets'")),
    Case("values: select of an unknown class",
         yaml_case("run", "  path: tiny.h5\n", "  path: tiny.h5\n  select: {labels: [nuXX]}\n"), ("nuXX",)),
]

BROKEN_FILES = {
    "rank 3": (with_({"images": np.zeros((40, 8, 8), np.float32)}), ("rank 4",)),
    "NaN in the first event": (arrays(nan_at=0), ("NaN", "event 0")),
    "float labels": (with_({"labels": np.linspace(0, 2, 40)}), ("'labels'",)),
    "labels out of range": (with_({"labels": np.full(40, 7)}), ("'labels'", "0..2")),
    "an N mismatch": (with_({"labels": np.zeros(30, np.int64)}), ("'labels'", "30")),
    "no labels": (with_({"labels": None}), ("'labels'",)),
    "string images": (with_({"images": np.array([b"x"] * 40)}), ("'images'",)),
    "bad split codes": (with_({"split": np.full(40, 7, np.uint8)}), ("'split'",)),
    "negative weights": (with_({"weights": np.full(40, -1.0)}), ("'weights'",)),
}


def not_hdf5(verb: str):
    def prepare(work: Path, inputs: Inputs) -> list[str]:
        yaml_case(verb, "path: tiny.h5", "path: events.h5")(work, inputs)
        (work / "events.h5").write_text("not HDF5")
        return [verb, "space.yaml"]

    return prepare


def empty_h5(verb: str):
    def prepare(work: Path, inputs: Inputs) -> list[str]:
        yaml_case(verb, "path: tiny.h5", "path: events.h5")(work, inputs)
        h5py.File(work / "events.h5", "w").close()
        return [verb, "space.yaml"]

    return prepare


def data_cases(verb: str) -> list[Case]:
    cases = [
        Case(f"data ({verb}): missing", yaml_case(verb, "path: tiny.h5", "path: nosuch.h5"), ("nosuch.h5",)),
        Case(f"data ({verb}): not HDF5", not_hdf5(verb), ("events.h5", "HDF5")),
        Case(f"data ({verb}): empty", empty_h5(verb), ("events.h5", "empty")),
        Case(f"data ({verb}): a folder", folder_as_data(verb), ("events", "folder", "import-images")),
    ]
    return cases + [Case(f"data ({verb}): {name}", h5_case(verb, **content), ("events.h5", *words))
                    for name, (content, words) in BROKEN_FILES.items()]


CLI = [
    Case("cli: negative --epochs", yaml_case("train", "", "", "--epochs", "-1"), ("--epochs -1",)),
    Case("cli: an unknown flag", yaml_case("run", "", "", "--trails", "3"), ("--trails",)),
    Case("cli: --set of an unknown key", yaml_case("train", "", "", "--set", "lrr=3"), ("lrr", "'lr'")),
    Case("cli: --set of a bad value", yaml_case("train", "", "", "--set", "lr=fast"), ("lr", "fast")),
    Case("cli: negative --trials", yaml_case("run", "", "", "--trials", "-1"), ("--trials -1",)),
    Case("cli: --trials 0", yaml_case("run", "", "", "--trials", "0"), ("--trials 0", "scanner train")),
    Case("cli: report --at worst", plain("report", "bad", "--at", "worst"), ("worst", "best")),
    Case("cli: an unreachable tracking server", tracking("http://127.0.0.1:{port}"), ("does not answer",)),
    Case("cli: report of an unknown sweep in a store", with_store("report", "nosuch"), ("nosuch", "other")),
    Case("cli: report of an unknown sweep, no store", plain("report", "nosuch"), ("nosuch",)),
    Case("cli: evaluate of an unknown sweep, no store",
         plain("evaluate", "finals-of:nosuch", "--data", "v.h5", "--label", "noisy"),
         ("finals-of:nosuch", "no MLflow store")),
    Case("cli: resume of an unknown sweep", plain("resume", "nosuch"), ("nosuch",)),
    Case("cli: resume of a path outside scans/", plain("resume", "../../etc"), ("../../etc", "not a sweep name")),
    Case("cli: the same name twice", started_before, ("bad", "scanner resume bad")),
    Case("cli: slurm --nodes 0", yaml_case("slurm", "", "", "--nodes", "0", "--gpus-per-node", "0"), ("--nodes 0",)),
    Case("cli: ui on a taken port", port_taken, ("--port", "already")),
    Case("cli: ui on an invalid port", plain("ui", "--port", "70000"), ("--port 70000",)),
]

DATA_TOOLS = [
    Case("tools: synth negative events", plain("data", "synth", "--out", "s.h5", "--events", "-5"), ("--events -5",)),
    Case("tools: synth size 2", plain("data", "synth", "--out", "s.h5", "--size", "2"), ("--size 2",)),
    Case("tools: synth unknown class", plain("data", "synth", "--out", "s.h5", "--classes", "nc,nuxx"), ("nuxx",)),
    Case("tools: inspect a missing file", plain("data", "inspect", "nosuch.h5"), ("nosuch.h5",)),
    Case("tools: import a missing view", pngs("missing view"), ("ev0_yz.png", "missing")),
    Case("tools: import mixed sizes", pngs("mixed sizes"), ("ev0_xz.png", "5x4")),
    Case("tools: import no class folders", pngs("no class folders"), ("class sub-folders",)),
    Case("tools: import a corrupt PNG", pngs("corrupt"), ("ev0_yz.png", "PNG")),
    Case("tools: import an empty folder", pngs("empty folder"), ("png",)),
]

INIT_AND_TRACKING = [
    *[Case(f"init ({verb}): {what}", init_case(verb, fixed, store), words)
      for verb in ("run", "train")
      for what, fixed, store, words in (
          ("offline hub weights", OFFLINE_HUB, False, ("hub:ResNet18_Weights.IMAGENET1K_V1", "offline")),
          ("an unknown hub name", UNKNOWN_HUB, False, ("resnet18.IMAGENET1K_V1", "timm")),
          ("a best-of of another architecture", MISMATCH, True, ("best-of:pretrain", "small_cnn_tiny")),
          ("a best-of of an unknown sweep", UNKNOWN_SWEEP, True, ("nosuch",)))],
    Case("tracking: a scheme typo", tracking("sqlit:///{work}/mlflow.db"), ("sqlit",)),
    Case("tracking: a folder that cannot be created", tracking("sqlite:////proc/scanner-nope/mlflow.db"),
         ("/proc/scanner-nope",)),
    Case("tracking: a folder that does not exist", tracking("sqlite:///{work}/nodir/mlflow.db"), ("nodir",)),
]

CASES = YAML + VALUES + data_cases("run") + data_cases("train") + CLI + DATA_TOOLS + INIT_AND_TRACKING


# --------------------------------------------------------------------------------------------- the tests


@pytest.fixture
def inputs(cli_h5, pretrained, tmp_path, monkeypatch) -> Inputs:
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch_home"))  # no cached hub weights
    monkeypatch.setenv("HTTPS_PROXY", f"http://127.0.0.1:{free_port()}")  # offline: the proxy does not answer
    yield Inputs(cli_h5, pretrained)
    while _LISTENERS:
        _LISTENERS.pop().close()


def test_there_are_at_least_the_79_cases_of_the_study():
    assert len(CASES) >= 79 and len({c.id for c in CASES}) == len(CASES)


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_bad_input_is_one_line_exit_2_and_leaves_nothing(case, inputs, tmp_path, monkeypatch, capfd):
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    argv = case.prepare(work, inputs)
    before = folder_listing(work)
    capfd.readouterr()
    code = run_cli(argv)
    err = capfd.readouterr().err
    lines = [line for line in err.splitlines() if line.strip()]
    assert code == 2 and len(lines) == 1, f"exit {code}, stderr:\n{err}"
    for word in case.words:
        assert word in lines[0], (word, lines[0])
    assert folder_listing(work) == before, sorted(folder_listing(work) - before)


def test_nan_pixels_in_a_middle_event_stop_training_naming_the_event(inputs, tmp_path, monkeypatch, capfd):
    """The cheap checks read the first and last events only; the batch that holds the NaN names file and event.
    The run had started: MLflow keeps it, FAILED with that reason; no folder is left."""
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    h5_case("train", **arrays(n=120, nan_at=57, size=16))(work, inputs)
    before = folder_listing(work)
    capfd.readouterr()
    code = run_cli(["train", "space.yaml", "--epochs", "1"])
    err = capfd.readouterr().err
    lines = [line for line in err.splitlines() if line.strip()]
    assert code == 2 and len(lines) == 1, f"exit {code}, stderr:\n{err}"
    assert "events.h5" in lines[0] and "57" in lines[0], lines[0]
    left = folder_listing(work) - before
    assert not [p for p in left if not p.startswith(("mlflow.db", "mlruns"))], sorted(left)
    client = MlflowClient(f"sqlite:///{work / 'mlflow.db'}")
    runs = client.search_runs([e.experiment_id for e in client.search_experiments()])
    assert runs and all(r.info.status == "FAILED" and "57" in r.data.tags["scan.failure"] for r in runs)
