"""Sparse line fields (issue 20): only the pixels the tracing reads, and exactly the
same splines as the dense fields. No torch: the torch packing is checked against
``SparseFields.pack`` in test_gpu_path.py.

Known answers: hand-made fields for the kept pixels and the errors; generator frames
through the bundled line-field ONNX model (and the generator's own perfect fields, for
the line-end channel) for the tracing, where identity is checked with
``np.array_equal``, no tolerance.
"""

from __future__ import annotations

import pickle

import numpy as np
import pytest

from temtrack.sdk.linefield import FIELD_REACH, LineFieldSettings, SparseFields, extract_lines, kept_pixels
from temtrack.sdk.models import default_model
from temtrack.training.synth import generate_sample
from temtrack.training.synth.targets import line_targets

LOW = LineFieldSettings().low


def _one_pixel(shape=(3, 6, 7), at=(2, 3), value=0.9) -> np.ndarray:
    fields = np.zeros(shape, np.float32)
    fields[(0, *at)] = value
    return fields


@pytest.fixture(scope="module")
def model_fields() -> list[np.ndarray]:
    """The bundled line-field model's fields on one 128² frame of each preset."""
    from temtrack.sdk.backends import get_backend

    backend = get_backend(str(default_model()))
    if getattr(backend, "family", None) != "linefield":
        pytest.skip("the bundled default model is not a line-field model")
    images = np.stack([generate_sample(p, seed=300 + k, size=128).image for k, p in enumerate(("sd1", "sd2", "sd3"))])
    return [np.ascontiguousarray(f) for f in backend.predict(images.astype(np.float32))]


def _same_lines(dense, sparse, **options) -> int:
    """Assert identical dislocations (points, score, pixels) from both; their number."""
    a, b = extract_lines(dense, **options), extract_lines(sparse, **options)
    assert len(a.dislocations) == len(b.dislocations)
    for x, y in zip(a.dislocations, b.dislocations):
        assert np.array_equal(x.points, y.points)
        assert x.score == y.score and x.box == y.box and np.array_equal(x.pixels, y.pixels)
    return len(a.dislocations)


# --- packing by hand -------------------------------------------------------------------


def test_one_pixel_keeps_its_window_and_corners_are_cut_by_the_frame():
    fields = _one_pixel()
    sparse = SparseFields.pack(fields, low=LOW)
    rows, cols = np.divmod(sparse.indices, 7)
    assert set(zip(rows.tolist(), cols.tolist())) == {(r, c) for r in (1, 2, 3) for c in (2, 3, 4)}
    assert sparse.indices.dtype == np.int32 and sparse.values.dtype == np.float32
    assert sparse.values.shape == (3, 9) and sparse.shape == (3, 6, 7)
    corner = SparseFields.pack(_one_pixel(at=(0, 6)), low=LOW)
    assert corner.indices.tolist() == [5, 6, 12, 13]
    assert FIELD_REACH == 1  # the 3 x 3 window above


def test_the_threshold_is_inclusive_in_float32():
    at_low = _one_pixel(value=np.float32(LOW))
    below = _one_pixel(value=np.nextafter(np.float32(LOW), np.float32(0)))
    assert len(SparseFields.pack(at_low, low=LOW).indices) == 9
    assert len(SparseFields.pack(below, low=LOW).indices) == 0
    assert kept_pixels(at_low[0], low=LOW).sum() == 9


def test_dense_gives_the_fields_on_kept_pixels_and_zero_elsewhere():
    rng = np.random.default_rng(1)
    fields = np.concatenate([rng.random((1, 20, 30)), rng.uniform(-1, 1, (3, 20, 30))]).astype(np.float32)
    copy = fields.copy()
    sparse = SparseFields.pack(fields, low=0.9)
    np.testing.assert_array_equal(fields, copy)  # input not modified
    kept = kept_pixels(fields[0], low=0.9)
    assert 0 < kept.sum() < kept.size
    dense = sparse.dense()
    assert dense.dtype == np.float32 and dense.shape == fields.shape
    np.testing.assert_array_equal(dense[:, kept], fields[:, kept])
    assert not dense[:, ~kept].any()


