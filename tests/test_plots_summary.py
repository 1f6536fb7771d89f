"""Tests of the small-multiple plots (temtrack.tracker.plots) and the HTML summary
(temtrack.sdk.summary): tables built by hand with known pile-ups, and one real run of a
tiny synthetic video."""

from __future__ import annotations

import base64
import html
import itertools
import json
import re

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from temtrack.tracker import PlotSettings, pileup_sizes, plot_pairs, plot_positions, render_page, write_plots
from temtrack.tracker.timeseries import PAIR_COLUMNS, TRACK_COLUMNS

MAX_SIZE = (2000, 1600)  # px, largest page


def tables(sizes, *, frames: int = 10, short=None, fps: float | None = 10.0, pixel_size_nm: float | None = None):
    """Hand-made tracks and pairs tables.

    Pile-up ``p`` holds ``sizes[p]`` tracks seen in all ``frames`` frames, 10 px apart and
    gliding 1 px per frame, with a pair between each two neighbours, and ``short[p]``
    tracks seen in the first 2 frames only (no pairs).
    """
    short = short or [0] * len(sizes)
    tracks, pairs, track = [], [], 0
    for pileup, (n, m) in enumerate(zip(sizes, short)):
        ids = list(range(track, track + n + m))
        track += n + m
        for frame in range(frames):
            time_s = np.nan if fps is None else frame / fps
            for rank, tid in enumerate(ids):
                if rank >= n and frame >= 2:
                    continue
                tracks.append({"frame": frame, "time_s": time_s, "track_id": tid, "pileup": pileup,
                               "position_px": 10.0 * rank + frame})
            for a, b in itertools.pairwise(ids[:n]):
                pairs.append({"frame": frame, "time_s": time_s, "pileup": pileup, "track_a": a, "track_b": b,
                              "distance_px": 10.0 + 0.1 * frame})
    return _frame(tracks, TRACK_COLUMNS, pixel_size_nm), _frame(pairs, PAIR_COLUMNS, pixel_size_nm)


def _frame(rows, columns, pixel_size_nm):
    table = pd.DataFrame(rows, columns=list(columns))
    for name in ("position", "distance"):
        if f"{name}_nm" in table:
            table[f"{name}_nm"] = table[f"{name}_px"] * pixel_size_nm if pixel_size_nm else np.nan
    return table.astype(columns)


def comment(path) -> dict:
    """The JSON a page carries: kind, page, pages, the pile-ups drawn, those left out."""
    with Image.open(path) as image:
        return json.loads(image.text["Comment"])


def size(path) -> tuple[int, int]:
    with Image.open(path) as image:
        return image.size


# -- plots --------------------------------------------------------------------------------


@pytest.mark.parametrize("n, pages", [(1, [1]), (16, [16]), (17, [16, 1]), (40, [16, 16, 8])])
def test_pages_and_panels_per_page(tmp_path, n, pages):
    tracks, pairs = tables([2] * n, frames=6)
    files = write_plots(tracks, pairs, tmp_path)
    names = [f"{kind}_{i:02d}.png" for kind in ("pair_distances", "positions") for i in range(1, len(pages) + 1)]
    assert [f.name for f in files] == names
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(names)  # nothing else, no temporary files
    for kind in ("pair_distances", "positions"):
        seen = [comment(tmp_path / f"{kind}_{i:02d}.png") for i in range(1, len(pages) + 1)]
        assert [len(c["pileups"]) for c in seen] == pages
        assert all(c["pages"] == len(pages) for c in seen)
        assert sorted(p for c in seen for p in c["pileups"]) == list(range(n))  # each pile-up once


def test_pages_are_capped_and_say_how_many_were_left_out(tmp_path):
    tracks, pairs = tables([2] * 30, frames=6)
    files = write_plots(tracks, pairs, tmp_path, settings=PlotSettings(max_pileups=20, per_page=8))
    assert [f.name for f in files] == [f"{k}_{i:02d}.png" for k in ("pair_distances", "positions") for i in (1, 2, 3)]
    last = comment(tmp_path / "positions_03.png")
    assert len(last["pileups"]) == 4 and last["left_out_beyond_max"] == 10 and last["pileups_total"] == 30
    with Image.open(tmp_path / "positions_01.png") as image:
        assert "10 beyond the largest 20" in image.text["Description"]


def test_pileups_are_ordered_by_track_frames_then_tracks():
    # track-frames: pile-up 0: 2*10=20, 1: 5*10=50, 2: 3*10+2*2=34, 3: 1*10+5*2=20 with 6 tracks
    tracks, _ = tables([2, 5, 3, 1], frames=10, short=[0, 0, 2, 5])
    sizes = pileup_sizes(tracks)
    assert sizes.index.tolist() == [1, 2, 3, 0]  # 3 before 0: same track-frames, more tracks
    assert sizes["track_frames"].tolist() == [50, 34, 20, 20]
    assert sizes["tracks"].tolist() == [5, 5, 6, 2]
    assert sizes.loc[2, ["frames", "first_frame", "last_frame"]].tolist() == [10, 0, 9]


