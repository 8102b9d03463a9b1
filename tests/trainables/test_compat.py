"""Each private torch/torchvision API of trainables/compat.py, pinned: what we rely on, checked against the public
behaviour it must match. A library update that changes one fails here, by name."""

from __future__ import annotations

import pickle
from multiprocessing.reduction import ForkingPickler

import pytest
import torch
from torch.optim.lr_scheduler import LambdaLR
from torchvision.models.mobilenetv3 import InvertedResidualConfig, MobileNetV3

from trainables.compat import foreach_lerp_, mobilenet_v3_blocks, set_last_lr, shared_empty


def test_set_last_lr_is_what_get_last_lr_and_the_state_dict_say():
    model = torch.nn.Linear(2, 2)
    optimizer = torch.optim.SGD([{"params": [model.weight]}, {"params": [model.bias], "lr": 0.5}], lr=0.1)
    scheduler = LambdaLR(optimizer, lambda step: 1.0)
    assert scheduler.get_last_lr() == [0.1, 0.5]
    set_last_lr(scheduler, [0.05, 0.25])
    assert scheduler.get_last_lr() == [0.05, 0.25]
    assert scheduler.state_dict()["_last_lr"] == [0.05, 0.25]  # what a checkpoint stores
    optimizer.step()
    scheduler.step()
    assert scheduler.get_last_lr() == [0.1, 0.5]  # the next step recomputes it from the lambdas, as before


def test_shared_empty_is_a_shared_writable_tensor_of_that_shape():
    tensor = shared_empty((3, 2, 4))
    assert tensor.is_shared() and tensor.shape == (3, 2, 4) and tensor.dtype == torch.float32
    assert tensor.is_contiguous() and tensor.untyped_storage().nbytes() == 3 * 2 * 4 * 4
    tensor.fill_(2.5)
    assert float(tensor.sum()) == pytest.approx(2.5 * 24)
    assert shared_empty((5,), torch.float64).dtype == torch.float64


def test_shared_empty_crosses_to_another_process_without_a_copy():
    """What default_collate relies on: torch's multiprocessing pickler sends the shared segment, not the bytes."""
    import torch.multiprocessing  # noqa: F401  registers torch's reductions with the pickler

    tensor = shared_empty((256, 256))
    payload = ForkingPickler.dumps(tensor)
    assert len(payload) < 1024 < tensor.numel() * 4  # a handle, not 256 KiB of data
    assert len(pickle.dumps(torch.empty(256, 256))) > tensor.numel() * 4  # a plain tensor pickles its bytes


def test_mobilenet_v3_blocks_are_torchvisions_settings_at_that_width():
    small = mobilenet_v3_blocks("mobilenet_v3_small", width_mult=1.0)
    assert len(small) == 11 and all(isinstance(b, InvertedResidualConfig) for b in small)
    assert [b.out_channels for b in small[:3]] == [16, 24, 24]  # the paper's table 2, first rows
    narrow = mobilenet_v3_blocks("mobilenet_v3_small", width_mult=0.25)
    assert [b.out_channels for b in narrow[:3]] == [8, 8, 8]  # scaled and rounded to multiples of 8
    model = MobileNetV3(narrow[:3], last_channel=64)
    assert model(torch.zeros(1, 3, 32, 32)).shape == (1, 1000)
    with pytest.raises(ValueError):
        mobilenet_v3_blocks("mobilenet_v3_medium", width_mult=1.0)


def test_foreach_lerp_matches_lerp_per_tensor():
    generator = torch.Generator().manual_seed(0)
    targets = [torch.randn(4, 3, generator=generator), torch.randn(7, generator=generator)]
    sources = [torch.randn(4, 3, generator=generator), torch.randn(7, generator=generator)]
    expected = [torch.lerp(t, s, 0.1) for t, s in zip(targets, sources)]
    foreach_lerp_(targets, sources, 0.1)
    for got, want in zip(targets, expected):
        torch.testing.assert_close(got, want)
