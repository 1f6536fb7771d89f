"""Distractors: non-dislocation structures and burnt-in overlays drawn as negatives."""

from __future__ import annotations

import hashlib

import numpy as np
import pytest

from temtrack.training.synth import ConfigError, Scene, get_preset, render_scene, sample_scene, validate_config
from temtrack.training.synth.distractors import (
    KINDS,
    OVERLAYS,
    PaddingSpec,
    burn_in,
    overlay_layers,
    sample_distractors,
    specimen_layer,
)
from temtrack.training.synth.video import VideoSettings, iter_video

SIZE = 128


def config_with(shares: dict[str, float], preset: str = "sd2", size: int = SIZE, **changes):
    """``preset`` at ``size`` px with slip widths that fit, and distractor kinds at the given shares."""
    data = get_preset(preset).model_dump()
    data["size"] = (size, size)
    data["pileups"]["slip_width"] = (30.0, 60.0)
    data["distractors"] = {kind: {"probability": share} for kind, share in shares.items()}
    data.update(changes)
    return validate_config(data)


def test_every_kind_is_off_by_default():
    for name in ("sd1", "sd2", "sd3"):
        config = get_preset(name, size=(SIZE, SIZE))
        assert all(getattr(config.distractors, kind).probability == 0.0 for kind in KINDS)
        assert all(sample_scene(config, seed).distractors == [] for seed in range(5))


# Pinned before distractors existed: the presets' images and masks must not change.
# (uint8 image, masks) sha1 prefixes at 128 px; a change here is a change of every dataset.
PINNED = {
    ("sd1", 0): ("e4169cf199d00d90", "8e8593aebd26b23e"),
    ("sd1", 5): ("7c29696caecc7780", "40078bc1a1e90efe"),
    ("sd2", 0): ("87630286bc1aa824", "d6218aecfe4e2e7b"),
    ("sd2", 5): ("2d5da62916b699e6", "27e930ddbcede606"),
    ("sd3", 0): ("843b5915e12c0971", "2de1169f46545f45"),
    ("sd3", 5): ("52186f2b8cf6d4f3", "0048a7cf33cf7d3c"),
}


@pytest.mark.parametrize("preset, seed", sorted(PINNED))
def test_presets_render_as_before(preset, seed):
    sample = render_scene(sample_scene(get_preset(preset, size=(SIZE, SIZE)), seed))
    pixels = np.round(sample.image * 255).astype(np.uint8)
    got = (hashlib.sha1(pixels.tobytes()).hexdigest()[:16], hashlib.sha1(sample.masks.tobytes()).hexdigest()[:16])
    assert got == PINNED[preset, seed]


def test_distractors_change_no_other_draw_of_a_scene():
    off = config_with({})
    on = config_with({kind: 1.0 for kind in KINDS})
    for seed in range(3):
        a, b = sample_scene(off, seed), sample_scene(on, seed)
        assert len(b.distractors) == len(KINDS)
        assert a.model_dump(exclude={"distractors"}) == b.model_dump(exclude={"distractors"})


def test_one_kind_does_not_change_another():
    # Each kind has its own random stream: switching the cursor on leaves the text as it was.
    text = config_with({"text": 1.0})
    both = config_with({"text": 1.0, "cursor": 1.0})
    for seed in range(5):
        assert sample_scene(text, seed).distractors == sample_scene(both, seed).distractors[:1]


@pytest.mark.parametrize("kind", list(KINDS))
def test_each_kind_changes_pixels_and_adds_no_ground_truth(kind):
    seed = 4
    plain = render_scene(sample_scene(config_with({}), seed))
    sample = render_scene(sample_scene(config_with({kind: 1.0}), seed))
    assert [d.kind for d in sample.scene.distractors] == [kind]
    changed = np.abs(sample.image - plain.image) > 0.02
    assert changed.sum() >= 10, f"{kind} changed {changed.sum()} pixels"
    if kind in OVERLAYS:
        # An overlay may hide dislocations (fewer, smaller masks), never add any.
        assert set(sample.ids.tolist()) <= set(plain.ids.tolist())
        where = {i: k for k, i in enumerate(plain.ids.tolist())}
        for mask, i in zip(sample.masks, sample.ids.tolist()):
            assert not np.any(mask & ~plain.masks[where[i]].astype(bool))
    else:
        np.testing.assert_array_equal(sample.masks, plain.masks)
        np.testing.assert_array_equal(sample.ids, plain.ids)
        assert len(sample.centrelines) == len(plain.centrelines)
        for a, b in zip(sample.centrelines, plain.centrelines):
            np.testing.assert_array_equal(a, b)


def test_share_of_images_follows_the_probability():
    shares = {kind: 0.3 for kind in KINDS}
    shares["cursor"], shares["dirt"] = 0.0, 1.0
    config = config_with(shares)
    n = 400
    counts = dict.fromkeys(KINDS, 0)
    for seed in range(n):
        for spec in sample_distractors(config, seed):
            counts[spec.kind] += 1
    assert counts["cursor"] == 0 and counts["dirt"] == n
    # Binomial(400, 0.3): std 0.023; 0.08 is 3.5 std.
    for kind, share in shares.items():
        assert abs(counts[kind] / n - share) <= 0.08, (kind, counts[kind] / n)