def test_float16_fields_stay_float16_and_other_floats_become_float32():
    fields = _one_pixel()
    assert SparseFields.pack(fields.astype(np.float16), low=LOW).values.dtype == np.float16
    assert SparseFields.pack(fields.astype(np.float64), low=LOW).values.dtype == np.float32


def test_empty_fields_and_pickling():
    empty = SparseFields.pack(np.zeros((3, 8, 8), np.float32), low=LOW)
    assert len(empty.indices) == 0 and empty.values.shape == (3, 0) and not empty.dense().any()
    assert extract_lines(empty).dislocations == ()
    sparse = SparseFields.pack(_one_pixel(), low=LOW)
    back = pickle.loads(pickle.dumps(sparse))
    assert back.shape == sparse.shape
    np.testing.assert_array_equal(back.indices, sparse.indices)
    np.testing.assert_array_equal(back.values, sparse.values)


@pytest.mark.parametrize(
    ("change", "error", "match"),
    [
        (dict(shape=(3, 6)), ValueError, r"shape must be \(C >= 3, H, W\)"),
        (dict(shape=(2, 6, 7)), ValueError, r"shape must be \(C >= 3, H, W\)"),
        (dict(indices=np.array([-1, 0, 1], np.int32)), ValueError, r"indices must lie in \[0, H \* W\) = \[0, 42\).*\[-1, 1\]"),
        (dict(indices=np.array([0, 1, 42], np.int32)), ValueError, r"indices must lie in .*\[0, 42\]"),
        (dict(indices=np.array([0, 2, 1], np.int32)), ValueError, "strictly increasing"),
        (dict(indices=np.array([0, 1, 1], np.int32)), ValueError, "strictly increasing"),
        (dict(indices=np.array([0.0, 1.0, 2.0])), TypeError, "indices must be a 1-D integer ndarray"),
        (dict(indices=[0, 1, 2]), TypeError, "indices must be a 1-D integer ndarray, got list"),
        (dict(values=np.zeros((3, 2), np.float32)), ValueError, r"values must have shape \(C, K\) = \(3, 3\)"),
        (dict(values=np.zeros((3, 3))), TypeError, "float32 or float16.*float64"),
        (dict(values=np.full((3, 3), np.nan, np.float32)), ValueError, "NaN"),
        (dict(values=np.full((3, 3), 1.5, np.float32)), ValueError, r"centre map must lie in \[0, 1\]"),
    ],
)
def test_bad_sparse_fields_are_named(change, error, match):
    good = dict(shape=(3, 6, 7), indices=np.array([0, 1, 2], np.int32), values=np.zeros((3, 3), np.float32))
    with pytest.raises(error, match=match):
        SparseFields(**{**good, **change})


def test_bad_input_to_pack_is_named():
    with pytest.raises(TypeError, match="numpy array"):
        SparseFields.pack([[0.0]], low=LOW)
    with pytest.raises(ValueError, match=r"\(C >= 3, H, W\).*\(6, 7\)"):
        SparseFields.pack(np.zeros((6, 7), np.float32), low=LOW)
    with pytest.raises(TypeError, match="floating point"):
        SparseFields.pack(np.zeros((3, 6, 7), np.uint8), low=LOW)
    with pytest.raises(ValueError, match=r"low must be in \(0, 1\), got 1.5"):
        SparseFields.pack(np.zeros((3, 6, 7), np.float32), low=1.5)


# --- the same splines -------------------------------------------------------------------

VARIANTS = {
    "default": LineFieldSettings(),
    "low thresholds": LineFieldSettings(high=0.5, low=0.25),
    "high thresholds, no trim": LineFieldSettings(high=0.9, low=0.6, trim=0.0),
    "no turn cuts, no border": LineFieldSettings(max_turn=180.0, border=0.0),
    "direction from the model's channels": LineFieldSettings(direction_sigma=0.0),
}