def test_pair_and_position_pages_share_the_ranking(tmp_path):
    tracks, pairs = tables([2, 5, 3, 1], frames=10, short=[0, 0, 2, 5])
    write_plots(tracks, pairs, tmp_path)
    assert comment(tmp_path / "positions_01.png")["pileups"] == [1, 2, 3, 0]
    assert comment(tmp_path / "pair_distances_01.png")["pileups"] == [1, 2, 0]  # pile-up 3 has no pair
    # Alone, the pairs table ranks by its own rows (pair-frames): the same here.
    plot_pairs(pairs, tmp_path / "alone.png")
    assert comment(tmp_path / "alone.png")["pileups"] == [1, 2, 0]


def test_short_series_are_grey_and_pileups_of_only_short_series_are_left_out(tmp_path):
    tracks, _ = tables([0, 3, 0], frames=10, short=[4, 2, 1])  # pile-ups 0 and 2: only 2-frame tracks
    plot_positions(tracks, tmp_path / "p.png")
    page = comment(tmp_path / "p.png")
    assert page["pileups"] == [1] and page["left_out_short"] == 2 and page["min_frames"] == 5
    with Image.open(tmp_path / "p.png") as image:
        assert "2 never followed for 5 frames in a row" in image.text["Description"]
        assert "grey: series never followed for 5 frames in a row" in image.text["Description"]
    plot_positions(tracks, tmp_path / "all.png", settings=PlotSettings(min_frames=2))
    assert comment(tmp_path / "all.png")["pileups"] == [1, 0, 2]  # 34, 8 and 2 track-frames


def test_series_with_gaps_count_their_longest_stretch(tmp_path):
    """Gaps of more than 3 frames break a line; a series needs 5 frames in a row (shorter gaps bridged)."""
    frames = {0: [0, 10, 20, 30, 40, 50, 60],  # 7 frames, never 2 in a row: grey, so no panel
              1: [0, 1, 2, 10, 11, 12, 13, 14],  # 5 in a row after a gap: a line
              2: [0, 2, 4, 6, 8]}  # gaps of 2 frames are bridged: a line
    tracks, _ = tables([], frames=1)
    rows = [{"frame": f, "time_s": f / 10, "track_id": p, "pileup": p, "position_px": 1.0 * f}
            for p, fs in frames.items() for f in fs]
    tracks = pd.concat([tracks, pd.DataFrame(rows)], ignore_index=True).astype(TRACK_COLUMNS)
    page = comment(plot_positions(tracks, tmp_path / "p.png"))
    assert page["pileups"] == [1, 2] and page["left_out_short"] == 1


def test_a_table_of_only_short_series_says_so(tmp_path):
    tracks, pairs = tables([0, 0], frames=10, short=[3, 1])
    files = write_plots(tracks, pairs, tmp_path)
    assert [f.name for f in files] == ["pair_distances_01.png", "positions_01.png"]
    assert comment(files[1])["empty"] == "no track was followed for 5 frames in a row"
    assert comment(files[0])["empty"].startswith("no neighbour pairs")


def test_image_sizes_stay_within_bounds(tmp_path):
    for n in (1, 3, 6, 16):
        tracks, _ = tables([3] * n, frames=8)
        path = plot_positions(tracks, tmp_path / f"{n}.png")
        width, height = size(path)
        assert 500 <= width <= MAX_SIZE[0] and 300 <= height <= MAX_SIZE[1], (n, width, height)
    width, height = size(tmp_path / "16.png")  # 4 x 4 panels of 400 x 290 px at dpi 100, and the header
    assert width == 1600 and 1160 + 50 <= height <= 1160 + 120


def test_empty_tables_give_a_page_that_says_no_dislocations(tmp_path):
    tracks, pairs = tables([], frames=5)
    assert tracks.empty and pairs.empty
    files = write_plots(tracks, pairs, tmp_path)
    assert [f.name for f in files] == ["pair_distances_01.png", "positions_01.png"]
    for path in files:
        assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        assert comment(path)["empty"] == "no dislocations" and comment(path)["pileups"] == []
        with Image.open(path) as image:
            assert "no dislocations" in image.text["Description"]
        width, height = size(path)
        assert width <= MAX_SIZE[0] and height <= MAX_SIZE[1]


