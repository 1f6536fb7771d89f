"""The classical (Sauvola) backend and the backend registry.

Known answers come from the synthetic generator: its masks are the ground truth, and
a scene edited by hand (a quiet background, an added slip trace) says what must be
found and what must be rejected. Edge cases are hand-made arrays.
"""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys

import cv2
import numpy as np
import pytest

from temtrack.sdk.backends import backend_names, get_backend
from temtrack.sdk.backends.classical import ClassicalBackend, sauvola_instances
from temtrack.training.synth import generate_sample, render_scene
from temtrack.training.synth.scene import LineSpec

SIZE = 256


def _dilate(mask: np.ndarray, radius: int = 2) -> np.ndarray:
    disk = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * radius + 1, 2 * radius + 1))
    return cv2.dilate(mask.astype(np.uint8), disk) > 0


def _union(masks: np.ndarray) -> np.ndarray:
    return masks.any(axis=0) if len(masks) else np.zeros(masks.shape[1:], bool)


def _quiet(scene):
    """The scene on a smooth, nearly noise-free background (a clean micrograph).

    The presets' Perlin backgrounds carry texture at the scale of the lines, which no
    global-statistics threshold can tell from dislocations; a 1000 px wavelength with
    little white noise leaves only slow shading, as under vignetting.
    """
    background = scene.background.model_copy(
        update={"wavelength1": 1000, "wavelength2": 1000, "w_white1": 0.02, "r_noise": 0.02, "gain": 0.3, "offset": 0.55}
    )
    finish = scene.finish.model_copy(update={"noise": min(scene.finish.noise, 0.003)})
    return scene.model_copy(update={"background": background, "finish": finish})


def _clean_sample(preset: str, seed: int):
    return render_scene(_quiet(generate_sample(preset, seed=seed, size=SIZE).scene))


def _canvas(value: float = 0.8) -> np.ndarray:
    return np.full((128, 128), value, np.float32)


# --- known answers from the generator ------------------------------------------------


@pytest.mark.parametrize("preset", ["sd1", "sd2"])
def test_clean_images_recover_the_dislocations(preset):
    # Measured (seeds 0-3, 256 px): recall 0.99-1.00 per image; foreground precision
    # 0.51-0.98 (mean 0.79); 75-100 % of dislocations found. The misses are dark,
    # smooth background patches that Sauvola also marks (thesis 1.5.3).
    recalls, precisions, found = [], [], []
    for seed in range(4):
        sample = _clean_sample(preset, seed)
        masks = sauvola_instances(sample.image)
        truth, predicted = _union(sample.masks), _union(masks)
        recalls.append((truth & _dilate(predicted)).sum() / truth.sum())
        precisions.append((predicted & _dilate(truth)).sum() / max(predicted.sum(), 1))
        near = _dilate(predicted)
        found += [(m.astype(bool) & near).sum() / m.sum() >= 0.5 for m in sample.masks]
    assert min(recalls) >= 0.9, recalls
    assert np.mean(precisions) >= 0.6 and min(precisions) >= 0.35, precisions
    assert np.mean(found) >= 0.9, found


def test_preset_images_keep_most_dislocation_pixels():
    # The thesis recipe on the textured sd1 backgrounds: recall of ground-truth pixels
    # within 2 px measured 0.66-0.85 over seeds 0-9 (0.77 for seed 3); precision is low.
    sample = generate_sample("sd1", seed=3, size=SIZE)
    truth = _union(sample.masks)
    recall = (truth & _dilate(_union(sauvola_instances(sample.image)))).sum() / truth.sum()
    assert recall >= 0.65


def test_dark_lines_are_not_found_with_bright_polarity():
    sample = _clean_sample("sd1", 1)
    truth = _union(sample.masks)
    predicted = _union(sauvola_instances(sample.image, polarity="bright"))
    assert (truth & predicted).sum() / truth.sum() <= 0.05


def test_slip_trace_is_rejected_only_when_asked():
    # A dark trace crossing the image edge to edge, clear of the dislocations (rows
    # 41-191 of this sample). Measured: coverage 0.90 kept, 0.00 rejected.
    sample = generate_sample("sd1", seed=2, size=SIZE)
    assert np.flatnonzero(_union(sample.masks).any(axis=1)).max() < 200
    start, end = (-2.0, 220.0), (SIZE + 2.0, 226.0)
    trace = LineSpec(start=start, end=end, contrast=0.3, width=2.0, segment_length=10.0, seed=1)
    scene = _quiet(sample.scene)
    image = render_scene(scene.model_copy(update={"slip_traces": [trace]})).image
    line = np.zeros((SIZE, SIZE), np.uint8)
    cv2.line(line, (0, 220), (SIZE - 1, 226), 1, 1)
    line = line.astype(bool)

    kept = sauvola_instances(image, reject_straight=False)
    rejected = sauvola_instances(image, reject_straight=True)
    assert (line & _dilate(_union(kept))).sum() / line.sum() >= 0.8
    assert (line & _dilate(_union(rejected))).sum() / line.sum() <= 0.1
    # Everything else is untouched: the kept masks are the rejected run's plus the trace.
    truth = _union(sample.masks)
    assert (truth & _union(rejected)).sum() == (truth & _union(kept)).sum()
    assert len(kept) - len(rejected) >= 1


