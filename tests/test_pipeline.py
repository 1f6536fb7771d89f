"""The main job end to end: frames -> backend -> splines -> tracks -> Parquet.

Fixtures are short synthetic videos from our generator; a ``TruthBackend`` returns the
generator's own masks for each frame, so what comes out is known: the ground-truth
centrelines, their ids and their pair distances.
"""

from __future__ import annotations

import json
import hashlib

import numpy as np
import pandas as pd
import pytest

from temtrack.sdk.analyzer import Analyzer
from temtrack.sdk.pipeline import PipelineSettings
from temtrack.sdk.results import SPLINES_COLUMNS, output_paths, read_metadata
from temtrack.training.synth import iter_video, resolve_config
from temtrack.training.synth.video import VideoSettings

FRAMES = 24


class TruthBackend:
    """Returns each frame's ground-truth masks (looked up by the frame's bytes)."""

    name = "truth"
    input_size = None
    threshold = None

    def __init__(self, frames):
        self.masks = {self._key(f.image): f.masks for f in frames}
        self.calls = 0

    @staticmethod
    def _key(image):
        return hashlib.sha1(np.ascontiguousarray(image, np.float32).tobytes()).hexdigest()

    def predict(self, frames):
        self.calls += 1
        return [self.masks[self._key(image)] for image in frames]

    def describe(self):
        return {"name": self.name}


class FailingBackend(TruthBackend):
    """Truth until ``fail_after`` calls, then a crash (an interrupted run)."""

    def __init__(self, frames, fail_after):
        super().__init__(frames)
        self.fail_after = fail_after

    def predict(self, frames):
        if self.calls >= self.fail_after:
            raise KeyboardInterrupt
        return super().predict(frames)


@pytest.fixture(scope="module")
def video():
    """24 frames of a 160 px pile-up video with ground truth."""
    config = resolve_config("sd1", size=160)
    return list(iter_video(config, 4, VideoSettings(frames=FRAMES, fps=10.0, noise=0.0)))


@pytest.fixture(scope="module")
def stack(video):
    return np.stack([f.image for f in video])


def _run(video, stack, out=None, **options):
    run_options = {k: options.pop(k) for k in list(options) if k in ("resume", "overwrite", "every", "start", "end",
                                                                        "pixel_size_nm", "fps")}
    backend = options.pop("backend", None) or TruthBackend(video)
    analyzer = Analyzer(backend=backend, workers=options.pop("workers", 0), **options)
    return analyzer.run(stack, out, progress=False, fps=run_options.pop("fps", 10.0), **run_options)


def test_truth_masks_give_ground_truth_curves_and_ids(video, stack):
    result = _run(video, stack)
    splines = result.splines
    assert result.frames == FRAMES
    assert list(splines.columns) == list(SPLINES_COLUMNS)
    # Every visible ground-truth dislocation longer than the size filter is found.
    for frame in video:
        found = splines[splines.frame == frame.index]
        expected = sum(1 for line in frame.centrelines if len(line) and _length(line) > 8)
        assert abs(len(found) - expected) <= 1, frame.index
    # Each ground-truth track maps to one predicted track in >= 95% of its frames.
    pairs = []
    for frame in video:
        rows = splines[splines.frame == frame.index]
        for line, truth in zip(frame.centrelines, frame.track_ids):
            if _length(line) < 20:
                continue
            centroid = line.mean(axis=0)
            distance = np.hypot(rows.centroid_x - centroid[0], rows.centroid_y - centroid[1])
            if len(rows) and distance.min() < 3.0:
                pairs.append((int(truth), int(rows.track_id.iloc[int(np.argmin(distance.to_numpy()))])))
    table = pd.DataFrame(pairs, columns=["truth", "track"])
    majority = table.groupby("truth").track.agg(lambda s: s.value_counts().iloc[0] / len(s))
    assert len(table) >= 5 * FRAMES
    assert majority.min() >= 0.95


def _length(line):
    return float(np.hypot(*np.diff(line, axis=0).T).sum()) if len(line) > 1 else 0.0


def test_time_and_calibration_reach_every_table(video, stack):
    result = _run(video, stack, pixel_size_nm=0.5, fps=20.0)
    splines = result.splines
    np.testing.assert_allclose(splines.time_s, splines.frame / 20.0)
    np.testing.assert_allclose(splines.length_nm, splines.length_px * 0.5)
    assert len(result.tracks) and len(result.pairs)


def test_processes_give_the_same_result_as_inline(video, stack):
    inline = _run(video, stack, workers=0).splines
    pooled = _run(video, stack, workers=2, batch_size=3).splines
    pd.testing.assert_frame_equal(inline, pooled)


def test_every_and_range(video, stack):
    result = _run(video, stack, start=2, end=20, every=3)
    assert sorted(result.splines.frame.unique()) == list(range(2, 20, 3))