def test_plots_in_nm_and_without_time(tmp_path):
    tracks, pairs = tables([3, 2], frames=6, pixel_size_nm=2.0, fps=None)
    files = write_plots(tracks, pairs, tmp_path, unit="nm")
    assert [comment(f)["unit"] for f in files] == ["nm", "nm"]
    uncalibrated, _ = tables([3], frames=6)
    with pytest.raises(ValueError, match="no pixel size"):
        write_plots(uncalibrated, pairs, tmp_path, unit="nm")


def test_inputs_are_not_modified(tmp_path):
    tracks, pairs = tables([3, 2, 1], frames=7, short=[1, 0, 2])
    before = tracks.copy(), pairs.copy()
    write_plots(tracks, pairs, tmp_path)
    render_page("pairs", pairs, tracks=tracks)
    pd.testing.assert_frame_equal(tracks, before[0])
    pd.testing.assert_frame_equal(pairs, before[1])


def test_plot_arguments_are_checked(tmp_path):
    tracks, pairs = tables([2] * 3, frames=6)
    with pytest.raises(ValueError, match="page must be <= 1"):
        plot_pairs(pairs, tmp_path / "x.png", page=2)
    with pytest.raises(ValueError, match="kind must be one of"):
        render_page("lengths", tracks)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        write_plots(tracks, pairs, tmp_path / "missing")
    with pytest.raises(TypeError, match="unknown option.*'panels'.*per_page"):
        PlotSettings.from_options("plots", {"panels": 4})
    with pytest.raises(ValueError, match="per_page must be >= 1"):
        PlotSettings(per_page=0)
    with pytest.raises(TypeError, match="settings must be a PlotSettings"):
        write_plots(tracks, pairs, tmp_path, settings={"per_page": 4})
    with pytest.raises(ValueError, match="tracks lacks column"):
        write_plots(pairs, pairs, tmp_path)
    assert list(tmp_path.iterdir()) == []


# -- summary ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """A real run: a tiny synthetic video through the classical backend."""
    from temtrack.sdk.analyzer import Analyzer
    from temtrack.sdk.results import read_metadata
    from temtrack.training.synth import resolve_config
    from temtrack.training.synth.video import VideoSettings, write_video

    folder = tmp_path_factory.mktemp("run")
    video, _ = write_video(folder, resolve_config("sd1", size=96), 4, VideoSettings(frames=8), progress=False)
    result = Analyzer(backend="classical", workers=0).run(video, folder / "s.parquet", progress=False)
    tables_ = {name: pd.read_parquet(path) for name, path in result.paths.items()}
    return {"video": video, "metadata": read_metadata(result.paths["splines"]), **tables_}


def _images(page: str) -> list[str]:
    """The class of each embedded image's figure, in order."""
    return re.findall(r"<figure class='(\w+)'><img src='data:image/(?:png|jpeg);base64,", page)


def _self_contained(page: str) -> None:
    assert "<script" not in page.lower()
    sources = re.findall(r"""src=['"]([^'"]*)""", page)
    assert sources and all(s.startswith("data:image/") for s in sources)
    assert not re.search(r"""(href|url)\s*[=(]\s*['"]?(https?:|file:|/)""", page)
    for data in re.findall(r"base64,([A-Za-z0-9+/=]+)", page):
        assert base64.b64decode(data, validate=True)[:4] in (b"\x89PNG", b"\xff\xd8\xff\xe0", b"\xff\xd8\xff\xdb")


def test_summary_holds_the_counts_and_the_stills(tmp_path, run):
    from temtrack.sdk.summary import write_summary

    splines, tracks, pairs = run["splines"], run["tracks"], run["pairs"]
    assert len(splines) > 0 and splines["frame"].nunique() == 8
    path = write_summary(tmp_path / "s_summary.html", splines=splines, tracks=tracks, pairs=pairs,
                         metadata=run["metadata"], source=run["video"], stills=4)
    assert path == tmp_path / "s_summary.html"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["s_summary.html"]  # written atomically
    page = path.read_text(encoding="utf-8")
    _self_contained(page)
    n_tracks = splines.loc[splines["track_id"] >= 0, "track_id"].nunique()
    counts = splines.groupby("frame").size()
    assert f"<th>tracks</th><td>{n_tracks:,}</td>" in page
    assert f"<th>dislocations (all frames)</th><td>{len(splines):,}</td>" in page
    assert f"<th>pile-ups</th><td>{tracks['pileup'].nunique():,}</td>" in page
    assert "<th>frames processed</th><td>8</td>" in page
    assert f"max {counts.max()}" in page and f"median {np.median(counts):g}" in page
    assert f"<td>{html.escape(str(run['video']))}</td>" in page and "15 frames/s" in page
    assert "classical" in page
    figures = _images(page)
    assert figures.count("still") == 4 and figures.count("raw") == 4  # each still beside its frame as read
    assert figures.count("plot") == 4  # per frame, track lengths, positions, pair distances
    for frame in (0, 2, 5, 7):  # 4 frames evenly spaced over 0-7
        n = int(counts.get(frame, 0))
        assert f"frame {frame}, t = {frame / 15:.2f} s: {n} dislocation" in page


