"""A lazy torch Dataset over the HDF5 schema, and the DataLoader the training loop uses.

h5py handles must not cross a fork, so each process opens the file on its first read (the pid is remembered).
Labels, targets and weights of the split are a few bytes per event and are read once; images are read per batch,
one raw chunk read + zlib per event when the layout allows (h5py's filter pipeline costs ~1.5x more).
"""

from __future__ import annotations

import os
import zlib

import h5py
import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Sampler, default_collate, get_worker_info

from trainables.compat import shared_empty
from trainables.config import DataConfig
from trainables.data.schema import SPLITS, EventFile, open_events, open_h5
from trainables.errors import BadInput, NonFiniteInput

PREFETCH_BATCHES = 4  # per worker: hides a slow read behind a few batches of compute
RDCC_BYTES = 4 << 20  # h5py chunk cache per file: one event per chunk, so a small cache is enough


class _Batch(list):
    """A list of samples that also carries them stacked, so collate costs nothing (default_collate still works)."""

    stacked: tuple


class H5Events(Dataset):
    """Events of one split: ``(image float32 (C, H, W), y, weight float32 scalar)``.

    ``y`` is the int64 label index into ``class_names`` (original indices, also after ``select``) for
    classification, float32 (K,) targets for regression."""

    def __init__(self, cfg: DataConfig, task: str, split: str, events: EventFile | None = None):
        if split not in SPLITS:
            raise BadInput(f"{cfg.path}: split '{split}'; expected one of {', '.join(SPLITS)}")
        self.cfg, self.task, self.split = cfg, task, split
        self.events = events if events is not None else open_events(cfg, task)
        self.indices = np.asarray(self.events.split_indices[split], dtype=np.int64)
        self.scale = np.float32(1.0 / self.events.pixel_scale)
        self._y, self._w = self._read_small()
        self._file = self._images = self._raw_chunks = None
        self._pid = None
        self._cache = None
        self._cache = self._read_all_images() if cfg.cache else None

    def __len__(self) -> int:
        return len(self.indices)

    def _read_small(self) -> tuple[torch.Tensor, torch.Tensor]:
        with open_h5(self.cfg.path) as f:
            if self.task == "classification":
                y = torch.from_numpy(f[self.cfg.labels][:][self.indices].astype(np.int64))
            else:
                y = torch.from_numpy(f[self.cfg.targets][:][self.indices].astype(np.float32))
            if self.events.has_weights:
                w = torch.from_numpy(f[self.cfg.weights][:][self.indices].astype(np.float32))
            else:
                w = torch.ones(len(self.indices), dtype=torch.float32)
        return y, w

    def _read_all_images(self) -> np.ndarray:
        """This split's images, as stored (float16 stays float16: half the RAM), read event by event."""
        images = self._read(np.arange(len(self.indices)))
        self._file.close()  # workers get the cache, not a handle
        self._file = self._images = self._pid = None
        return images

    def open(self) -> None:
        """Open the file in this process (a DataLoader worker, or the main process on first use)."""
    
        self._file = h5py.File(self.cfg.path, "r", rdcc_nbytes=RDCC_BYTES)
        self._images = self._file[self.cfg.images]
        self._raw_chunks = raw_chunk_mode(self._images)
        self._pid = os.getpid()

    def __getstate__(self):
        state = dict(self.__dict__)
        state["_file"] = state["_images"] = state["_pid"] = None  # h5py handles do not pickle or cross a fork
        return state

    def _read(self, positions: np.ndarray) -> np.ndarray:
        """Images of ``positions`` (into this split), in that order, as stored dtype; checked finite."""
        if self._cache is not None:
            return self._check_finite(self._cache[positions], positions)
        if self._pid != os.getpid():
            self.open()
        out = np.empty((len(positions), *self.events.image_shape), dtype=self._images.dtype)
        file_idx = self.indices[positions]
        for k in np.argsort(file_idx, kind="stable"):  # ascending: the file is read front to back
            out[k] = self._read_event(int(file_idx[k]))
        return self._check_finite(out, positions)

    def _check_finite(self, images: np.ndarray, positions: np.ndarray) -> np.ndarray:
        """A NaN/inf pixel would surface epochs later as a diverged loss: name the file and event now. One
        vectorised pass per batch, cheap beside the decompression (integer images cannot hold one)."""
        if not np.issubdtype(images.dtype, np.floating) or np.isfinite(images).all():
            return images
        bad = np.flatnonzero(~np.isfinite(images.reshape(len(images), -1)).all(axis=1))
        event = int(self.indices[positions[bad[0]]])
        raise NonFiniteInput(f"{self.cfg.path}: event {event} of dataset '{self.cfg.images}' has NaN/inf pixels; "
                             "the trial stops here (its loss would turn NaN); fix: drop or zero that event "
                             "(`scanner data inspect` lists every such event)")

    def _read_event(self, i: int) -> np.ndarray:
        if self._raw_chunks:
            mask, raw = self._images.id.read_direct_chunk((i, 0, 0, 0))
            if mask == 0:  # every filter of the pipeline was applied to this chunk
                data = zlib.decompress(raw) if self._raw_chunks == "deflate" else raw
                return np.frombuffer(data, self._images.dtype).reshape(self.events.image_shape)
        return self._images[i]

    def _to_tensor(self, images: np.ndarray) -> torch.Tensor:
        out = _shared_float32(images.shape) if get_worker_info() is not None else torch.empty(images.shape)
        return out.copy_(torch.from_numpy(images)).mul_(float(self.scale))

    def __getitem__(self, i: int):
        image = self._to_tensor(self._read(np.array([i]))[0])
        return image, self._y[i], self._w[i]

    def __getitems__(self, positions) -> _Batch:
        positions = np.asarray(positions, dtype=np.int64)
        images = self._to_tensor(self._read(positions))
        pos = torch.from_numpy(positions)
        y, w = self._y[pos], self._w[pos]
        batch = _Batch((images[k], y[k], w[k]) for k in range(len(positions)))
        batch.stacked = (images, y, w)
        return batch