def test_outputs_are_written_with_metadata(tmp_path, video, stack):
    out = tmp_path / "run" / "splines.parquet"
    result = _run(video, stack, out, pixel_size_nm=0.5)
    paths = output_paths(out)
    for name in ("splines", "tracks", "pairs"):
        assert paths[name].exists()
        meta = read_metadata(paths[name])
        assert meta["pixel_size_nm"] == 0.5 and meta["fps"] == 10.0
        assert meta["settings"]["postprocess"]["threshold"] == 0.5
        assert meta["backend"]["name"] == "truth"
    assert not paths["partial"].exists()
    assert len(result.splines) == len(pd.read_parquet(out))


def test_existing_output_is_not_overwritten(tmp_path, video, stack):
    out = tmp_path / "splines.parquet"
    out.write_bytes(b"precious")
    with pytest.raises(FileExistsError, match="--overwrite"):
        _run(video, stack, out)
    assert out.read_bytes() == b"precious"
    with pytest.raises(FileExistsError, match="not a tem-track output"):  # not ours: never replaced
        _run(video, stack, out, overwrite=True)
    assert out.read_bytes() == b"precious"
    out.unlink()
    _run(video, stack, out)
    _run(video, stack, out, overwrite=True)  # ours: replaced
    assert len(pd.read_parquet(out))


def test_interrupted_run_resumes_to_the_same_result(tmp_path, video, stack):
    reference = _run(video, stack, tmp_path / "whole.parquet", batch_size=1).splines
    out = tmp_path / "splines.parquet"
    with pytest.raises(KeyboardInterrupt):
        _run(video, stack, out, backend=FailingBackend(video, fail_after=10), batch_size=1)
    paths = output_paths(out)
    assert not out.exists() and paths["partial"].exists()
    stored = sorted(paths["partial"].glob("chunk-*.json"))
    assert stored and json.loads(stored[-1].read_text())["last_frame"] >= 5
    with pytest.raises(FileExistsError, match="--resume"):
        _run(video, stack, out, batch_size=1)
    backend = TruthBackend(video)
    resumed = _run(video, stack, out, backend=backend, resume=True, batch_size=1)
    assert resumed.resumed_frames >= 5 and resumed.frames + resumed.resumed_frames == FRAMES
    assert backend.calls == resumed.frames  # stored frames were not segmented again
    pd.testing.assert_frame_equal(resumed.splines, reference)


def test_resume_with_other_settings_is_refused(tmp_path, video, stack):
    out = tmp_path / "splines.parquet"
    with pytest.raises(KeyboardInterrupt):
        _run(video, stack, out, backend=FailingBackend(video, fail_after=5), batch_size=1)
    with pytest.raises(ValueError, match="another settings"):
        _run(video, stack, out, resume=True, every=2)


def test_stream_yields_each_frame_in_order_with_latency(video, stack):
    analyzer = Analyzer(backend=TruthBackend(video), workers=0, batch_size=1)
    results = list(analyzer.stream(iter(stack), fps=10.0))
    assert [r.frame for r in results] == list(range(FRAMES))
    assert all(r.latency_s > 0 for r in results)
    whole = _run(video, stack, batch_size=1).splines
    assert sum(len(r.dislocations) for r in results) == len(whole)


def test_stream_takes_decoded_frames_with_their_indices(video, stack):
    from temtrack.sdk.sources import open_source

    analyzer = Analyzer(backend=TruthBackend(video), workers=0, batch_size=2)
    with open_source(stack, fps=10.0) as source:
        results = list(analyzer.stream(source.frames(start=4, every=5)))
    assert [r.frame for r in results] == list(range(4, FRAMES, 5))
    np.testing.assert_allclose([r.time_s for r in results], np.arange(4, FRAMES, 5) / 10.0)


def test_stage_errors_reach_the_caller(video, stack):
    class Broken(TruthBackend):
        def predict(self, frames):
            raise RuntimeError("model exploded")

    with pytest.raises(RuntimeError, match="model exploded"):
        _run(video, stack, backend=Broken(video))


def test_pipeline_settings_are_checked():
    with pytest.raises(ValueError, match="batch_size"):
        PipelineSettings(batch_size=0)
    with pytest.raises(ValueError, match="scale"):
        PipelineSettings(scale=-1.0)


def test_packed_masks_round_trip(video):
    from temtrack.sdk.pipeline import PackedMasks

    empty = PackedMasks.pack(np.zeros((0, 40, 30), np.uint8), None)  # a frame without masks
    assert empty.unpack().shape == (0, 40, 30)

    masks = video[0].masks
    packed = PackedMasks.pack(masks, None)
    full = packed.unpack()
    assert packed.indices.tolist() == [k for k in range(len(masks)) if masks[k].any()]
    np.testing.assert_array_equal(full, masks[packed.indices])
    assert sum(c.nbytes for c in packed.crops) < masks.nbytes / 3  # crops, not frames
    probabilities = masks.astype(np.float32) * np.float32(0.9)
    probabilities[0, 0, 0] = 0.3  # below the threshold: not worth a crop of its own
    packed = PackedMasks.pack(probabilities, 0.5)
    np.testing.assert_allclose(packed.unpack(), probabilities[packed.indices] * (probabilities[packed.indices] > 0.5),
                               atol=1e-3)
