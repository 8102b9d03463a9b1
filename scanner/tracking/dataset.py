"""The events file as an MLflow dataset input: where it is, its content hash and its shape, shown on the run's
"Datasets used" panel and searchable as ``datasets.digest``.

    client.log_inputs(run_id, [dataset_input(events, data_hash(events.path))])
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from mlflow.data.dataset_source_registry import get_dataset_source_from_json
from mlflow.data.meta_dataset import MetaDataset
from mlflow.entities import Dataset, DatasetInput, InputTag
from mlflow.types import Schema, TensorSpec
from mlflow.utils.mlflow_tags import MLFLOW_DATASET_CONTEXT

if TYPE_CHECKING:
    from trainables.data import EventFile

LOCAL_FILE = "local"  # MLflow's source type of a file on this machine's (or the cluster's shared) file system


def dataset_input(events: "EventFile", digest: str, context: str = "training") -> DatasetInput:
    """``events`` (an opened, validated file) as a dataset input of a run; ``digest`` is its content hash."""
    c, h, w = events.image_shape
    specs = [TensorSpec(np.dtype(events.dtype), (-1, c, h, w), "images")]
    if events.class_names is not None:
        specs.append(TensorSpec(np.dtype(np.int64), (-1,), "labels"))
    if events.target_names is not None:
        specs.append(TensorSpec(np.dtype(np.float32), (-1, len(events.target_names)), "targets"))
    source = get_dataset_source_from_json(json.dumps({"uri": str(events.path)}), LOCAL_FILE)
    meta = MetaDataset(source, name=Path(events.path).name, digest=digest, schema=Schema(specs)).to_dict()
    profile = {"events": events.n_events, "image_shape": [c, h, w], "dtype": events.dtype,
               "splits": {name: int(len(idx)) for name, idx in events.split_indices.items()}}
    if events.class_names is not None:
        profile["class_names"] = list(events.class_names)
    if events.target_names is not None:
        profile["target_names"] = list(events.target_names)
    dataset = Dataset(name=meta["name"], digest=meta["digest"], source_type=meta["source_type"],
                      source=meta["source"], schema=meta.get("schema"), profile=json.dumps(profile))
    return DatasetInput(dataset, tags=[InputTag(MLFLOW_DATASET_CONTEXT, context)])
