"""Tests of temtrack.tracker linking: one base class, run for every linker.

Scenes are built by hand from straight lines (x = column, y = row, px) so every
expected id is known; the curve linker's own tests at the end use the synthetic
video generator's ground truth.
"""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest

from temtrack.tracker import CurveLinker, TrackpyLinker, link, link_iter, linker_names, make_linker, tracking_scores
from temtrack.tracker.linking import DEFAULT_METHOD


def vertical(x: float, y0: float = 20.0, length: float = 60.0, n: int = 40) -> np.ndarray:
    """A vertical line at column x from row y0, (n, 2) px."""
    return np.column_stack([np.full(n, float(x)), np.linspace(y0, y0 + length, n)])


def glide_scene(frames: int = 20, xs=(40.0, 52.0, 64.0), speed: float = 2.0):
    """Parallel vertical lines gliding +x at ``speed`` px/frame: list of (frame, curves, gt ids)."""
    return [(f, [vertical(x + speed * f) for x in xs], np.arange(len(xs))) for f in range(frames)]


def shuffled(scene, seed: int = 0):
    """The same scene with the curves of every frame in a random order (gt ids follow)."""
    rng = np.random.default_rng(seed)
    out = []
    for frame, curves, gt in scene:
        order = rng.permutation(len(curves))
        out.append((frame, [curves[k] for k in order], np.asarray(gt)[order]))
    return out


def run(linker, scene):
    """Step ``linker`` through ``scene``; the ids per frame."""
    return [linker.step(frame, curves) for frame, curves, _ in scene]


def assert_consistent(ids_per_frame, scene):
    """Every ground-truth track keeps one predicted id, and distinct tracks get distinct ids."""
    mapping = {}
    for ids, (_, _, gt) in zip(ids_per_frame, scene):
        assert ids.dtype == np.int64 and len(ids) == len(gt)
        assert len(set(ids.tolist())) == len(ids), "an id given twice in one frame"
        for g, i in zip(np.asarray(gt).tolist(), ids.tolist()):
            assert mapping.setdefault(g, i) == i, f"ground-truth track {g} changed id {mapping[g]} -> {i}"
    assert len(set(mapping.values())) == len(mapping)
    return mapping


