"""Training data from labelled frames: loading, splitting, cropping and mixing streams."""

from __future__ import annotations

import json
import shutil

import cv2
import numpy as np
import pytest

torch = pytest.importorskip("torch", reason="torch is not installed (pip install -e '.[train]')")

from torch.utils.data import DataLoader  # noqa: E402

from temtrack.sdk.groundtruth import centrelines_to_masks  # noqa: E402
from temtrack.sdk.labelme import write_labelme  # noqa: E402
from temtrack.training.labelled import (  # noqa: E402
    CropDataset,
    LabelledDataError,
    LabelledFrame,
    load_frames,
    split_frames,
)
from temtrack.training.synth import render_scene, resolve_config, sample_scene  # noqa: E402
from temtrack.training.synth.storage import sample_seed, to_uint8, write_dataset  # noqa: E402

SIZE = (48, 64)
SEED = 5
N_SAMPLES = 3


def config():
    return resolve_config("sd2", size=SIZE)


def generated(index: int):
    """Sample ``index`` of the dataset written by the ``synth_folder`` fixture."""
    return render_scene(sample_scene(config(), sample_seed(SEED, index)))


def big_enough(masks: np.ndarray, min_pixels: int) -> np.ndarray:
    return masks[masks.reshape(len(masks), -1).sum(axis=1) >= min_pixels]


@pytest.fixture(scope="module")
def synth_folder(tmp_path_factory):
    """A synthetic dataset of 3 images, with labelme files beside the images."""
    out = tmp_path_factory.mktemp("data") / "synth"
    return write_dataset(out, config(), N_SAMPLES, seed=SEED, progress=False, labelme=True)


def write_line_labels(folder, n_frames: int = 3):
    """Line-label frames from generator images and centrelines; returns the expected masks.

    Each centreline is drawn 1 px wide; one that would touch an earlier one (8-connected)
    is left out, so every drawn line is exactly one component.
    """
    folder.mkdir()
    expected = {}
    for k in range(n_frames):
        sample = render_scene(sample_scene(config(), 100 + k))
        label = np.zeros(SIZE, np.uint8)
        masks = []
        for line in sample.centrelines:
            mask = centrelines_to_masks([line], SIZE, width=1)[0]
            if mask.sum() < 5 or (cv2.dilate(mask, np.ones((3, 3), np.uint8)) & label).any():
                continue
            label |= mask
            masks.append(mask)
        name = f"frame{10 * k:03d}"
        cv2.imwrite(str(folder / f"{name}.png"), to_uint8(sample.image))
        cv2.imwrite(str(folder / f"{name}_dislocations.png"), label * 255)
        expected[name] = (to_uint8(sample.image), np.array(masks, np.uint8).reshape(-1, *SIZE))
    return expected


def same_mask_sets(a: np.ndarray, b: np.ndarray) -> bool:
    key = lambda m: m.tobytes()  # noqa: E731
    return len(a) == len(b) and sorted(map(key, a)) == sorted(map(key, b))


def frame(video="v", number=0, image_id=None, shape=(4, 4), n_masks=0):
    return LabelledFrame(
        video=video,
        frame=number,
        image_id=image_id or f"frame{number:03d}",
        image=np.zeros(shape, np.float32),
        masks=np.zeros((n_masks, *shape), np.uint8),
    )


# --- load_frames -----------------------------------------------------------------------


def test_load_synthetic_dataset_matches_the_generator(synth_folder):
    frames = load_frames(synth_folder, min_pixels=5)
    assert [f.image_id for f in frames] == ["000000", "000001", "000002"]
    assert [f.frame for f in frames] == [0, 1, 2]
    assert {f.video for f in frames} == {"synth"}
    for index, loaded in enumerate(frames):
        sample = generated(index)
        expected = big_enough(sample.masks, 5)
        assert loaded.masks.dtype == np.uint8 and loaded.image.dtype == np.float32
        np.testing.assert_array_equal(loaded.masks, expected)
        # The stored image is 8-bit: within half a grey level of the generator's.
        np.testing.assert_allclose(loaded.image, sample.image, atol=0.5 / 255 + 1e-6)


def test_load_labelme_files_draws_the_centrelines(synth_folder):
    frames = load_frames(synth_folder / "images", video="run1", label_width=3, min_pixels=1)
    assert len(frames) == N_SAMPLES and {f.video for f in frames} == {"run1"}
    for index, loaded in enumerate(frames):
        sample = generated(index)
        assert len(loaded.masks) == len(sample.centrelines)
        np.testing.assert_array_equal(loaded.masks, centrelines_to_masks(sample.centrelines, SIZE, width=3))


