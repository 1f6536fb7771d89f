"""The compact GPU path (issue 20), run on the CPU: ``TorchBackend.predict_packed``
gives exactly what the numpy path packs, and ``benchmarks/bench_gpu.py`` runs.

Nothing here is measured on or verified for a GPU: the same code runs synchronously on
the CPU (no pinned buffers, no streams); ``bench_gpu.py`` on a CUDA machine measures it.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from temtrack.sdk.backends.contract import PackedMasks  # noqa: E402
from temtrack.sdk.linefield import extract_lines  # noqa: E402
from temtrack.training.model import ModelConfig, build_model  # noqa: E402
from temtrack.training.torch_backend import TorchBackend, logit_threshold  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
BENCH = REPO / "benchmarks" / "bench_gpu.py"
LINEFIELD = REPO / "models" / "tem-track-linefield-cpu.pt"
THRESHOLD = 0.3  # not a binary fraction: float32 vs float64 comparison would show


def _network(frames: np.ndarray):
    """A small multi-label U-Net (N = 4) with random weights, its output biases set so
    that on ``frames`` mask 0 is empty, mask 1 has a few pixels (small boxes, empty on
    some frames), mask 2 half the frame and mask 3 a few % of it."""
    torch.manual_seed(0)
    config = ModelConfig(family="multilabel", architecture="unet", encoder="resnet18", n_masks=4,
                         decoder_channels=(16, 16, 16, 16, 16))
    model = build_model(config).eval()
    padded = np.pad(frames, ((0, 0), (0, -frames.shape[1] % 32), (0, -frames.shape[2] % 32)), mode="median")
    with torch.no_grad():
        raw = model(torch.from_numpy(padded)[:, None]).numpy()[:, :, : frames.shape[1], : frames.shape[2]]
        bias = model.segmentation_head[0].bias
        for k, share in enumerate((None, 0.999, 0.5, 0.97)):
            bias[k] += -1e3 if share is None else logit_threshold(THRESHOLD) - float(np.quantile(raw[:, k], share))
    return model, config


class PackedCase:
    """``predict_packed`` == ``PackedMasks.pack(predict(...))`` for one output kind;
    frames of a size that needs padding, in chunks of 2 with a short last chunk."""

    output = "probabilities"
    shape = (5, 50, 70)

    @pytest.fixture(scope="class")
    @classmethod
    def both(cls):
        frames = np.random.default_rng(0).random(cls.shape, dtype=np.float32)
        model, config = _network(frames)
        backend = TorchBackend(model, config, device="cpu", precision="fp32", threshold=THRESHOLD, batch_size=2,
                               output=cls.output)
        copy = frames.copy()
        got = backend.predict_packed(frames)
        np.testing.assert_array_equal(frames, copy)  # input not modified
        want = [PackedMasks.pack(masks, backend.threshold) for masks in backend.predict(frames)]
        return got, want

    def test_same_masks_boxes_and_pixels(self, both):
        got, want = both
        assert len(got) == len(want) == self.shape[0]
        for g, w in zip(got, want):
            assert isinstance(g, PackedMasks)
            assert g.shape == w.shape and g.dtype == w.dtype
            assert g.indices.dtype == w.indices.dtype == np.int64 and g.boxes.dtype == np.int64
            np.testing.assert_array_equal(g.indices, w.indices)
            np.testing.assert_array_equal(g.boxes, w.boxes)
            assert len(g.crops) == len(w.crops)
            for a, b in zip(g.crops, w.crops):
                assert a.dtype == b.dtype and a.shape == b.shape
                np.testing.assert_array_equal(a, b)

    def test_the_fixture_holds_empty_and_full_masks(self, both):
        got, _ = both
        indices = [set(p.indices.tolist()) for p in got]
        assert all(0 not in i and 2 in i for i in indices)  # mask 0 never, mask 2 always
        areas = [c.size for p in got for c in p.crops]
        assert min(areas) < 0.05 * self.shape[1] * self.shape[2]  # some small boxes


class TestPackedProbabilities(PackedCase):
    output = "probabilities"


class TestPackedMasks(PackedCase):
    output = "masks"


class TestPackedNoPadding(PackedCase):
    shape = (3, 64, 64)


def test_packed_on_no_frames_and_bad_input():
    frames = np.zeros((2, 32, 32), np.float32)
    model, config = _network(frames)
    backend = TorchBackend(model, config, device="cpu", precision="fp32", threshold=THRESHOLD)
    assert backend.predict_packed(np.zeros((0, 32, 32), np.float32)) == []
    with pytest.raises(ValueError, match=r"\(B, H, W\)"):
        backend.predict_packed(np.zeros((32, 32), np.float32))
    with pytest.raises(ValueError, match="cuda_graphs"):
        TorchBackend(model, config, device="cpu", cuda_graphs=True)
    with pytest.raises(ValueError, match="field_dtype"):
        TorchBackend(model, config, device="cpu", field_dtype="bfloat16")


@pytest.fixture(scope="module")
def linefield():
    if not LINEFIELD.exists():
        pytest.skip(f"the bundled line-field checkpoint {LINEFIELD} is missing")
    from temtrack.training.synth import generate_sample

    frames = np.stack([generate_sample(p, seed=s, size=96).image for s, p in enumerate(("sd1", "sd2"))])
    return TorchBackend.from_checkpoint(LINEFIELD, device="cpu", precision="fp32", batch_size=1), frames.astype(np.float32)


def test_linefield_packed_float32_traces_exactly_the_same_lines(linefield):
    backend, frames = linefield
    want, got = backend.predict(frames), backend.predict_packed(frames)
    for w, g in zip(want, got):
        assert g.dtype == np.float32
        np.testing.assert_array_equal(g, w)
        a, b = extract_lines(w), extract_lines(g)
        assert len(a.dislocations) == len(b.dislocations)
        for da, db in zip(a.dislocations, b.dislocations):
            np.testing.assert_array_equal(da.points, db.points)


def test_linefield_packed_float16_rounds_fields_by_at_most_2e4(linefield):
    # float16 is an option, not the default: on 1 of 18 synthetic 256 px frames its
    # rounding changed the traced lines (module docstring of torch_backend).
    model, frames = linefield
    backend = TorchBackend(model.model, model.config, device="cpu", precision="fp32", field_dtype="float16")
    for w, g in zip(model.predict(frames), backend.predict_packed(frames)):
        assert g.dtype == np.float16 and g.shape == w.shape
        np.testing.assert_allclose(g.astype(np.float32), w, rtol=0, atol=2.5e-4)


def test_bench_gpu_quick_on_the_cpu_prints_the_table():
    # One network keeps it under a minute on 2 busy cores; the line-field path of
    # predict_packed is checked above.
    run = subprocess.run([sys.executable, str(BENCH), "--device", "cpu", "--quick", "--networks", "multilabel"],
                         capture_output=True, text=True, timeout=60, cwd=REPO)
    assert run.returncode == 0, run.stderr[-2000:]
    out = run.stdout
    assert "CPU figures, not GPU ones" in out
    for row in ("matmul", "model FLOPs per frame", "model-only fps, batch 1", "backend predict_packed fps",
                "end-to-end fps", "training img/s", "step: backward", "training data items/s"):
        assert row in out, f"{row!r} missing from:\n{out}"
    assert out.count("predict_packed fps") == 1


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA: bench_gpu.py would measure, not skip")
def test_bench_gpu_without_cuda_skips_with_a_reason():
    run = subprocess.run([sys.executable, str(BENCH)], capture_output=True, text=True, timeout=60, cwd=REPO)
    assert run.returncode == 0
    assert "skipped" in run.stdout and "no CUDA" in run.stdout