class LinkerTests:
    """What every linker must do; subclasses set ``method`` (and ``options``)."""

    method: str = ""
    options: dict = {}

    def make(self, **extra):
        return make_linker(self.method, **{**self.options, **extra})

    def test_straight_glide_keeps_ids(self):
        scene = shuffled(glide_scene())
        mapping = assert_consistent(run(self.make(), scene), scene)
        assert sorted(mapping.values()) == [0, 1, 2]

    def test_gap_of_two_frames_keeps_the_id(self):
        scene = glide_scene(frames=14)
        # The middle line is missed in frames 6 and 7 (memory counts steps: 2 <= 3).
        scene = [(f, c, g) if f not in (6, 7) else (f, [c[0], c[2]], g[[0, 2]]) for f, c, g in scene]
        ids = run(self.make(memory=3), scene)
        assert_consistent(ids, scene)
        assert ids[8][1] == ids[5][1]

    def test_gap_longer_than_memory_gives_a_new_id(self):
        scene = glide_scene(frames=10, xs=(40.0, 90.0))
        scene = [(f, c, g) if not 3 <= f <= 5 else (f, [c[0]], g[:1]) for f, c, g in scene]
        ids = run(self.make(memory=1), scene)
        assert ids[6][1] not in (ids[2][0], ids[2][1])

    def test_birth_at_the_edge_gets_a_new_id(self):
        # Two lines glide; from frame 8 a third enters at the left edge (growing from 5 px).
        scene = []
        for f in range(16):
            curves, gt = [vertical(60 + 1.5 * f), vertical(75 + 1.5 * f)], [0, 1]
            if f >= 8:
                curves.append(np.column_stack([np.linspace(0.0, min(5.0 + 4 * (f - 8), 40.0), 20), np.full(20, 50.0)]))
                gt.append(2)
            scene.append((f, curves, np.array(gt)))
        ids = run(self.make(), shuffled(scene, 3))
        mapping = assert_consistent(ids, shuffled(scene, 3))
        assert mapping[2] not in (mapping[0], mapping[1])

    def test_ids_are_never_reused(self):
        scene = [(f, [vertical(40.0)], np.array([0])) for f in range(3)]
        scene += [(f, [vertical(200.0)], np.array([1])) for f in range(3, 20)]
        ids = run(self.make(memory=2), scene)
        assert ids[-1][0] != ids[0][0]

    def test_empty_frames_and_frame_skips(self):
        linker = self.make()
        assert linker.step(0, []).tolist() == []  # may start on an empty frame
        first = linker.step(5, [vertical(40.0), vertical(60.0)])
        assert linker.step(6, []).shape == (0,)
        # Every 5th frame processed; the lines moved 0.5 px per frame meanwhile.
        again = linker.step(10, [vertical(62.5), vertical(42.5)])
        assert again.tolist() == first[::-1].tolist()
        assert linker.steps == 4

    def test_replay_gives_the_same_ids(self):
        rng = np.random.default_rng(5)
        scene = shuffled(glide_scene(frames=25, xs=(30, 37, 45, 60, 66), speed=1.5), 1)
        scene = [(f, [c for c in curves if rng.random() > 0.1], None) for f, curves, _ in scene]
        first = [ids.tolist() for ids in run(self.make(), scene)]
        second = [ids.tolist() for ids in run(self.make(), scene)]
        assert first == second

    def test_three_layers_agree(self):
        scene = shuffled(glide_scene(frames=12, xs=(30.0, 38.0, 50.0)), 2)
        scene[4] = (scene[4][0], scene[4][1][:2], None)  # one line missed
        stepped = np.concatenate(run(self.make(), scene))
        iterated = np.concatenate([ids for _, ids in link_iter(((f, c) for f, c, _ in scene), method=self.method, **self.options)])
        rows = [{"frame": f, "x": c[:, 0].tolist(), "y": c[:, 1].tolist()} for f, curves, _ in scene for c in curves]
        # Frames in reverse order (the rows of each frame in their order), with a
        # non-default index: link sorts by frame, and the result follows the rows.
        position = np.arange(len(rows))
        blocks = np.split(position, np.flatnonzero(np.diff([r["frame"] for r in rows])) + 1)
        order = np.concatenate(blocks[::-1])
        df = pd.DataFrame([rows[k] for k in order], index=order * 10)
        linked = link(df, method=self.method, **self.options)
        assert linked.index.equals(df.index)
        np.testing.assert_array_equal(linked.sort_index()["track_id"].to_numpy(), stepped)
        np.testing.assert_array_equal(iterated, stepped)
        assert linked["track_id"].dtype == np.int64

    def test_inputs_are_not_modified(self):
        scene = glide_scene(frames=6)
        copies = [[c.copy() for c in curves] for _, curves, _ in scene]
        run(self.make(), scene)
        for curves, kept in zip((c for _, c, _ in scene), copies):
            for a, b in zip(curves, kept):
                np.testing.assert_array_equal(a, b)
        df = pd.DataFrame([{"frame": f, "x": list(c[:, 0]), "y": list(c[:, 1])} for f, cs, _ in scene for c in cs])
        before = df.copy(deep=True)
        out = link(df, method=self.method, **self.options)
        pd.testing.assert_frame_equal(df, before)
        assert "track_id" not in df.columns and "track_id" in out.columns

    def test_describe_is_json_and_complete(self):
        linker = self.make(memory=2)
        described = json.loads(json.dumps(linker.describe()))
        assert described["method"] == self.method
        assert described["settings"]["memory"] == 2
        assert described["memory_unit"] == "steps"
        assert set(described["settings"]) == set(type(linker.settings).option_names())

    def test_settings_object_or_options(self):
        linker = self.make()
        again = type(linker)(linker.settings)
        assert again.settings == linker.settings
        with pytest.raises(TypeError, match="either settings or keyword options"):
            type(linker)(linker.settings, memory=1)
        with pytest.raises(TypeError, match="settings must be"):
            type(linker)({"memory": 1})

    def test_bad_inputs_are_clear_errors(self):
        linker = self.make()
        linker.step(3, [vertical(10.0)])
        with pytest.raises(ValueError, match=r"frame must increase.*frame 3 after frame 3"):
            linker.step(3, [vertical(10.0)])
        with pytest.raises(TypeError, match="frame must be an integer"):
            linker.step(4.0, [vertical(10.0)])
        with pytest.raises(TypeError, match="frame must be an integer"):
            linker.step(True, [vertical(10.0)])
        bad = vertical(10.0)
        bad[3, 1] = np.nan
        with pytest.raises(ValueError, match=r"curves\[1\] holds NaN"):
            linker.step(4, [vertical(10.0), bad])
        with pytest.raises(ValueError, match=r"curves\[0\] must be an \(n, 2\) array.*shape \(5, 3\)"):
            linker.step(4, [np.zeros((5, 3))])
        with pytest.raises(TypeError, match="sequence of .* got one array of shape"):
            linker.step(4, vertical(10.0))
        assert linker.step(4, [vertical(10.5)]).tolist() == [0]  # a failed step changes nothing
        with pytest.raises(TypeError, match=r"unknown option\(s\) 'bogus'.*valid options: .*memory"):
            self.make(bogus=1)
        with pytest.raises(ValueError, match="memory must be >= 0, got -1"):
            self.make(memory=-1)
        with pytest.raises(TypeError, match="memory must be an integer"):
            self.make(memory=2.5)
        with pytest.raises(ValueError, match="df lacks column"):
            link(pd.DataFrame({"frame": [0], "x": [[0.0, 1.0]]}), method=self.method)
        with pytest.raises(ValueError, match="row 'r1' of df"):
            link(pd.DataFrame({"frame": [0, 0], "x": [[0.0, 1.0], [0.0]], "y": [[0.0, 1.0], [0.0, 1.0]]}, index=["r0", "r1"]),
                 method=self.method)
        with pytest.raises(TypeError, match="must hold integers"):
            link(pd.DataFrame({"frame": [0.5], "x": [[0.0, 1.0]], "y": [[0.0, 1.0]]}), method=self.method)
        with pytest.raises(TypeError, match="pandas DataFrame"):
            link({"frame": [0]}, method=self.method)