@pytest.mark.parametrize("name", list(VARIANTS))
def test_model_fields_trace_to_identical_splines(model_fields, name):
    settings = VARIANTS[name]
    lines = 0
    for fields in model_fields:
        sparse = SparseFields.pack(fields, low=settings.low)
        for valid in (None, (10, 121, 3, 108)):
            lines += _same_lines(fields, sparse, settings=settings, valid=valid)
    assert lines >= 10  # the frames hold lines to compare


def test_packing_at_a_lower_threshold_traces_the_same_splines(model_fields):
    lines = sum(_same_lines(f, SparseFields.pack(f, low=0.2)) for f in model_fields)
    assert lines >= 5


def test_without_the_window_the_splines_change(model_fields):
    """The test above can fail: keeping only the pixels above ``low`` (no neighbours
    for the suppression's bilinear samples) moves the splines."""
    changed = 0
    for fields in model_fields:
        core = np.flatnonzero(fields[0] >= np.float32(LOW)).astype(np.int32)
        bare = SparseFields(fields.shape, core, np.take(fields.reshape(len(fields), -1), core, axis=1))
        a, b = extract_lines(fields), extract_lines(bare)
        changed += len(a.dislocations) != len(b.dislocations) or not all(
            np.array_equal(x.points, y.points) for x, y in zip(a.dislocations, b.dislocations))
    assert changed >= 1


def test_the_line_end_channel_cuts_the_same_way(model_fields):
    """A fourth channel (the line-end map) is read along the traced lines: the model's
    fields plus the generator's end map of its lines cut in halves (spots at the ends
    and the middles), traced with ``end_cut`` on, which cuts lines at the middles."""
    settings = LineFieldSettings(end_cut=0.5)
    lines = cut = 0
    for k, fields in enumerate(model_fields):
        sample = generate_sample(("sd1", "sd2", "sd3")[k], seed=300 + k, size=128)
        halves = [half for c in sample.centrelines for half in (c[: len(c) // 2 + 1], c[len(c) // 2 :])]
        ends = line_targets(halves, fields.shape[1:], ends=True).ends
        four = np.concatenate([fields, ends[None].astype(np.float32)])
        lines += _same_lines(four, SparseFields.pack(four, low=settings.low), settings=settings)
        cut += len(extract_lines(four, settings=settings).dislocations) > len(extract_lines(fields).dislocations)
    assert lines >= 10 and cut >= 1


def test_line_records_of_sparse_and_dense_fields_agree(model_fields):
    from temtrack.sdk.pipeline import line_records
    from temtrack.sdk.preprocess import placement_for

    placement = placement_for((100, 128), (128, 128))  # letterboxed: a valid window
    settings = LineFieldSettings()
    for fields in model_fields:
        dense = line_records(fields, settings, placement)
        sparse = line_records(SparseFields.pack(fields, low=settings.low), settings, placement)
        assert [r.points.tolist() for r in dense] == [r.points.tolist() for r in sparse]


def test_the_main_job_sends_sparse_fields_to_its_workers(monkeypatch):
    """With worker processes, an ONNX line-field model's dense fields are packed in the
    inference thread (one call per frame) and the records are those of inline tracing."""
    from temtrack.sdk.analyzer import Analyzer

    frames = [generate_sample("sd1", seed=310 + k, size=96).image.astype(np.float32) for k in range(3)]
    inline = [r.dislocations for r in Analyzer(workers=0, annotations=False).stream(frames)]
    calls = []
    pack = SparseFields.pack.__func__

    def counted(cls, fields, *, low):
        calls.append(low)
        return pack(cls, fields, low=low)

    monkeypatch.setattr(SparseFields, "pack", classmethod(counted))
    pooled = [r.dislocations for r in Analyzer(workers=1, annotations=False).stream(frames)]
    assert calls == [LineFieldSettings().low] * len(frames)
    assert sum(map(len, inline)) >= 3
    assert [[d.points.tolist() for d in f] for f in inline] == [[d.points.tolist() for d in f] for f in pooled]