# --- the straight-line rule on hand-made lines ----------------------------------------


def test_edge_to_edge_straight_line_is_rejected():
    image = _canvas()
    cv2.line(image, (0, 40), (127, 60), 0.2, 3)
    assert sauvola_instances(image).shape == (0, 128, 128)
    kept = sauvola_instances(image, reject_straight=False)
    assert kept.shape[0] == 1 and kept[0, 40, 0] == 1 and kept[0, 60, 127] == 1


def test_short_straight_line_is_kept():
    image = _canvas()
    cv2.line(image, (20, 40), (60, 50), 0.2, 3)  # 41 px < 0.5 * 128
    masks = sauvola_instances(image)
    assert masks.shape[0] == 1 and masks[0, 45, 40] == 1


def test_long_curved_line_is_kept():
    image = _canvas()
    xs = np.arange(128)
    ys = 30 + 80 * (xs / 127) * (1 - xs / 127)  # sagitta 20 px
    cv2.polylines(image, [np.column_stack([xs, ys]).astype(np.int32)], False, 0.2, 3)
    assert sauvola_instances(image).shape[0] == 1


def test_straight_tolerance_and_span_move_the_rule():
    image = _canvas()
    cv2.line(image, (20, 40), (60, 50), 0.2, 3)
    assert sauvola_instances(image, straight_min_span=0.3).shape[0] == 0  # 41 px >= 38 px
    image = _canvas()
    cv2.line(image, (0, 40), (127, 60), 0.2, 3)
    assert sauvola_instances(image, straight_tolerance=0.5).shape[0] == 1  # a 3 px band has RMS 0.8 px


# --- output contract and edge cases ------------------------------------------------------


def test_output_is_ordered_nonoverlapping_binary_uint8():
    image = _canvas()
    cv2.line(image, (10, 20), (50, 30), 0.2, 3)
    cv2.line(image, (20, 90), (75, 100), 0.2, 3)  # both shorter than 64 px: not rejected
    masks = sauvola_instances(image)
    assert masks.dtype == np.uint8 and masks.shape == (2, 128, 128)
    assert set(np.unique(masks)) <= {0, 1}
    sizes = masks.reshape(2, -1).sum(axis=1)
    assert sizes[0] >= sizes[1] > 0
    assert masks.sum(axis=0).max() == 1
    assert masks[0, 95, 47] == 1  # the longer line first


def test_small_components_are_dropped():
    image = _canvas()
    image[60:63, 60:63] = 0.2  # 9 px
    assert sauvola_instances(image).shape == (0, 128, 128)
    assert sauvola_instances(image, min_pixels=5, min_length=0).reshape(1, -1).sum() == 9


def test_short_and_compact_components_are_dropped():
    image = _canvas()
    cv2.circle(image, (40, 40), 6, 0.2, 2)  # a loop: compact, about 14 px across
    cv2.line(image, (70, 90), (80, 92), 0.2, 3)  # a 10 px stub
    cv2.line(image, (20, 110), (60, 100), 0.2, 3)  # a 41 px line
    masks = sauvola_instances(image)
    assert len(masks) == 1 and masks[0, 105, 40] == 1
    assert len(sauvola_instances(image, min_length=0)) == 3


@pytest.mark.parametrize("value", [0.0, 0.37, 1.0])
def test_constant_image_gives_no_instances(value):
    for polarity in ("dark", "bright"):
        for equalize in (True, False):
            masks = sauvola_instances(_canvas(value), polarity=polarity, equalize=equalize)
            assert masks.shape == (0, 128, 128) and masks.dtype == np.uint8


def test_uint8_and_float_inputs_agree():
    image8 = np.rint(generate_sample("sd2", seed=5, size=SIZE).image * 255).astype(np.uint8)
    expected = sauvola_instances(image8)
    assert len(expected) > 0
    for unit in (image8.astype(np.float32) / 255, image8 / 255.0):
        np.testing.assert_array_equal(sauvola_instances(unit), expected)
    np.testing.assert_array_equal(
        sauvola_instances(image8, equalize=False), sauvola_instances(image8.astype(np.float32) / 255, equalize=False)
    )


def test_bright_polarity_on_inverted_image_matches_dark():
    image8 = np.rint(_clean_sample("sd1", 1).image * 255).astype(np.uint8)
    np.testing.assert_array_equal(sauvola_instances(255 - image8, polarity="bright"), sauvola_instances(image8))