def test_summary_says_how_the_frames_were_scaled_lit_and_which_lines_were_looked_for(tmp_path, run):
    from temtrack.sdk.summary import write_summary

    metadata = {**run["metadata"], "scale_choice": {"scale": 0.543, "reason": "line width sigma 3.10 px: resampled"}}
    metadata["settings"] = {**metadata["settings"], "pipeline": {"scale": "auto", "lines": "bright", "flatten": 45.0}}
    page = write_summary(tmp_path / "a.html", splines=run["splines"], tracks=run["tracks"], pairs=run["pairs"],
                         metadata=metadata).read_text(encoding="utf-8")
    assert "<th>scale</th><td>0.543 model px per frame px: line width sigma 3.10 px: resampled</td>" in page
    assert "<th>lines</th><td>bright (dark field)" in page
    assert "<th>illumination</th><td>evened out before the model (divided by its blur of 45 model px)" in page
    plain = write_summary(tmp_path / "b.html", splines=run["splines"], tracks=run["tracks"], pairs=run["pairs"],
                          metadata=run["metadata"]).read_text(encoding="utf-8")
    # The classical backend: none applies.
    assert "<th>scale</th>" not in plain and "<th>lines</th>" not in plain and "<th>illumination</th>" not in plain


def test_summary_without_a_source_has_no_stills(tmp_path, run):
    from temtrack.sdk.summary import write_summary

    page = write_summary(tmp_path / "s.html", splines=run["splines"], tracks=run["tracks"], pairs=run["pairs"],
                         metadata=run["metadata"]).read_text()
    assert "still" not in _images(page) and "No stills: the source was not given" in page
    page = write_summary(tmp_path / "s.html", splines=run["splines"], tracks=run["tracks"], pairs=run["pairs"],
                         metadata=run["metadata"], source=tmp_path / "gone.mp4").read_text()
    assert "still" not in _images(page) and "could not be opened" in page


def test_summary_of_an_empty_run_says_no_dislocations(tmp_path, run):
    from temtrack.sdk.summary import write_summary

    splines, tracks, pairs = (run[name].iloc[:0] for name in ("splines", "tracks", "pairs"))
    page = write_summary(tmp_path / "s.html", splines=splines, tracks=tracks, pairs=pairs, metadata=run["metadata"],
                         source=run["video"], stills=2).read_text()
    _self_contained(page)
    assert "No dislocations were found</b> in the 8 frames processed" in page
    assert "<th>tracks</th><td>0</td>" in page and "<th>frames processed</th><td>8</td>" in page
    assert _images(page) == ["plot", "raw", "still", "raw", "still"]  # dislocations per frame (all 0), 2 stills
    assert "frame 7, t = 0.47 s: 0 dislocations" in page
    # Nothing known at all: still a page.
    page = write_summary(tmp_path / "s.html", splines=splines, tracks=tracks, pairs=pairs, metadata={}).read_text()
    assert "No dislocations were found</b> in the 0 frames processed" in page and "unknown" in page


def test_summary_inputs_are_checked_and_not_modified(tmp_path, run):
    from temtrack.sdk.summary import write_summary

    tables_ = {name: run[name] for name in ("splines", "tracks", "pairs")}
    before = {name: table.copy() for name, table in tables_.items()}
    write_summary(tmp_path / "s.html", **tables_, metadata=run["metadata"], stills=0)
    for name, table in tables_.items():
        pd.testing.assert_frame_equal(table, before[name])
    with pytest.raises(TypeError, match="splines must be a pandas DataFrame"):
        write_summary(tmp_path / "x.html", **{**tables_, "splines": {}}, metadata={})
    with pytest.raises(ValueError, match="pairs lacks column"):
        write_summary(tmp_path / "x.html", **{**tables_, "pairs": tables_["tracks"]}, metadata={})
    with pytest.raises(TypeError, match="metadata must be a dict"):
        write_summary(tmp_path / "x.html", **tables_, metadata="run.json")
    with pytest.raises(ValueError, match="stills must be an int from 0 to 16"):
        write_summary(tmp_path / "x.html", **tables_, metadata={}, stills=-1)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        write_summary(tmp_path / "missing" / "x.html", **tables_, metadata={})
    assert sorted(p.name for p in tmp_path.iterdir()) == ["s.html"]