class TestCurveLinker(LinkerTests):
    method = "curve"

    def test_is_the_default(self):
        assert DEFAULT_METHOD == "curve"
        assert isinstance(make_linker(), CurveLinker)

    def test_pileup_jump_with_a_missed_line(self):
        # Six lines 5 px apart stand still, then jump 3 px at once while the third is
        # missed: each new line is 2 px from where its neighbour was, 3 px from where
        # it was itself, so per-track prediction links three of them to the wrong
        # track; the pile-up's shared jump puts them right.
        xs = 40.0 + 5.0 * np.arange(6)
        scene = [(f, [vertical(x) for x in xs], np.arange(6)) for f in range(5)]
        scene.append((5, [vertical(x + 3.0) for k, x in enumerate(xs) if k != 2], np.array([0, 1, 3, 4, 5])))
        scene.append((6, [vertical(x + 3.0) for x in xs], np.arange(6)))
        assert_consistent(run(self.make(), scene), scene)
        with pytest.raises(AssertionError, match="changed id"):
            assert_consistent(run(self.make(predict="velocity"), scene), scene)

    def test_pileup_jump_beyond_the_spacing_over_skipped_frames(self):
        # Every 5th frame processed: the pile-up (spacings 6-12 px) jumped 8 px meanwhile,
        # so most lines now lie nearer a neighbour's old place than their own.
        xs = 40.0 + np.cumsum([0.0, 6.0, 9.0, 7.0, 12.0, 8.0])
        scene = [(f, [vertical(x) for x in xs], np.arange(6)) for f in range(0, 25, 5)]
        scene += [(f, [vertical(x + 8.0) for x in xs], np.arange(6)) for f in (25, 30)]
        assert_consistent(run(self.make(), shuffled(scene, 6)), shuffled(scene, 6))
        with pytest.raises(AssertionError, match="changed id"):
            assert_consistent(run(self.make(predict="velocity"), shuffled(scene, 6)), shuffled(scene, 6))

    def test_missed_line_moves_with_its_pileup(self):
        # The pile-up glides 2.5 px/frame; one line is missed for 3 frames and comes
        # back 10 px further on, next to where its neighbour was last seen.
        xs = 40.0 + 6.0 * np.arange(5)
        scene = []
        for f in range(14):
            keep = [k for k in range(5) if not (k == 2 and 6 <= f <= 8)]
            scene.append((f, [vertical(xs[k] + 2.5 * f) for k in keep], np.array(keep)))
        assert_consistent(run(self.make(), shuffled(scene, 4)), shuffled(scene, 4))

    def test_short_spurious_curves_do_not_take_a_line_id(self):
        linker = self.make()
        first = linker.step(0, [vertical(50.0), vertical(70.0)])
        # A 6 px curve across the first line's path while that line is missed, and one
        # lying along the second line while it is there.
        across = np.column_stack([np.linspace(47.0, 53.0, 5), np.full(5, 43.0)])
        along = np.column_stack([np.full(5, 71.0), np.linspace(40.0, 46.0, 5)])
        ids = linker.step(1, [across, vertical(70.0), along])
        assert ids[1] == first[1]
        assert ids[0] not in first and ids[2] not in first
        assert linker.step(2, [vertical(50.0), vertical(70.0)]).tolist() == first.tolist()

    def test_frame_with_many_curves_keeps_every_id(self):
        # A crowded frame: 15 lines 7 px apart gliding together. (Its speed is measured
        # by benchmarks/bench_linker_frame.py, against trackpy in the same run.)
        xs = 20.0 + 7.0 * np.arange(15)
        linker = self.make()
        first = linker.step(0, [vertical(x, length=120.0) for x in xs])
        assert len(set(first.tolist())) == 15
        for f in range(1, 45):
            ids = linker.step(f, [vertical(x + 0.5 * f, length=120.0) for x in xs])
            assert ids.tolist() == first.tolist(), f"frame {f}"


