"""The compact GPU path (issue 20), run on the CPU: ``TorchBackend.predict_packed``
gives exactly what the numpy path packs (mask crops, a line-field model's sparse
fields), and ``benchmarks/bench_gpu.py`` runs.

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
from temtrack.sdk.linefield import LineFieldSettings, SparseFields, extract_lines  # noqa: E402
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

    # Odd sizes: the network's input is padded and its fields cropped back.
    frames = np.stack([generate_sample(p, seed=s, size=(90, 100)).image for s, p in enumerate(("sd1", "sd2", "sd3"))])
    return TorchBackend.from_checkpoint(LINEFIELD, device="cpu", precision="fp32", batch_size=2), frames.astype(np.float32)


@pytest.fixture(scope="module")
def linefield_dense(linefield):
    """``predict``'s fields of the ``linefield`` frames (the same for every packing option)."""
    model, frames = linefield
    return model.predict(frames)


class SparseCase:
    """``predict_packed`` of a line-field model == ``SparseFields.pack`` of ``predict``'s
    fields (in ``field_dtype``, at the backend's ``field_low``): same indices, values
    and dtypes; and tracing them gives exactly the splines of those dense fields.
    Chunks of 2 frames with a short last chunk."""

    field_dtype = "float32"
    field_low = None

    @pytest.fixture(scope="class")
    @classmethod
    def both(cls, linefield, linefield_dense):
        model, frames = linefield
        backend = TorchBackend(model.model, model.config, device="cpu", precision="fp32", batch_size=2,
                               field_dtype=cls.field_dtype, field_low=cls.field_low)
        copy = frames.copy()
        got = backend.predict_packed(frames)
        np.testing.assert_array_equal(frames, copy)  # input not modified
        dense = [f.astype(cls.field_dtype) for f in linefield_dense]
        return backend, got, dense

    def test_same_indices_and_values_as_numpy_packing(self, both):
        backend, got, dense = both
        assert len(got) == len(dense) == 3
        for g, d in zip(got, dense):
            want = SparseFields.pack(d, low=backend.field_low)
            assert isinstance(g, SparseFields) and g.shape == want.shape == d.shape
            assert g.indices.dtype == np.int32 and g.values.dtype == want.values.dtype == np.dtype(self.field_dtype)
            np.testing.assert_array_equal(g.indices, want.indices)
            np.testing.assert_array_equal(g.values, want.values)
            assert 0 < len(g.indices) < d[0].size

    def test_traces_exactly_the_lines_of_the_dense_fields(self, both):
        backend, got, dense = both
        settings = LineFieldSettings(low=max(backend.field_low, 0.35))
        lines = 0
        for g, d in zip(got, dense):
            a, b = extract_lines(d, settings=settings), extract_lines(g, settings=settings)
            assert len(a.dislocations) == len(b.dislocations)
            for da, db in zip(a.dislocations, b.dislocations):
                np.testing.assert_array_equal(da.points, db.points)
            lines += len(a.dislocations)
        assert lines >= 5


class TestSparseFloat32(SparseCase):
    pass


class TestSparseFloat16(SparseCase):
    # float16 is an option, not the default: on 1 of 18 synthetic 256 px frames its
    # rounding changed the traced lines (module docstring of torch_backend); here the
    # float16 fields trace as their own dense form does.
    field_dtype = "float16"


class TestSparseLowerThreshold(SparseCase):
    field_low = 0.2


def test_field_low_follows_the_threshold_and_is_checked(linefield):
    model, _ = linefield
    assert model.field_low == LineFieldSettings.low  # threshold 0.5: the analyzer's low stays 0.35
    low = TorchBackend(model.model, model.config, device="cpu", threshold=0.3)
    assert low.field_low == 0.3 and low.describe()["field_low"] == 0.3
    with pytest.raises(ValueError, match=r"field_low must be None or in \(0, 1\), got 1.0"):
        TorchBackend(model.model, model.config, device="cpu", field_low=1.0)


def test_non_finite_fields_are_an_error_not_empty_fields(linefield):
    import copy

    model, frames = linefield
    broken = copy.deepcopy(model.model)
    with torch.no_grad():
        broken.segmentation_head[0].bias[1] = float("nan")  # the direction channel
    backend = TorchBackend(broken, model.config, device="cpu", precision="fp32")
    with pytest.raises(ValueError, match=r"NaN or infinite values \(9000 of 27000\) for frame 0"):
        backend.predict_packed(frames[:1])


@pytest.mark.parametrize(("low", "packed"), [(0.35, True), (0.5, True), (0.3, False)])
def test_the_main_job_takes_sparse_fields_only_when_cut_low_enough(linefield, monkeypatch, low, packed):
    """The analyzer traces the backend's sparse fields when they were cut at or below
    its ``low``, else the dense fields of ``predict`` (as crops cut at another threshold
    than the one asked for are not used)."""
    from temtrack.sdk.analyzer import Analyzer

    model, frames = linefield
    backend = TorchBackend(model.model, model.config, device="cpu", precision="fp32")
    calls = []
    for name in ("predict", "predict_packed"):
        method = getattr(backend, name)
        monkeypatch.setattr(backend, name, lambda f, method=method, name=name: calls.append(name) or method(f))
    settings = LineFieldSettings(high=0.6, low=low)
    results = list(Analyzer(backend=backend, postprocess=settings, workers=0, annotations=False).stream(list(frames)))
    assert len(results) == 3
    assert set(calls) == {"predict_packed" if packed else "predict"}


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


def test_bench_gpu_counts_the_bytes_shipped_per_frame(linefield):
    # The line-field row of bench_gpu.py (its subprocess run above takes the multi-label
    # network only, to stay within a minute).
    import importlib.util

    spec = importlib.util.spec_from_file_location("bench_gpu", BENCH)
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    model, frames = linefield
    dense, sparse, kept = bench.shipped_bytes(model, frames)
    assert dense > frames[0].size * 3 * 4  # float32 planes, plus pickling's header
    assert 0 < kept < 1 and sparse < dense


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA: bench_gpu.py would measure, not skip")
def test_bench_gpu_without_cuda_skips_with_a_reason():
    run = subprocess.run([sys.executable, str(BENCH)], capture_output=True, text=True, timeout=60, cwd=REPO)
    assert run.returncode == 0
    assert "skipped" in run.stdout and "no CUDA" in run.stdout
