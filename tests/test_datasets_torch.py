"""The on-the-fly torch dataset (skipped where torch is not installed)."""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch", reason="torch is not installed (pip install -e '.[train]')")

from torch.utils.data import DataLoader  # noqa: E402

from temtrack.training.datasets import SyntheticDataset  # noqa: E402
from temtrack.training.synth import generate_sample, validate_config, get_preset  # noqa: E402
from temtrack.training.synth.storage import sample_seed  # noqa: E402


def config():
    data = get_preset("sd3").model_dump()
    data["size"] = (64, 64)
    data["pileups"]["slip_width"] = (20.0, 40.0)
    return validate_config(data)


def test_items_match_the_generator_and_pad_masks():
    dataset = SyntheticDataset(config(), seed=3, max_masks=20, length=2)
    item = dataset.item(1)
    sample = generate_sample(config(), sample_seed(3, 1))
    assert item["image"].shape == (1, 64, 64) and item["masks"].shape == (20, 64, 64)
    n = int(item["count"])
    assert n == len(sample.masks)
    np.testing.assert_array_equal(item["image"][0].numpy(), sample.image)
    np.testing.assert_array_equal(item["masks"][:n].numpy(), sample.masks)
    assert not item["masks"][n:].any()


def test_workers_get_distinct_samples_and_the_same_stream():
    dataset = SyntheticDataset(config(), seed=7, max_masks=4, length=8)
    serial = {int(b["index"]): b["image"] for b in DataLoader(dataset, batch_size=None, num_workers=0)}
    parallel = {int(b["index"]): b["image"] for b in DataLoader(dataset, batch_size=None, num_workers=2)}
    assert sorted(serial) == sorted(parallel) == list(range(8))
    for index in serial:
        assert torch.equal(serial[index], parallel[index])
    assert len({tuple(img.flatten()[:50].tolist()) for img in serial.values()}) == 8


def test_max_masks_keeps_the_largest():
    dataset = SyntheticDataset(config(), seed=0, max_masks=1)
    for index in range(10):
        item = dataset.item(index)
        sample = generate_sample(config(), sample_seed(0, index))
        if len(sample.masks) > 1:
            sizes = sample.masks.reshape(len(sample.masks), -1).sum(axis=1)
            assert int(item["masks"][0].sum()) == sizes.max()
            return
    pytest.fail("no sample with more than one dislocation in 10 tries")
