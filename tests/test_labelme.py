"""Tests of labelme interop (temtrack.sdk.labelme writes, temtrack.sdk.groundtruth reads)
and of centreline rasterisation."""

import json
import math

import numpy as np
import pytest

from temtrack.sdk.groundtruth import (
    LabelmeAnnotation,
    LabelmeError,
    centrelines_to_masks,
    read_labelme,
)
from temtrack.sdk.labelme import write_labelme


def _shape(points, label="dislocation", shape_type="linestrip", group_id=None):
    return {"label": label, "points": points, "group_id": group_id, "description": "",
            "shape_type": shape_type, "flags": {}, "mask": None}


def _dump(tmp_path, shapes, name="frame.json", **overrides):
    document = {"version": "5.5.0", "flags": {}, "shapes": shapes, "imagePath": "frame.png",
                "imageData": None, "imageHeight": 64, "imageWidth": 96}
    document.update(overrides)
    path = tmp_path / name
    path.write_text(json.dumps(document), encoding="utf-8")
    return path


def _random_lines(rng, count, shape=(64, 96)):
    return [rng.uniform(0, 1, size=(int(rng.integers(2, 9)), 2)) * (shape[1], shape[0]) for _ in range(count)]


# --- round trip ---------------------------------------------------------------------------

def test_round_trip_is_exact(tmp_path):
    rng = np.random.default_rng(0)
    lines = _random_lines(rng, 5)
    labels = ["dislocation", "Dislocation", "loop", "dislocation", "ünïcode"]
    group_ids = [3, None, 0, 17, 3]
    out = write_labelme(tmp_path / "a.json", lines, image_shape=(64, 96), image_path="a.png",
                        labels=labels, group_ids=group_ids)
    assert out == tmp_path / "a.json"
    ann = read_labelme(out)
    assert isinstance(ann, LabelmeAnnotation)
    assert ann.path == out and ann.image_path == "a.png" and ann.image_shape == (64, 96)
    assert ann.labels == labels and ann.group_ids == group_ids
    assert len(ann.centrelines) == len(lines)
    for got, want in zip(ann.centrelines, lines):
        assert got.dtype == np.float64 and got.shape == want.shape
        np.testing.assert_array_equal(got, want)


def test_round_trip_defaults_and_numpy_group_ids(tmp_path):
    rng = np.random.default_rng(1)
    lines = _random_lines(rng, 2)
    path = write_labelme(tmp_path / "b.json", lines, image_shape=(64, 96), group_ids=np.array([4, 5]))
    ann = read_labelme(path)
    assert ann.labels == ["dislocation", "dislocation"] and ann.group_ids == [4, 5]
    assert ann.image_path is None


def test_written_file_is_labelme5_layout(tmp_path):
    rng = np.random.default_rng(2)
    path = write_labelme(tmp_path / "c.json", _random_lines(rng, 1), image_shape=(64, 96),
                         image_path="c.png", group_ids=[7])
    doc = json.loads(path.read_text(encoding="utf-8"))
    assert doc["version"] == "5.5.0" and doc["flags"] == {} and doc["imageData"] is None
    assert (doc["imagePath"], doc["imageHeight"], doc["imageWidth"]) == ("c.png", 64, 96)
    (shape,) = doc["shapes"]
    assert set(shape) == {"label", "points", "group_id", "description", "shape_type", "flags", "mask"}
    assert shape["shape_type"] == "linestrip" and shape["group_id"] == 7 and shape["mask"] is None
    assert all(type(v) is float for point in shape["points"] for v in point)
    assert not list(tmp_path.glob(".*.tmp"))  # temporary file was renamed away


def test_empty_centrelines_round_trip(tmp_path):
    ann = read_labelme(write_labelme(tmp_path / "e.json", [], image_shape=(8, 9)))
    assert ann.centrelines == [] and ann.labels == [] and ann.group_ids == [] and ann.image_shape == (8, 9)


# --- reading ------------------------------------------------------------------------------

def test_polygon_as_centreline_drops_closing_edge(tmp_path):
    points = [[1.0, 2.0], [10.0, 3.0], [20.5, 9.0]]
    path = _dump(tmp_path, [_shape(points, shape_type="polygon")])
    (line,) = read_labelme(path).centrelines
    np.testing.assert_array_equal(line, np.array(points))


def test_polygon_with_repeated_first_point_is_opened(tmp_path):
    points = [[1.0, 2.0], [10.0, 3.0], [20.5, 9.0], [1.0, 2.0]]
    (line,) = read_labelme(_dump(tmp_path, [_shape(points, shape_type="polygon")])).centrelines
    np.testing.assert_array_equal(line, np.array(points[:-1]))