def test_input_not_modified():
    image = generate_sample("sd1", seed=3, size=64).image
    before = image.copy()
    sauvola_instances(image)
    np.testing.assert_array_equal(image, before)
    frames = np.stack([image, image])
    before = frames.copy()
    ClassicalBackend().predict(frames)
    np.testing.assert_array_equal(frames, before)


@pytest.mark.parametrize(
    "image, words",
    [
        (np.zeros((2, 8, 8), np.float32), ["image", "2-D", "(2, 8, 8)"]),
        (np.zeros(8, np.float32), ["image", "2-D", "(8,)"]),
        (np.zeros((0, 8), np.float32), ["image", "(0, 8)"]),
        (np.zeros((8, 8), np.int16), ["image", "int16"]),
        (np.zeros((8, 8), bool), ["image", "bool"]),
        (np.full((8, 8), np.nan, np.float32), ["image", "NaN"]),
        (np.full((8, 8), 1.5, np.float32), ["image", "[0, 1]", "1.5"]),
        (np.full((8, 8), -0.25), ["image", "[0, 1]", "-0.25"]),
    ],
)
def test_bad_image_names_the_argument(image, words):
    with pytest.raises(ValueError) as info:
        sauvola_instances(image)
    for word in words:
        assert word in str(info.value)


def test_non_array_image_is_a_type_error():
    with pytest.raises(TypeError, match="image must be a numpy array, got list"):
        sauvola_instances([[0.5, 0.5], [0.5, 0.5]])


@pytest.mark.parametrize(
    "option, value",
    [
        ("window", 50),
        ("window", 1),
        ("window", 51.0),
        ("k", -0.1),
        ("k", float("nan")),
        ("r", 0.0),
        ("polarity", "dim"),
        ("min_pixels", -1),
        ("straight_tolerance", 0.0),
        ("straight_min_span", -1.0),
    ],
)
def test_bad_setting_names_the_argument(option, value):
    with pytest.raises(ValueError, match=f"^{option} .*{value!r}"):
        sauvola_instances(_canvas(), **{option: value})
    with pytest.raises(ValueError, match=f"^{option} "):
        ClassicalBackend(**{option: value})


# --- the backend -----------------------------------------------------------------------


def test_backend_predict_matches_the_function():
    frames = np.stack([generate_sample("sd1", seed=s, size=96).image for s in (3, 4)])
    backend = ClassicalBackend(k=0.25, min_pixels=20)
    result = backend.predict(frames)
    assert isinstance(result, list) and len(result) == 2
    for frame, masks in zip(frames, result):
        np.testing.assert_array_equal(masks, sauvola_instances(frame, k=0.25, min_pixels=20))
    assert backend.predict(frames[:0]) == []


def test_backend_requires_a_batch():
    with pytest.raises(ValueError, match=r"frames must be 3-D \(B, H, W\), got shape \(64, 64\)"):
        ClassicalBackend().predict(_canvas()[:64, :64])


def test_backend_settings_are_typed_frozen_and_recorded():
    backend = ClassicalBackend(window=31)
    assert backend.name == "classical"
    description = backend.describe()
    assert description["backend"] == "classical" and description["window"] == 31
    assert set(description) == {"backend"} | {f.name for f in dataclasses.fields(ClassicalBackend)}
    json.dumps(description)
    with pytest.raises(dataclasses.FrozenInstanceError):
        backend.window = 51
    with pytest.raises(TypeError):
        ClassicalBackend(windw=51)


# --- the registry ----------------------------------------------------------------------


def test_registry_builds_the_classical_backend():
    assert backend_names() == ["auto", "classical", "onnxruntime", "tensorrt", "torch"]
    backend = get_backend("classical", k=0.3)
    assert isinstance(backend, ClassicalBackend) and backend.k == 0.3


def test_registry_unknown_name_lists_valid_names():
    with pytest.raises(ValueError, match=r"unknown backend 'sauvola'; valid backends: auto, classical, onnxruntime"):
        get_backend("sauvola")


def test_registry_unknown_option_lists_valid_options():
    with pytest.raises(TypeError, match=r"unknown option\(s\) windw .*valid options: .*window"):
        get_backend("classical", windw=51)


def test_registry_import_is_cheap_and_torch_free():
    code = (
        "import sys, temtrack.sdk.backends as b; "
        "print(sorted(m for m in ('torch', 'skimage', 'cv2', 'numpy') if m in sys.modules)); "
        "b.get_backend('classical'); print('torch' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split("\n")
    assert out[0] == "[]" and out[1] == "False"


def test_packed_prediction_equals_the_masks():
    image = _canvas()
    cv2.line(image, (20, 110), (60, 100), 0.2, 3)
    cv2.line(image, (30, 20), (90, 60), 0.2, 2)
    backend = ClassicalBackend()
    frames = np.stack([image, image[::-1].copy()])
    for masks, packed in zip(backend.predict(frames), backend.predict_packed(frames)):
        assert len(masks) >= 1
        np.testing.assert_array_equal(packed.unpack(), masks)
        assert packed.indices.tolist() == list(range(len(masks)))