def _crossing_scene(seed: int = 2):
    """A scene of straight isolated dislocations, and the first one's curve in pixels."""
    config = config_with(
        {}, shapes={"weights": {"straight": 1.0}}, pileups={"count": (0, 0), "isolated": (1, 1), "slip_width": (60.0, 80.0)}
    )
    scene = sample_scene(config, seed)
    assert len(scene.dislocations) == 1
    return scene, scene.dislocations[0].curve()


def test_padding_hides_the_dislocation_beneath():
    scene, curve = _crossing_scene()
    inside = curve[(curve[:, 0] > 0) & (curve[:, 0] < SIZE - 1) & (curve[:, 1] > 0) & (curve[:, 1] < SIZE - 1)]
    left = int(np.median(inside[:, 0]))  # the padding covers part of the line, not all
    padded = scene.model_copy(update={"distractors": [PaddingSpec(left=left, value=0.0)]})
    plain, sample = render_scene(scene), render_scene(padded)
    assert plain.masks[0][:, :left].any() and plain.masks[0][:, left:].any()
    assert not sample.masks[0][:, :left].any()
    np.testing.assert_array_equal(sample.masks[0][:, left:], plain.masks[0][:, left:])
    assert np.all(sample.image[:, :left] == 0.0)
    line = sample.centrelines[0]
    assert len(line) >= 2 and np.all(np.round(line[:, 0]) >= left)
    assert len(line) < len(plain.centrelines[0])


def test_a_dislocation_wholly_under_an_overlay_is_dropped():
    scene, _ = _crossing_scene()
    covered = scene.model_copy(update={"distractors": [PaddingSpec(top=SIZE, value=1.0)]})
    sample = render_scene(covered)
    assert sample.masks.shape == (0, SIZE, SIZE) and sample.centrelines == [] and len(sample.ids) == 0
    assert np.all(sample.image == 1.0)


def test_no_centreline_point_lies_under_an_opaque_overlay():
    config = config_with({kind: 1.0 for kind in OVERLAYS}, pileups={"count": (3, 4), "slip_width": (30.0, 60.0)})
    checked = 0
    for seed in range(6):
        sample = render_scene(sample_scene(config, seed))
        hidden = overlay_layers(sample.scene.distractors, (SIZE, SIZE)).alpha >= 0.5
        for line, mask in zip(sample.centrelines, sample.masks):
            assert len(line) >= 2 and mask.any()
            rows, cols = np.round(line[:, 1]).astype(int), np.round(line[:, 0]).astype(int)
            assert not hidden[rows, cols].any()
            assert not np.any(mask.astype(bool) & hidden)
            checked += 1
    assert checked > 10


def test_scene_json_round_trip_renders_identical_pixels():
    config = config_with({kind: 1.0 for kind in KINDS})
    scene = sample_scene(config, 9)
    again = Scene.from_json(scene.model_dump_json())
    assert again == scene
    a, b = render_scene(scene), render_scene(again)
    np.testing.assert_array_equal(a.image, b.image)
    np.testing.assert_array_equal(a.masks, b.masks)


@pytest.mark.parametrize(
    "path, value",
    [
        (("scale_bar", "probability"), 1.5),
        (("loops", "size"), (8.0, 3.0)),
        (("padding", "width"), (0.1, 0.9)),
        (("text", "colour"), 1),
    ],
)
def test_out_of_range_settings_name_the_field(path, value):
    kind, field = path
    data = get_preset("sd2").model_dump()
    data["distractors"] = {kind: {field: value}}
    with pytest.raises(ConfigError, match=rf"distractors\.{kind}\.{field}"):
        validate_config(data)


def test_drawing_does_not_modify_its_inputs():
    scene = sample_scene(config_with({kind: 1.0 for kind in KINDS}), 1)
    before = [spec.model_copy(deep=True) for spec in scene.distractors]
    image = np.full((SIZE, SIZE), 0.5, np.float32)
    specimen_layer(scene.distractors, image.shape)
    out = burn_in(image, overlay_layers(scene.distractors, image.shape))
    assert np.all(image == 0.5) and out is not image
    assert scene.distractors == before
    with pytest.raises(ValueError, match="does not fit"):
        burn_in(np.zeros((SIZE, SIZE + 1), np.float32), overlay_layers(scene.distractors, image.shape))


def test_video_overlays_stay_put_while_the_specimen_drifts():
    config = config_with({"padding": 1.0, "black_dots": 1.0}, size=64)
    settings = VideoSettings(frames=4, drift=2.0, max_drift=8.0, noise=0.02)
    frames = list(iter_video(config, 3, settings))
    overlay = overlay_layers(frames[0].scene.distractors, (64, 64))
    full = overlay.alpha == 1.0
    assert full.any()
    for frame in frames:
        # Burnt in after the camera noise: exactly the padding value, every frame.
        np.testing.assert_array_equal(frame.image[full], overlay.paint[full])
        for line in frame.centrelines:
            assert not full[np.round(line[:, 1]).astype(int), np.round(line[:, 0]).astype(int)].any()
    assert np.hypot(*frames[-1].offset) > 1.0  # the specimen did drift beneath it


def test_example_config_is_sd3_with_every_kind_on():
    from pathlib import Path

    from temtrack.training.synth import load_config

    config = load_config(Path(__file__).resolve().parents[1] / "examples/train/presets/distractors.json")
    assert all(0.0 < getattr(config.distractors, kind).probability < 1.0 for kind in KINDS)
    skip = {"name", "description", "distractors"}
    assert config.model_dump(exclude=skip) == get_preset("sd3").model_dump(exclude=skip)