class TestTrackpyLinker(LinkerTests):
    method = "trackpy"

    def test_uses_trackpy_and_its_predictors(self):
        linker = make_linker("trackpy", predictor="drift", search_range=5.0)
        assert isinstance(linker, TrackpyLinker)
        assert type(linker._predictor).__name__ == "DriftPredict"
        with pytest.raises(ValueError, match="predictor must be one of"):
            make_linker("trackpy", predictor="kalman")

    def test_interleaved_linkers_keep_their_own_ids(self):
        # trackpy numbers tracks with a class-wide counter that every new linker resets.
        a, b = make_linker("trackpy"), make_linker("trackpy")
        a.step(0, [vertical(10.0), vertical(30.0)])
        b.step(0, [vertical(10.0)])
        assert a.step(1, [vertical(10.0), vertical(30.0), vertical(80.0)]).tolist() == [0, 1, 2]


def test_registry():
    assert linker_names() == ["curve", "trackpy"]
    with pytest.raises(ValueError, match="unknown linking method 'kalman'; valid methods: curve, trackpy"):
        make_linker("kalman")


def test_import_is_cheap():
    code = (
        "import sys, numpy as np, temtrack.tracker as t\n"
        "heavy = {'trackpy', 'matplotlib', 'pandas', 'scipy.optimize'}\n"
        "print(sorted(heavy & set(sys.modules)))\n"
        "t.make_linker('curve').step(0, [np.zeros((3, 2))])\n"
        "print(sorted({'trackpy', 'matplotlib', 'pandas'} & set(sys.modules)))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split("\n")
    assert out[0] == "[]", f"imported at import time: {out[0]}"
    assert out[1] == "[]", f"the curve linker pulled in: {out[1]}"


# --- the curve linker on synthetic videos ---------------------------------------------


def _pileup_video(seed: int):
    """Ground-truth curves of a 100-frame, 192 px video: one pile-up of 8-10 dislocations,
    70 % of spacings 5-7 px, slips of 1.5-3 px/frame starting with probability 0.15."""
    from temtrack.training.synth import get_preset, iter_video, validate_config
    from temtrack.training.synth.video import VideoSettings

    data = get_preset("sd2").model_dump()
    data["size"] = (192, 192)
    data["pileups"].update(
        count=(1, 1), dislocations=(8, 10), max_dislocations=12, min_gap=1.0, slip_width=(60.0, 120.0),
        spacing={"pair_probability": 0.7, "pair": (5.0, 7.0), "wide": (8.0, 14.0), "alternate": False},
    )
    data["render"]["noise"] = (0.0, 0.0)
    settings = VideoSettings(frames=100, glide_speed=(1.5, 3.0), slip_probability=0.15)
    rng = np.random.default_rng(seed)
    frames = []
    for frame in iter_video(validate_config(data), seed, settings):
        keep = [k for k, c in enumerate(frame.centrelines) if len(c) >= 2 and rng.random() >= 0.05]  # 5 % missed
        order = rng.permutation(len(keep))
        frames.append((frame.index, [frame.centrelines[keep[k]] for k in order], frame.track_ids[[keep[k] for k in order]]))
    return frames


@pytest.fixture(scope="module")
def pileup_videos():
    # Seeds where per-track prediction and trackpy both make identity errors.
    return [_pileup_video(seed) for seed in (0, 4)]


def _score(method, frames, **options):
    linker = make_linker(method, **options)
    got = [linker.step(f, curves) for f, curves, _ in frames]
    frame = np.concatenate([np.full(len(g), f) for f, _, g in frames])
    return tracking_scores(frame, np.concatenate([g for _, _, g in frames]), np.concatenate(got))


def test_curve_linker_on_synthetic_pileups(pileup_videos):
    for frames in pileup_videos:
        assert np.mean([len(c) for _, c, _ in frames]) >= 6
        curve, baseline = _score("curve", frames), _score("trackpy", frames)
        assert curve.idf1 >= 0.97, curve
        assert curve.id_switches <= 1, curve
        # The thesis' centroid tracking errs on these videos; the curve linker must not.
        assert baseline.id_switches >= curve.id_switches + 5, (curve, baseline)


def _random_short_curves(rng, count, size=512.0):
    """``count`` short wiggly curves (5-30 px) scattered over a ``size`` px square."""
    curves = []
    for _ in range(count):
        start = rng.uniform(0, size, 2)
        angle = rng.uniform(0, np.pi)
        steps = rng.integers(3, 10)
        direction = np.array([np.cos(angle), np.sin(angle)])
        points = start + np.cumsum(rng.uniform(1.5, 3.5, (steps, 1)) * direction + rng.normal(0, 0.5, (steps, 2)), axis=0)
        curves.append(np.vstack([start, points]))
    return curves


def test_curve_linker_gating_is_exact_for_many_short_curves():
    """Spatial gating and per-group solving (used for many tracks) give the ids of the dense path."""
    rng = np.random.default_rng(7)
    base = _random_short_curves(rng, 300)
    frames = []
    for step in range(5):
        keep = rng.random(len(base)) > 0.1  # some missed: lost tracks pile up in memory
        moved = [c + rng.normal(0, 1.0, 2) + [0.5 * step, 0.0] for c, k in zip(base, keep) if k]
        frames.append(moved + _random_short_curves(rng, 30))  # and some spurious ones
    gated, dense = CurveLinker(), CurveLinker()
    gated._gated_above, dense._gated_above = 0, 10**9
    for frame, curves in enumerate(frames):
        ids_gated = gated.step(frame, curves)
        ids_dense = dense.step(frame, curves)
        assert ids_gated.tolist() == ids_dense.tolist()
    assert len(gated._ids) > 300  # the lost tracks really were kept


@pytest.mark.parametrize("seed", range(3))
def test_curve_linker_solving_group_by_group_gives_the_dense_links_and_total(seed):
    """Solving each connected group of allowed links on its own (one-link groups in
    closed form) gives the links and the total cost of the one dense assignment: the
    total decides between the linker's hypotheses."""
    from temtrack.tracker.curve_linker import _assignment

    rng = np.random.default_rng(seed)
    n, m = 80, 70
    linker = CurveLinker()
    gate = linker._settings.max_cost
    cost = rng.uniform(0.0, 2.0 * gate, (n, m))
    gates = rng.uniform(gate, 2.0 * gate, n)
    allowed = (cost <= gates[:, None]) & (rng.random((n, m)) < 0.03)  # sparse: many one-link groups
    links, total = linker._solve_groups(cost, allowed)
    rows, cols, dense_total = _assignment(np.where(allowed, cost, np.inf), gate)  # the dense path's solve
    assert links.tolist() == np.column_stack([rows, cols]).tolist()
    assert total == pytest.approx(dense_total, rel=1e-12)
    assert 10 <= len(links) < min(n, m)  # links made, and some items left unlinked


def _register_reference(linker, predicted, geometry, near, trouble):
    """The pile-up registration as first written: every measured (track, curve) pair of
    a group in the (candidate, pair) block, none left out."""
    from temtrack.tracker import _curves

    s = linker._settings
    _, normal = _curves.axes(predicted)
    cost0 = s.overhang_weight * geometry.overhang + s.gap_penalty * linker._missed[:, None]
    measured = np.isfinite(geometry.distance)
    shift = np.zeros((len(predicted), 2))
    beside = near | np.eye(len(predicted), dtype=bool)
    for k in np.flatnonzero(trouble | near[:, trouble].any(axis=1)):
        group = np.flatnonzero(beside[k])
        member, curve = np.nonzero(measured[group])
        if len(group) < 2 or not len(member):
            continue
        rows = group[member]
        along = (geometry.offset[rows, curve] * normal[k]).sum(axis=1)
        lateral2 = np.maximum(geometry.distance[rows, curve] ** 2 - along**2, 0.0)
        candidates = np.unique(np.round(np.concatenate([[0.0], along]), 1))
        cost = np.sqrt(lateral2[None] + (along[None] - candidates[:, None]) ** 2) + cost0[rows, curve][None]
        score = np.zeros(len(candidates))
        for ids in (member, curve):  # each track its best curve, each curve its best track
            for value in np.unique(ids):
                score += np.minimum(cost[:, ids == value].min(axis=1), s.max_cost)
        score += s.max_cost * (len(group) - len(np.unique(member)))
        shift[k] = candidates[np.argmin(score + 1e-3 * np.abs(candidates))] * normal[k]
    return shift


@pytest.mark.parametrize("seed", range(4))
def test_pileup_registration_matches_the_per_track_computation_on_random_neighbourhoods(seed):
    """The registration scores every track's candidates at once; on random
    neighbourhoods (tracks with no pair, pairs too far to matter, offsets on a coarse
    grid so that candidates tie) it picks the jumps the per-track computation picks."""
    from temtrack.tracker import _curves

    rng = np.random.default_rng(seed)
    n, m = 60, 50
    predicted = np.stack([vertical(x, length=rng.uniform(40, 90), n=24) for x in rng.uniform(0, 300, n)])
    measured = rng.random((n, m)) < 0.15
    measured[rng.random(n) < 0.3] = False  # tracks without a single measured pair
    distance = np.where(measured, rng.uniform(0.0, 9.0, (n, m)), np.inf)  # beyond 6 px: cannot matter
    angle = rng.uniform(0, 2 * np.pi, (n, m))
    reach = np.round(rng.uniform(0, 1, (n, m)) * np.where(measured, distance, 0.0) * 2) / 2  # 0.5 px grid: ties
    offset = np.where(measured[..., None], np.stack([np.cos(angle), np.sin(angle)], axis=-1) * reach[..., None], np.nan)
    geometry = _curves.PairGeometry(distance, np.where(measured, rng.uniform(0, 20, (n, m)), 0.0), offset)
    near = np.triu(rng.random((n, n)) < 0.12, 1)
    near = near | near.T
    trouble = rng.random(n) < 0.4
    linker = CurveLinker()
    linker._missed = rng.integers(0, 3, n)
    got = linker._register(predicted, geometry, near, trouble)
    np.testing.assert_allclose(got, _register_reference(linker, predicted, geometry, near, trouble), atol=1e-9)
    assert (np.hypot(*got.T) > 0).sum() >= 5  # jumps were found, not only zeros


def test_pileup_registration_leaves_out_only_pairs_that_cannot_matter(pileup_videos, monkeypatch):
    """The registration skips (track, curve) pairs already at max_cost across the line;
    its jumps are those of the full computation, on pile-ups and on a dense scene."""
    calls = []
    original = CurveLinker._register

    def checked(self, predicted, geometry, near, trouble):
        got = original(self, predicted, geometry, near, trouble)
        np.testing.assert_allclose(got, _register_reference(self, predicted, geometry, near, trouble), atol=1e-9)
        calls.append(int((np.hypot(*got.T) > 0).sum()))
        return got

    monkeypatch.setattr(CurveLinker, "_register", checked)
    for frames in pileup_videos:
        _score("curve", frames)
    rng = np.random.default_rng(3)
    base = [vertical(x, y0=rng.uniform(10, 40), length=rng.uniform(30, 80)) for x in np.arange(20.0, 400.0, 6.0)]
    linker = CurveLinker()
    for frame in range(6):
        jump = 7.0 if frame == 3 else 0.0  # every line jumps at once: what the registration looks for
        linker.step(frame, [c + [jump * (frame >= 3), 0.0] + rng.normal(0, 0.3, 2) for c in base if rng.random() > 0.1])
    assert len(calls) >= 10 and sum(calls) > 0, calls  # registration ran, and found jumps