def _shared_float32(shape) -> torch.Tensor:
    """A float32 tensor in shared memory, as default_collate makes in workers: handing it to the main process
    costs no copy, and a worker's heap does not grow (fragment) with a copy per batch."""
    return shared_empty(tuple(int(n) for n in shape), torch.float32)


def raw_chunk_mode(ds) -> str | None:
    """"deflate"/"none" when each event is one chunk behind at most a deflate filter: then a raw chunk read plus
    zlib is ~1.5x faster than h5py's filter pipeline. None: read through h5py."""
    if ds.chunks != (1, *ds.shape[1:]):
        return None
    plist = ds.id.get_create_plist()
    filters = [plist.get_filter(i)[0] for i in range(plist.get_nfilters())]
    return {(): "none", (1,): "deflate"}.get(tuple(filters))  # 1 = H5Z_FILTER_DEFLATE


def collate(batch):
    return batch.stacked if isinstance(batch, _Batch) else default_collate(batch)


class SeededBatches(Sampler):
    """Batches of positions; a fresh seeded permutation per epoch when shuffling. A trailing batch of one sample
    is dropped when shuffling: BatchNorm cannot train on it (ResNets end at 1x1 on small images)."""

    def __init__(self, n: int, batch_size: int, shuffle: bool, seed: int):
        self.n, self.batch_size, self.shuffle = n, int(batch_size), shuffle
        self.generator = torch.Generator().manual_seed(int(seed))

    def _order(self) -> np.ndarray:
        if self.shuffle:
            return torch.randperm(self.n, generator=self.generator).numpy()
        return np.arange(self.n)

    def __iter__(self):
        order = self._order()
        for start in range(0, self.n, self.batch_size):
            batch = order[start:start + self.batch_size]
            if self.shuffle and len(batch) == 1 and self.n > 1:
                return
            yield batch.tolist()

    def __len__(self) -> int:
        full, rest = divmod(self.n, self.batch_size)
        return full + (1 if rest and not (self.shuffle and rest == 1 and self.n > 1) else 0)


def _open_in_worker(worker_id: int) -> None:
    info = get_worker_info()
    if info is not None and isinstance(info.dataset, H5Events):
        info.dataset.open()


def make_loader(cfg: DataConfig, task: str, split: str, batch_size: int, num_workers: int, shuffle: bool,
                seed: int, events: EventFile | None = None) -> DataLoader:
    """A DataLoader over one split: seeded order, h5py opened per worker, batches read in one call each."""
    dataset = H5Events(cfg, task, split, events)
    workers = int(num_workers) if len(dataset) else 0
    return DataLoader(
        dataset,
        batch_sampler=SeededBatches(len(dataset), batch_size, shuffle, seed),
        num_workers=workers,
        collate_fn=collate,
        pin_memory=torch.cuda.is_available(),  # pinned host memory only pays off for a GPU copy
        worker_init_fn=_open_in_worker,
        persistent_workers=workers > 0,  # no re-fork and re-open of the file every epoch
        prefetch_factor=PREFETCH_BATCHES if workers > 0 else None,
        generator=torch.Generator().manual_seed(int(seed)),  # worker seeds follow the trial seed
    )
