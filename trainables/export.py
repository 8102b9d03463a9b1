"""ONNX export of a trial's evaluated model, checked against PyTorch on real events before the file exists.

    trial = load_trial(checkpoint_dir)                                   # trainables.trial_model
    index, images = read_stored(trial.data, trial.task, "val", 256)      # raw validation images, float32
    result = export_trial(trial, images, Path("model.onnx"), opset=18, tolerance=1e-4,
                          metadata=onnx_metadata(trial, run_id="", git_sha=""))
    print(result.parity.max_abs_diff, result.parity.argmax_agreement)    # ParityRefused: nothing was written

The graph takes the images as stored, cast to float32 (N, C, H, W; N dynamic), divides by the file's pixel scale
and returns ``scores`` (softmax) or ``pred``: what the trial's ``predictions.h5`` holds. One self-contained file.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import torch
from onnxruntime.capi import onnxruntime_pybind11_state as ort_errors

from trainables.contract import EXPORT_ARGMAX_AGREEMENT, EXPORT_MAX_ABS_DIFF
from trainables.errors import BadInput
from trainables.files import atomic_output
from trainables.trial_model import StoredImagesModel, TrialModel

# torch 2.14 has two exporters. The TorchScript one (dynamo=False) warns that it is deprecated and will be removed;
# the default, torch.export-based one (dynamo=True) is the maintained path, and needs onnxscript (a declared
# dependency). Both gave max |diff| <= 3e-7 on every registry family here; the default one takes ~1-3 s per model.
EXPORTER = "torch.onnx.export(dynamo=True)"
# 18 is the lowest opset the dynamo exporter writes natively (a lower request is silently kept at 18), and the
# oldest, so the widest range of runtimes loads it (onnxruntime >= 1.14, 2023).
DEFAULT_OPSET = 18
OPSETS = range(18, 24)  # torch 2.14's exporter: 18 .. 23
INPUT_NAME = "images"
PARITY_BATCH = 64  # events per run in the parity check: bounded memory for resnet50 at 512x512 too
ANSI = re.compile(r"\x1b\[[0-9;]*m")  # the exporter colours its messages; a one-line error has no terminal codes
PROTOBUF_LIMIT = 2**31 - 1  # one protobuf message: beyond it ONNX needs an external-data side file


class ParityRefused(Exception):
    """The exported graph does not compute what the PyTorch model computes: exit 1, nothing written."""

    def __init__(self, parity: "Parity", tolerance: float):
        self.parity, self.tolerance = parity, tolerance
        super().__init__(f"max |Δ| {parity.max_abs_diff:.3g} > tolerance {tolerance:.3g} over {parity.events} "
                         f"events (argmax agreement {parity.agreement_text()}): export refused, nothing written")


@dataclass(frozen=True)
class Parity:
    max_abs_diff: float
    argmax_agreement: float | None  # classification only: the fraction of events with the same top class
    events: int

    def agreement_text(self) -> str:
        return "n/a (regression)" if self.argmax_agreement is None else f"{self.argmax_agreement:.4f}"

    def metrics(self) -> dict[str, float]:
        out = {EXPORT_MAX_ABS_DIFF: self.max_abs_diff}
        if self.argmax_agreement is not None:
            out[EXPORT_ARGMAX_AGREEMENT] = self.argmax_agreement
        return out


@dataclass(frozen=True)
class ExportResult:
    path: Path
    parity: Parity
    opset: int


def exporter_text() -> str:
    import onnxscript  # only for its version: the dynamo exporter imports it itself

    return f"{EXPORTER}, torch {torch.__version__}, onnxscript {onnxscript.__version__}, onnx {onnx.__version__}"


def onnx_metadata(trial: TrialModel, run_id: str, git_sha: str) -> dict[str, str]:
    """What a consumer needs, as ONNX ``metadata_props`` (JSON for lists)."""
    names_key = "class_names" if trial.task == "classification" else "target_names"
    output = ("softmax scores over class_names" if trial.task == "classification"
              else "the predicted targets, in target_names order, as predictions.h5 'pred' holds them")
    return {
        names_key: json.dumps(trial.output_names),
        "views": json.dumps(trial.views),
        "input_shape": json.dumps(list(trial.image_shape)),  # one event (C, H, W); the batch axis is dynamic
        "pixel_scale": repr(float(trial.pixel_scale)),
        "model": trial.name,
        "run_id": run_id or "",
        "git_sha": git_sha or "",
        "data_hash": trial.data_hash or "",
        "exporter": exporter_text(),
        "task": trial.task,
        "weights": trial.weights,
        "input": f"'{INPUT_NAME}': the images as stored in the HDF5 file, cast to float32, (N, C, H, W); "
                 "the graph divides by pixel_scale itself",
        "output": f"'{trial.output_name}': {output}",
    }


def check_opset(opset: int) -> None:
    if opset not in OPSETS:
        raise BadInput(f"--opset {opset}: torch {torch.__version__}'s exporter writes opsets "
                       f"{OPSETS.start}..{OPSETS.stop - 1}; fix: --opset {DEFAULT_OPSET} (the most widely loadable)")


def to_onnx(module: StoredImagesModel, example: torch.Tensor, opset: int, output_name: str,
            model_name: str) -> onnx.ModelProto:
    """The graph with a dynamic batch axis, at exactly ``opset``; BadInput (one line) when it cannot be made."""
    check_opset(opset)
    example = example if len(example) > 1 else example.repeat(2, 1, 1, 1)  # torch.export specialises a batch of 1
    try:
        program = torch.onnx.export(  # verbose=False: no progress lines of the exporter's own
            module.eval(), (example,), dynamo=True, opset_version=opset, verbose=False, optimize=True,
            input_names=[INPUT_NAME], output_names=[output_name],
            dynamic_shapes={"images": {0: torch.export.Dim("batch")}},
        )
    except torch.onnx.errors.OnnxExporterError as exc:
        raise BadInput(f"model '{model_name}' cannot be exported to ONNX (opset {opset}): "
                       f"{_first_line(_root_cause(exc))}") from exc
    proto = program.model_proto
    written = {o.domain: o.version for o in proto.opset_import}.get("", None)
    if written != opset:
        raise BadInput(f"model '{model_name}': asked for opset {opset}, the exporter wrote {written}; "
                       f"fix: --opset {written}")
    return proto


def _root_cause(exc: BaseException) -> BaseException:
    """The exporter wraps the reason (e.g. "No ONNX function found for aten.linalg_eig") in two layers of advice."""
    while exc.__cause__ is not None:
        exc = exc.__cause__
    return exc


def _first_line(exc: BaseException) -> str:
    lines = [ln.strip() for ln in ANSI.sub("", str(exc)).splitlines() if ln.strip()]
    return f"{type(exc).__name__}: {lines[0][:300] if lines else ''}"


def set_metadata(proto: onnx.ModelProto, metadata: dict[str, str]) -> None:
    del proto.metadata_props[:]
    onnx.helper.set_model_props(proto, metadata)


def session(model_bytes: bytes, model_name: str) -> ort.InferenceSession:
    options = ort.SessionOptions()
    options.log_severity_level = 3  # errors only: onnxruntime's warnings about unused initialisers are noise here
    try:
        return ort.InferenceSession(model_bytes, options, providers=["CPUExecutionProvider"])
    except (ort_errors.Fail, ort_errors.InvalidGraph, ort_errors.InvalidProtobuf, ort_errors.NotImplemented) as exc:
        raise BadInput(f"model '{model_name}': the exported graph does not load in onnxruntime "
                       f"{ort.__version__}: {_first_line(exc)}") from exc


def parity(model_bytes: bytes, module: StoredImagesModel, images: np.ndarray, model_name: str) -> Parity:
    """onnxruntime against PyTorch (float32, CPU) on ``images``, in chunks whose sizes include 1 (the dynamic axis)."""
    sess = session(model_bytes, model_name)
    module = module.eval().cpu()
    worst, same, n = 0.0, 0, len(images)
    with torch.inference_mode():
        for chunk in _chunks(n):
            batch = np.ascontiguousarray(images[chunk], dtype=np.float32)
            onnx_out = sess.run(None, {INPUT_NAME: batch})[0]
            torch_out = module(torch.from_numpy(batch)).numpy()
            worst = max(worst, float(np.max(np.abs(onnx_out.astype(np.float64) - torch_out))))
            same += int(np.sum(onnx_out.argmax(1) == torch_out.argmax(1)))
    agreement = same / n if module.task == "classification" else None
    return Parity(worst, agreement, n)


def _chunks(n: int) -> list[slice]:
    bounds = [0, min(1, n), *range(PARITY_BATCH, n, PARITY_BATCH), n]
    return [slice(a, b) for a, b in zip(bounds, bounds[1:]) if b > a]


def write_checked(proto: onnx.ModelProto, module: StoredImagesModel, images: np.ndarray, out: Path,
                  tolerance: float, model_name: str) -> Parity:
    """Check the bytes about to be written, then write them; ParityRefused leaves nothing behind."""
    if proto.ByteSize() > PROTOBUF_LIMIT:
        raise BadInput(f"model '{model_name}': {proto.ByteSize() / 2**30:.1f} GiB of weights do not fit one "
                       "self-contained ONNX file (2 GiB protobuf limit); fix: a smaller model")
    model_bytes = proto.SerializeToString()
    result = parity(model_bytes, module, images, model_name)
    if not result.max_abs_diff <= tolerance:  # NaN is refused too
        raise ParityRefused(result, tolerance)
    with atomic_output(out) as tmp:
        tmp.write_bytes(model_bytes)
    return result


def export_trial(trial: TrialModel, images: np.ndarray, out: Path, opset: int = DEFAULT_OPSET,
                 tolerance: float = 1e-4, metadata: dict[str, str] | None = None) -> ExportResult:
    """Export ``trial`` to ``out``, refused (ParityRefused) when max |Δ| on ``images`` exceeds ``tolerance``."""
    module = trial.stored_input_module()
    proto = to_onnx(module, torch.from_numpy(images[:2]), opset, trial.output_name, trial.name)
    set_metadata(proto, metadata if metadata is not None else onnx_metadata(trial, "", ""))
    result = write_checked(proto, module, images, Path(out), tolerance, trial.name)
    return ExportResult(Path(out), result, opset)