def test_load_line_labels_one_mask_per_line(tmp_path):
    expected = write_line_labels(tmp_path / "lines")
    frames = load_frames(tmp_path / "lines")
    assert [f.image_id for f in frames] == sorted(expected)
    assert [f.frame for f in frames] == [0, 10, 20]
    assert sum(len(masks) for _, masks in expected.values()) >= 4, "fixture drew too few lines to test"
    for loaded in frames:
        image, masks = expected[loaded.image_id]
        np.testing.assert_array_equal(to_uint8(loaded.image), image)
        assert same_mask_sets(loaded.masks, masks)


def test_min_pixels_drops_small_specks(tmp_path):
    folder = tmp_path / "specks"
    folder.mkdir()
    label = np.zeros((16, 16), np.uint8)
    label[2, 1:12] = 255  # an 11 px line
    label[10, 10:12] = 255  # a 2 px speck
    cv2.imwrite(str(folder / "a.png"), np.full((16, 16), 128, np.uint8))
    cv2.imwrite(str(folder / "a_dislocations.png"), label)
    assert len(load_frames(folder, min_pixels=5)[0].masks) == 1
    assert len(load_frames(folder, min_pixels=1)[0].masks) == 2
    assert load_frames(folder)[0].frame is None


def test_missing_and_empty_folders(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_frames(tmp_path / "nowhere")
    (tmp_path / "empty").mkdir()
    with pytest.raises(LabelledDataError, match=r"no labelled frames in .*empty"):
        load_frames(tmp_path / "empty")


def test_dataset_without_masks_is_named(synth_folder, tmp_path):
    copy = shutil.copytree(synth_folder, tmp_path / "nomasks")
    shutil.rmtree(copy / "masks")
    with pytest.raises(LabelledDataError, match=r"dataset folder without masks: .*nomasks"):
        load_frames(copy)
    copy = shutil.copytree(synth_folder, tmp_path / "onemissing")
    (copy / "masks" / "000001.npz").unlink()
    with pytest.raises(LabelledDataError, match=r"dataset folder without masks: .*000001\.npz"):
        load_frames(copy)


def test_labelme_without_dislocation_shapes_lists_what_it_found(tmp_path):
    folder = tmp_path / "shapes"
    folder.mkdir()
    cv2.imwrite(str(folder / "a.png"), np.zeros((16, 16), np.uint8))
    document = {"version": "5.5.0", "flags": {}, "imagePath": "a.png", "imageData": None,
                "imageHeight": 16, "imageWidth": 16,
                "shapes": [{"label": "pore", "points": [[1, 1], [5, 5]], "shape_type": "rectangle",
                            "group_id": None, "flags": {}}]}
    (folder / "a.json").write_text(json.dumps(document))
    with pytest.raises(LabelledDataError, match="has a dislocation shape") as info:
        load_frames(folder)
    message = str(info.value)
    assert str(folder) in message and "'pore' (rectangle)" in message


def test_empty_labels_allowed_only_beside_labelled_frames(tmp_path, synth_folder):
    folder = tmp_path / "mixed"
    folder.mkdir()
    write_labelme(folder / "empty.json", [], image_shape=SIZE, image_path="empty.png")
    cv2.imwrite(str(folder / "empty.png"), np.zeros(SIZE, np.uint8))
    with pytest.raises(LabelledDataError, match="has a dislocation shape.*no shapes at all"):
        load_frames(folder)
    write_labelme(folder / "full.json", [np.array([[2.0, 2.0], [30.0, 20.0]])], image_shape=SIZE,
                  image_path="full.png")
    cv2.imwrite(str(folder / "full.png"), np.zeros(SIZE, np.uint8))
    frames = load_frames(folder)
    assert [len(f.masks) for f in frames] == [0, 1]


def test_load_frames_rejects_bad_arguments(synth_folder):
    with pytest.raises(ValueError, match="label_width"):
        load_frames(synth_folder, label_width=0)
    with pytest.raises(ValueError, match="min_pixels"):
        load_frames(synth_folder, min_pixels=0)
    with pytest.raises(TypeError, match="video"):
        load_frames(synth_folder, video="")


def test_labelled_frame_checks_shapes():
    with pytest.raises(ValueError, match="masks are"):
        LabelledFrame("v", 0, "a", np.zeros((4, 4), np.float32), np.zeros((1, 4, 5), np.uint8))
    with pytest.raises(ValueError, match="float32"):
        LabelledFrame("v", 0, "a", np.zeros((4, 4), np.uint8), np.zeros((0, 4, 4), np.uint8))


# --- split_frames ----------------------------------------------------------------------


def test_split_by_video_sends_whole_videos_to_validation():
    frames = [frame("a", i) for i in range(5)] + [frame("c", i) for i in range(2)] + [frame("b", i) for i in range(3)]
    split = split_frames(frames, val_fraction=0.2)
    assert split.rule == "video" and split.dropped == 0
    assert {f.video for f in split.val} == {"c"} and {f.video for f in split.train} == {"a", "b"}
    assert {f.video for f in split_frames(frames, val_fraction=0.5).val} == {"b", "c"}
    # Never every video: one stays for training.
    assert {f.video for f in split_frames(frames, val_fraction=0.95).train} == {"a"}
    assert [f.video for f in frames] == ["a"] * 5 + ["c"] * 2 + ["b"] * 3  # input not modified


def test_split_by_time_keeps_a_gap_and_the_latest_frames_for_validation():
    rng = np.random.default_rng(0)
    frames = [frame("v", int(i)) for i in rng.permutation(100)]
    split = split_frames(frames, val_fraction=0.2, gap=5)
    assert split.rule == "time"
    val, train = sorted(f.frame for f in split.val), sorted(f.frame for f in split.train)
    assert val == list(range(80, 100))
    assert train == list(range(0, 75))
    assert split.dropped == 5
    assert not {id(f) for f in split.val} & {id(f) for f in split.train}
    assert min(val) - max(train) > 5


def test_split_by_time_needs_frame_numbers():
    frames = [frame("v", None, image_id=name) for name in ("left", "right", "top")]
    with pytest.raises(LabelledDataError, match="frame numbers"):
        split_frames(frames)


def test_split_edge_cases():
    frames = [frame("v", i) for i in range(0, 50, 10)]
    split = split_frames(frames, val_fraction=0)
    assert split.rule == "none" and len(split.train) == 5 and split.val == []
    with pytest.raises(ValueError, match="val_fraction"):
        split_frames(frames, val_fraction=1.0)
    with pytest.raises(ValueError, match="gap"):
        split_frames(frames, gap=-1)
    with pytest.raises(ValueError, match="drops every training frame"):
        split_frames(frames, val_fraction=0.2, gap=100)
    with pytest.raises(ValueError, match="at least 2 frames"):
        split_frames(frames[:1])


# --- CropDataset -----------------------------------------------------------------------


def find_crop(crop: np.ndarray, frames) -> list[tuple[int, int, int]]:
    """Every (frame, row, column) where ``crop`` appears exactly."""
    hits = []
    for k, f in enumerate(frames):
        windows = np.lib.stride_tricks.sliding_window_view(f.image, crop.shape)
        rows, cols = np.nonzero((windows == crop).all(axis=(2, 3)))
        hits += [(k, int(r), int(c)) for r, c in zip(rows, cols)]
    return hits


@pytest.fixture(scope="module")
def synth_frames(synth_folder):
    return load_frames(synth_folder)


def test_crops_are_pixels_of_a_frame_and_masks_follow(synth_frames):
    dataset = CropDataset(synth_frames, size=(32, 40), max_masks=8, seed=1, min_mask_pixels=10, partial=False)
    seen = set()
    for index in range(6):
        item = dataset.item(index)
        assert item["image"].shape == (1, 32, 40) and item["masks"].shape == (8, 32, 40)
        assert item["image"].dtype == torch.float32 and item["masks"].dtype == torch.float32
        assert int(item["index"]) == index and bool(item["partial"]) is False
        hits = find_crop(item["image"][0].numpy(), synth_frames)
        assert len(hits) == 1, f"item {index}: crop found {len(hits)} times in the frames"
        k, y, x = hits[0]
        seen.add(k)
        expected = big_enough(synth_frames[k].masks[:, y:y + 32, x:x + 40], 10)[:8]
        n = int(item["count"])
        assert n == len(expected)
        np.testing.assert_array_equal(item["masks"][:n].numpy(), expected)
        assert not item["masks"][n:].any()
    assert len(seen) >= 2, "six crops all from one frame: the frame choice is not random"


def test_small_frames_are_padded_with_their_median():
    rng = np.random.default_rng(3)
    image = rng.random((20, 24), dtype=np.float32)
    masks = np.zeros((1, 20, 24), np.uint8)
    masks[0, 5, 2:20] = 1
    source = LabelledFrame("v", 0, "small", image, masks)
    dataset = CropDataset([source], size=(32, 40), seed=0)
    before = image.copy(), masks.copy()
    for index in range(3):
        item = dataset.item(index)
        item["image"].zero_()  # items are copies: changing one leaves the frame alone
        item = dataset.item(index)
        crop = item["image"][0].numpy()
        windows = np.lib.stride_tricks.sliding_window_view(crop, image.shape)
        rows, cols = np.nonzero((windows == image).all(axis=(2, 3)))
        assert len(rows) == 1
        y, x = int(rows[0]), int(cols[0])
        outside = np.ones(crop.shape, bool)
        outside[y:y + 20, x:x + 24] = False
        np.testing.assert_array_equal(crop[outside], np.median(image))
        assert int(item["count"]) == 1
        np.testing.assert_array_equal(item["masks"][0, y:y + 20, x:x + 24].numpy(), masks[0])
        assert not item["masks"][0].numpy()[outside].any()
    np.testing.assert_array_equal(image, before[0])
    np.testing.assert_array_equal(masks, before[1])


def test_max_masks_keeps_the_largest_and_small_masks_are_dropped():
    masks = np.zeros((6, 16, 32), np.uint8)
    lengths = [12, 30, 20, 5, 25, 15]  # pixels of each mask, one row each
    for i, n in enumerate(lengths):
        masks[i, 2 * i, :n] = 1
    source = LabelledFrame("v", 0, "f", np.zeros((16, 32), np.float32), masks)
    item = CropDataset([source], size=(16, 32), max_masks=3, min_mask_pixels=10).item(0)
    assert int(item["count"]) == 3
    kept = item["masks"][:3].sum(dim=(1, 2)).tolist()
    assert kept == [30, 20, 25]  # the three largest, in frame order
    item = CropDataset([source], size=(16, 32), max_masks=10, min_mask_pixels=10).item(0)
    assert int(item["count"]) == 5  # the 5 px mask is below min_mask_pixels


def test_frames_are_chosen_by_area():
    n = 400
    small = LabelledFrame("v", 0, "s", np.full((10, 10), 0.25, np.float32), np.zeros((0, 10, 10), np.uint8))
    large = LabelledFrame("v", 1, "l", np.full((10, 30), 0.75, np.float32), np.zeros((0, 10, 30), np.uint8))
    dataset = CropDataset([small, large], size=8, seed=2)
    share = np.mean([float(dataset.item(i)["image"][0, 0, 0]) == 0.25 for i in range(n)])
    # Expected 1/4; binomial sd = sqrt(0.25 * 0.75 / 400) = 0.022; allow 4 sd.
    assert abs(share - 0.25) < 0.09


def test_crop_stream_is_the_same_for_any_number_of_workers(synth_frames):
    dataset = CropDataset(synth_frames, size=24, max_masks=4, seed=9, length=6)
    assert len(dataset) == 6
    serial = {int(b["index"]): b for b in DataLoader(dataset, batch_size=None, num_workers=0)}
    parallel = {int(b["index"]): b for b in DataLoader(dataset, batch_size=None, num_workers=2)}
    assert sorted(serial) == sorted(parallel) == list(range(6))
    for index in serial:
        for key in ("image", "masks", "count", "partial"):
            assert torch.equal(serial[index][key], parallel[index][key])
    again = CropDataset(synth_frames, size=24, max_masks=4, seed=9).item(3)
    assert torch.equal(again["image"], serial[3]["image"])
    other = CropDataset(synth_frames, size=24, max_masks=4, seed=10).item(3)
    assert not torch.equal(other["image"], serial[3]["image"])


def test_crop_dataset_rejects_bad_arguments(synth_frames):
    with pytest.raises(ValueError, match="empty"):
        CropDataset([], size=8)
    with pytest.raises(ValueError, match="size"):
        CropDataset(synth_frames, size=0)
    with pytest.raises(ValueError, match="size"):
        CropDataset(synth_frames, size=(8, 8, 8))
    with pytest.raises(ValueError, match="max_masks"):
        CropDataset(synth_frames, size=8, max_masks=0)
    with pytest.raises(TypeError, match="LabelledFrame"):
        CropDataset([np.zeros((8, 8))], size=8)
    with pytest.raises(TypeError, match="endless"):
        len(CropDataset(synth_frames, size=8))


def test_real_twip_frames(real_data):
    folder = real_data / "twip-8.4um" / "labeled"
    if not folder.is_dir():
        pytest.skip(f"labelled TWIP frames not found at {folder}")
    frames = load_frames(folder)
    assert len(frames) == 59
    assert all(15 <= len(f.masks) <= 27 for f in frames)
    assert all(f.image.shape == (362, 700) for f in frames)
    split = split_frames(frames)
    assert split.rule == "time" and len(split.val) == 12
    train = sorted(f.frame for f in split.train)
    val = sorted(f.frame for f in split.val)
    assert val == sorted(f.frame for f in frames)[-12:]
    assert min(val) - max(train) > 5
    item = CropDataset(split.train, size=256, seed=0).item(0)
    assert item["image"].shape == (1, 256, 256) and 0 <= int(item["count"]) <= 20 and bool(item["partial"])