def test_polygon_as_outline_gives_principal_axis(tmp_path):
    outline = [[0.0, 0.0], [10.0, 0.0], [10.0, 2.0], [0.0, 2.0]]
    path = _dump(tmp_path, [_shape(outline, shape_type="polygon"), _shape([[0, 0], [5, 5]])])
    ann = read_labelme(path, polygon_as="outline")
    np.testing.assert_allclose(ann.centrelines[0], [[0.0, 1.0], [10.0, 1.0]], atol=1e-12)
    np.testing.assert_array_equal(ann.centrelines[1], [[0.0, 0.0], [5.0, 5.0]])  # linestrips unchanged


def test_labels_filter_is_case_insensitive(tmp_path):
    shapes = [_shape([[0, 0], [1, 1]], label="Dislocation", group_id=1),
              _shape([[0, 0], [2, 2]], label="loop", group_id=2),
              _shape([[0, 0], [3, 3]], label="DISLOCATION", group_id=3)]
    path = _dump(tmp_path, shapes)
    assert read_labelme(path, labels=["dislocation"]).group_ids == [1, 3]
    assert read_labelme(path, labels="LOOP").labels == ["loop"]
    assert read_labelme(path, labels=("loop", "dislocation")).group_ids == [1, 2, 3]
    assert read_labelme(path, labels=[]).centrelines == []
    assert read_labelme(path).group_ids == [1, 2, 3]


def test_non_line_shapes_are_ignored(tmp_path):
    shapes = [_shape([[0, 0], [4, 4]], shape_type="rectangle"),
              _shape([[5, 5], [7, 5]], shape_type="circle"),
              _shape([[1, 1]], shape_type="point"),
              _shape([[1, 1], [2, 2], [3, 1]], shape_type="points"),
              _shape([[0, 0], [3, 3]], shape_type="mask"),
              _shape([[0, 0], [9, 9]], shape_type="line", group_id=1),
              _shape([[0, 0], [9, 1], [9, 9]], shape_type="linestrip", group_id=2)]
    ann = read_labelme(_dump(tmp_path, shapes))
    assert ann.group_ids == [1, 2]
    assert [len(c) for c in ann.centrelines] == [2, 3]


def _no_shapes(doc):
    del doc["shapes"]


def _drop_points(doc):
    del doc["shapes"][0]["points"]


def _one_point(doc):
    doc["shapes"][0]["points"] = [[1.0, 2.0]]


def _nan_point(doc):
    doc["shapes"][0]["points"][1][0] = math.nan


def _no_height(doc):
    del doc["imageHeight"]


def _zero_width(doc):
    doc["imageWidth"] = 0


def _string_coordinate(doc):
    doc["shapes"][0]["points"][0] = ["1", 2]


def _triple_point(doc):
    doc["shapes"][0]["points"][0] = [1, 2, 3]


@pytest.mark.parametrize("corrupt", [None, _no_shapes, _drop_points, _one_point, _nan_point, _no_height,
                                     _zero_width, _string_coordinate, _triple_point],
                         ids=["bad_json", "no_shapes", "shape_without_points", "one_point_line", "nan_coordinate",
                              "missing_image_height", "zero_image_width", "string_coordinate", "triple"])
def test_malformed_files_raise_labelme_error_naming_the_file(tmp_path, corrupt):
    path = tmp_path / "broken_annotation.json"
    if corrupt is None:
        path.write_text('{"shapes": [', encoding="utf-8")
    else:
        doc = {"version": "5.5.0", "flags": {}, "imagePath": None, "imageData": None,
               "imageHeight": 10, "imageWidth": 10, "shapes": [_shape([[1.0, 2.0], [3.0, 4.0]])]}
        corrupt(doc)
        path.write_text(json.dumps(doc), encoding="utf-8")  # json writes math.nan as NaN, which labelme accepts
    with pytest.raises(LabelmeError, match="broken_annotation.json"):
        read_labelme(path)


def test_non_utf8_file_raises_labelme_error(tmp_path):
    path = tmp_path / "latin1.json"
    path.write_bytes(b'{"shapes": [], "imagePath": "\xe9"}')  # latin-1 e-acute: invalid UTF-8
    with pytest.raises(LabelmeError, match="latin1.json"):
        read_labelme(path)


def test_utf8_bom_is_accepted(tmp_path):
    path = _dump(tmp_path, [_shape([[0, 0], [1, 1]])])
    path.write_bytes(b"\xef\xbb\xbf" + path.read_bytes())
    assert len(read_labelme(path).centrelines) == 1


def test_labelme_error_is_a_value_error():
    assert issubclass(LabelmeError, ValueError)


def test_missing_file_raises_file_not_found(tmp_path):
    path = tmp_path / "nowhere" / "missing.json"
    with pytest.raises(FileNotFoundError, match="missing.json"):
        read_labelme(path)


def test_bad_polygon_as_is_rejected(tmp_path):
    with pytest.raises(ValueError, match="polygon_as"):
        read_labelme(_dump(tmp_path, []), polygon_as="filled")


# --- writing ------------------------------------------------------------------------------

def test_overwrite_protection(tmp_path):
    rng = np.random.default_rng(3)
    path = write_labelme(tmp_path / "d.json", _random_lines(rng, 1), image_shape=(64, 96))
    before = path.read_bytes()
    with pytest.raises(FileExistsError, match="d.json"):
        write_labelme(path, _random_lines(rng, 2), image_shape=(64, 96))
    assert path.read_bytes() == before
    replacement = _random_lines(rng, 3)
    write_labelme(path, replacement, image_shape=(64, 96), overwrite=True)
    got = read_labelme(path).centrelines
    assert len(got) == 3
    for g, w in zip(got, replacement):
        np.testing.assert_array_equal(g, w)
    assert not list(tmp_path.glob(".*.tmp"))


@pytest.mark.parametrize("kwargs, match", [
    ({"centrelines": [np.zeros((1, 2))]}, "centrelines"),
    ({"centrelines": [np.full((2, 2), np.nan)]}, "centrelines"),
    ({"image_shape": (0, 5)}, "image_shape"),
    ({"labels": ["a", "b"]}, "labels"),
    ({"group_ids": [1.5]}, "group_ids"),
])
def test_write_validates_inputs(tmp_path, kwargs, match):
    args = {"centrelines": [np.zeros((2, 2))], "image_shape": (4, 4), **kwargs}
    with pytest.raises(ValueError, match=match):
        write_labelme(tmp_path / "v.json", args.pop("centrelines"), **args)
    assert not list(tmp_path.iterdir())


# --- rasterisation ------------------------------------------------------------------------

def test_width_one_line_lights_exactly_its_pixels():
    masks = centrelines_to_masks([np.array([[2.0, 5.0], [20.0, 5.0]])], (12, 30), width=1)
    assert masks.shape == (1, 12, 30) and masks.dtype == np.uint8
    expected = np.zeros((12, 30), np.uint8)
    expected[5, 2:21] = 1
    np.testing.assert_array_equal(masks[0], expected)


def test_width_three_covers_rows_four_to_six():
    mask = centrelines_to_masks([np.array([[2.0, 5.0], [20.0, 5.0]])], (12, 30), width=3)[0]
    assert set(np.unique(mask)) == {0, 1}
    assert np.array_equal(np.nonzero(mask.any(axis=1))[0], [4, 5, 6])
    assert mask[4:7, 2:21].all()


def test_empty_list_gives_zero_masks():
    masks = centrelines_to_masks([], (7, 5))
    assert masks.shape == (0, 7, 5) and masks.dtype == np.uint8


def test_masks_do_not_modify_inputs():
    rng = np.random.default_rng(4)
    lines = _random_lines(rng, 3, shape=(20, 30))
    copies = [line.copy() for line in lines]
    masks = centrelines_to_masks(lines, (20, 30), width=3)
    assert masks.shape == (3, 20, 30) and masks.reshape(3, -1).any(axis=1).all()
    for line, copy in zip(lines, copies):
        np.testing.assert_array_equal(line, copy)


def test_line_partly_outside_is_clipped():
    mask = centrelines_to_masks([np.array([[-50.0, 3.0], [4.0, 3.0], [4.0, 500.0]])], (10, 8), width=1)[0]
    expected = np.zeros((10, 8), np.uint8)
    expected[3, 0:5] = 1
    expected[3:, 4] = 1
    np.testing.assert_array_equal(mask, expected)


def test_wide_line_just_outside_still_reaches_the_border():
    mask = centrelines_to_masks([np.array([[0.0, -1.0], [6.0, -1.0]])], (5, 8), width=3)[0]
    assert mask[0, 0:7].all() and not mask[1:].any()


@pytest.mark.parametrize("kwargs, match", [
    ({"width": 0}, "width"),
    ({"width": 2.0}, "width"),
    ({"shape": (5,)}, "shape"),
    ({"shape": (5, -1)}, "shape"),
    ({"centrelines": np.zeros((3, 2))}, "centrelines"),
    ({"centrelines": [np.zeros((3, 3))]}, "centrelines"),
])
def test_masks_validate_inputs(kwargs, match):
    args = {"centrelines": [np.zeros((2, 2))], "shape": (5, 5), **kwargs}
    with pytest.raises(ValueError, match=match):
        centrelines_to_masks(args.pop("centrelines"), args.pop("shape"), **args)
