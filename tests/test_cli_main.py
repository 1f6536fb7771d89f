"""`tem-track VIDEO --out splines.parquet`: the main job from the command line.

Fixtures: a short synthetic video written by our generator (H.264 mp4) and tiny ONNX
models from ``_onnx_models`` whose output is known.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from _onnx_models import dark_line_model

from temtrack.cli import main
from temtrack.sdk.results import output_paths, read_metadata
from temtrack.training.synth import resolve_config
from temtrack.training.synth.video import VideoSettings, write_video

FRAMES = 12


@pytest.fixture(scope="module")
def video(tmp_path_factory):
    folder = tmp_path_factory.mktemp("video") / "synthetic"
    path, _ = write_video(folder, resolve_config("sd1", size=128), 4, VideoSettings(frames=FRAMES), progress=False)
    return path


def _main(*args) -> int:
    return main([str(a) for a in args])


def test_runs_a_video_into_three_tables(tmp_path, video, capsys):
    out = tmp_path / "splines.parquet"
    assert _main(video, "--out", out, "--workers", 0, "--quiet", "--pixel-size", 1.5) == 0
    printed = capsys.readouterr().out
    assert f"{FRAMES} frames" in printed and str(out) in printed
    paths = output_paths(out)
    splines = pd.read_parquet(paths["splines"])
    assert splines.frame.between(0, FRAMES - 1).all()
    np.testing.assert_allclose(splines.time_s, splines.frame / 15.0, atol=1e-6)  # the video's 15 fps
    np.testing.assert_allclose(splines.length_nm, splines.length_px * 1.5)
    meta = read_metadata(out)
    assert meta["input"]["name"] == str(video) and meta["input"]["kind"] == "video"
    # No --model: the bundled default model, hash-checked, on the fastest backend here.
    from temtrack.sdk.models import bundled_models

    (bundled,) = bundled_models()
    assert meta["backend"]["backend"] == "onnxruntime" and meta["backend"]["model"] == str(bundled.path)
    assert meta["backend"]["sha256"] == bundled.sha256
    assert meta["settings"]["tracker"]["method"] == "curve"
    assert meta["tem_track_version"]
    for name in ("tracks", "pairs"):
        assert paths[name].exists()


def test_existing_output_is_kept_without_overwrite(tmp_path, video, capsys):
    out = tmp_path / "splines.parquet"
    out.write_bytes(b"earlier results")
    assert _main(video, "--out", out, "--workers", 0, "--backend", "classical", "--quiet") == 2
    assert "already exists" in capsys.readouterr().err
    assert out.read_bytes() == b"earlier results"
    # Not a tem-track output: --overwrite does not replace it either.
    assert _main(video, "--out", out, "--workers", 0, "--backend", "classical", "--quiet", "--overwrite") == 2
    assert "not a tem-track output" in capsys.readouterr().err
    assert out.read_bytes() == b"earlier results"
    out.unlink()
    assert _main(video, "--out", out, "--workers", 0, "--backend", "classical", "--quiet", "--end", 3) == 0
    assert _main(video, "--out", out, "--workers", 0, "--backend", "classical", "--quiet", "--overwrite") == 0
    assert pd.read_parquet(out).frame.max() > 2  # replaced by the full run


def test_overlay_and_plots(tmp_path, video):
    import av

    overlay, plots = tmp_path / "overlay.mp4", tmp_path / "plots"
    assert _main(video, "--out", tmp_path / "s.parquet", "--workers", 0, "--backend", "classical", "--quiet", "--overlay", overlay, "--plots", plots) == 0
    with av.open(str(overlay)) as container:
        assert sum(1 for _ in container.decode(video=0)) == FRAMES
    assert sorted(p.name for p in plots.glob("*.png")) == ["pair_distances_01.png", "positions_01.png"]
    # The one-page summary beside the tables, with the counts of the splines table and 4 stills.
    page = (tmp_path / "s_summary.html").read_text()
    splines = pd.read_parquet(tmp_path / "s.parquet")
    assert f"{splines.track_id.nunique()}" in page and page.count("<img") >= 4
    assert _main(video, "--out", tmp_path / "t.parquet", "--workers", 0, "--backend", "classical", "--quiet",
                 "--no-summary", "--end", 2) == 0
    assert not (tmp_path / "t_summary.html").exists()


def test_onnx_model_output_is_mapped_to_frame_pixels(tmp_path, video):
    # A 1x1-convolution model at 64x64: the 128 px frame is shrunk by 2 and points come back x2.
    model = dark_line_model(tmp_path / "dark.onnx", size=(64, 64), n_masks=3, t=0.35)
    out = tmp_path / "s.parquet"
    assert _main(video, "--out", out, "--model", model, "--workers", 0, "--quiet", "--batch-size", 3) == 0
    meta = read_metadata(out)
    assert meta["model_sha256"] and meta["backend"]["metadata"]["input_size"] == [64, 64]
    splines = pd.read_parquet(out)
    assert len(splines)
    xs = np.concatenate(splines.x.to_numpy())
    assert xs.min() >= -0.5 and xs.max() <= 127.5 and xs.max() > 64  # frame px, not model px


@pytest.mark.parametrize(
    "make, message",
    [
        (lambda p, v: p / "missing.mp4", "missing.mp4"),
        (lambda p, v: _truncated(p, v), "truncated"),
        (lambda p, v: _write(p / "notes.txt", b"dislocations " * 500), "unsupported"),
    ],
    ids=["missing", "truncated", "unsupported"],
)
def test_bad_video_is_a_clear_error(tmp_path, video, capsys, make, message):
    bad = make(tmp_path, video)
    assert _main(bad, "--out", tmp_path / "s.parquet", "--workers", 0, "--quiet") == 2
    err = capsys.readouterr().err
    assert bad.name in err and message in err.lower()
    assert not (tmp_path / "s.parquet").exists()


def test_bad_model_is_a_clear_error(tmp_path, video, capsys):
    model = _write(tmp_path / "model.onnx", b"not a model at all")
    assert _main(video, "--out", tmp_path / "s.parquet", "--model", model, "--quiet") == 2
    err = capsys.readouterr().err
    assert "model.onnx" in err and "onnx" in err.lower()


def test_bad_options_are_clear_errors(tmp_path, video, capsys):
    assert _main(video, "--out", tmp_path / "s.parquet", "--every", 0, "--quiet") == 2
    assert "every" in capsys.readouterr().err
    assert _main(video, "--out", tmp_path / "s.parquet", "--tracker", "magic", "--quiet") == 2
    assert "curve" in capsys.readouterr().err
    assert _main(video, "--out", tmp_path / "s.parquet", "--tracker-option", "speed=3", "--quiet") == 2
    assert "speed" in capsys.readouterr().err
    assert _main(video, "--out", tmp_path / "s.parquet", "--tracker-option", "max_cost", "--quiet") == 2
    assert "KEY=VALUE" in capsys.readouterr().err
    assert not (tmp_path / "s.parquet").exists()


def test_scale_auto_is_the_default_and_recorded_and_bad_scales_are_named(tmp_path, video, capsys):
    out = tmp_path / "s.parquet"
    assert _main(video, "--out", out, "--workers", 0, "--quiet") == 0
    assert "line width" not in capsys.readouterr().err  # the generator's lines: nothing resampled, nothing said
    meta = read_metadata(out)
    assert meta["settings"]["pipeline"]["scale"] == "auto"
    assert meta["scale_choice"]["scale"] == 1.0 and meta["scale_choice"]["frame_sigmas_px"]
    assert _main(video, "--out", out, "--workers", 0, "--quiet", "--scale", "1", "--overwrite") == 0
    meta = read_metadata(out)
    assert meta["settings"]["pipeline"]["scale"] == 1.0 and "scale_choice" not in meta
    assert _main(video, "--out", out, "--workers", 0, "--quiet", "--lines", "bright", "--overwrite") == 0
    assert read_metadata(out)["settings"]["pipeline"]["lines"] == "bright"
    assert _main(video, "--out", tmp_path / "l.parquet", "--objects", "loops", "--lines", "bright", "--quiet") == 2
    assert "--lines goes with dislocation lines" in capsys.readouterr().err
    for bad in ("0", "-1", "wide", "nan"):
        with pytest.raises(SystemExit) as exit_:  # argparse's usage error
            _main(video, "--out", tmp_path / "t.parquet", "--scale", bad, "--quiet")
        assert exit_.value.code == 2 and "--scale" in (err := capsys.readouterr().err) and "'auto'" in err
    assert not (tmp_path / "t.parquet").exists()


def test_flatten_is_on_by_default_can_be_set_or_turned_off_and_bad_values_are_named(tmp_path, video, capsys):
    out = tmp_path / "s.parquet"
    for given, recorded in ((None, 45.0), ("30", 30.0), ("off", None), ("AUTO", 45.0)):
        assert _main(video, "--out", out, "--workers", 0, "--quiet", "--overwrite",
                     *(() if given is None else ("--flatten", given))) == 0
        assert read_metadata(out)["settings"]["pipeline"]["flatten"] == recorded, given
    assert _main(video, "--out", tmp_path / "l.parquet", "--objects", "loops", "--flatten", "off", "--quiet") == 2
    assert "--flatten goes with dislocations" in capsys.readouterr().err
    for bad in ("0", "-5", "strong", "inf"):
        with pytest.raises(SystemExit) as exit_:
            _main(video, "--out", tmp_path / "t.parquet", "--flatten", bad, "--quiet")
        assert exit_.value.code == 2 and "--flatten" in (err := capsys.readouterr().err) and "'off'" in err
    assert not (tmp_path / "t.parquet").exists()


def test_tracker_options_reach_the_linker(tmp_path, video):
    out = tmp_path / "s.parquet"
    assert _main(video, "--out", out, "--workers", 0, "--backend", "classical", "--quiet", "--tracker", "trackpy",
                 "--tracker-option", "search_range=12", "--tracker-option", "memory=2") == 0
    tracker = read_metadata(out)["settings"]["tracker"]
    assert tracker["method"] == "trackpy" and tracker["settings"]["search_range"] == 12 and tracker["settings"]["memory"] == 2


def test_overlay_filter_is_on_by_default_and_keep_overlays_turns_it_off(tmp_path, video):
    on, off = tmp_path / "on.parquet", tmp_path / "off.parquet"
    assert _main(video, "--out", on, "--workers", 0, "--backend", "classical", "--quiet", "--no-summary") == 0
    assert _main(video, "--out", off, "--workers", 0, "--backend", "classical", "--quiet", "--no-summary",
                 "--keep-overlays") == 0
    assert read_metadata(on)["settings"]["annotations"]["share"] == 0.5
    assert read_metadata(off)["settings"]["annotations"] is None
    assert read_metadata(on)["annotations"]["frames"] == FRAMES


def test_help_names_the_main_job(capsys):
    assert _main() == 0
    assert "tem-track VIDEO --out splines.parquet" in capsys.readouterr().out


def _write(path, data: bytes):
    path.write_bytes(data)
    return path


def _truncated(folder, video):
    data = video.read_bytes()
    return _write(folder / "cut.mp4", data[: len(data) // 2])


def test_process_videos_runs_each_and_reports_failures(tmp_path, video):
    from temtrack.sdk.analyzer import process_videos

    broken = _write(tmp_path / "broken.mp4", b"\x00" * 4096)
    report = process_videos([video, broken], tmp_path / "out", processes=2, progress=False,
                            analyzer={"backend": "classical"}, end=6)
    assert [r["video"] for r in report] == [str(video), str(broken)]
    good, bad = report
    assert good["error"] is None and good["frames"] == 6
    assert pd.read_parquet(good["out"]).frame.max() <= 5
    assert "broken.mp4" in bad["error"] and not (tmp_path / "out" / "broken.parquet").exists()


@pytest.mark.parametrize("name", ["fecral-loops", "twip-8.4um"])
def test_real_videos_run_through(tmp_path, real_data, name):
    out = tmp_path / "s.parquet"
    assert _main(real_data / name / "video.mp4", "--out", out, "--end", 8, "--quiet") == 0
    splines = pd.read_parquet(out)
    meta = read_metadata(out)
    assert meta["input"]["n_frames"] > 300 and meta["fps"] == pytest.approx(15.0)
    height, width = meta["input"]["shape"]
    if len(splines):
        xs, ys = np.concatenate(splines.x.to_numpy()), np.concatenate(splines.y.to_numpy())
        assert xs.min() >= -0.5 and xs.max() <= width - 0.5 and ys.min() >= -0.5 and ys.max() <= height - 0.5


# --- the torch backend's switches (issue 20) ------------------------------------------

CHECKPOINT = Path(__file__).resolve().parents[1] / "models" / "tem-track-linefield-cpu.pt"


def test_torch_switches_reach_the_backend_and_its_record(tmp_path, video, capsys):
    pytest.importorskip("torch")
    if not CHECKPOINT.exists():
        pytest.skip(f"the bundled line-field checkpoint {CHECKPOINT} is missing")
    out = tmp_path / "s.parquet"
    assert _main(video, "--out", out, "--model", CHECKPOINT, "--field-dtype", "float16", "--workers", 0, "--end", 2,
                 "--no-summary") == 0
    assert "fields float16" in capsys.readouterr().err
    backend = read_metadata(out)["backend"]
    assert backend["backend"] == "torch" and backend["field_dtype"] == "float16"
    assert backend["compile"] is False and backend["cuda_graphs"] is False


def test_torch_switches_pass_the_threshold_so_sparse_fields_are_used(tmp_path, video, monkeypatch):
    """With ``--threshold`` below the tracing's default lower threshold (0.35), the backend
    must cut its sparse fields there too: else the main job cannot use them and falls back
    to the dense fields (the test counts the backend's ``predict_packed`` calls)."""
    pytest.importorskip("torch")
    if not CHECKPOINT.exists():
        pytest.skip(f"the bundled line-field checkpoint {CHECKPOINT} is missing")
    from temtrack.training.torch_backend import TorchBackend

    packed = []
    original = TorchBackend.predict_packed
    monkeypatch.setattr(TorchBackend, "predict_packed", lambda self, frames: packed.append(self.field_low) or original(self, frames))
    out = tmp_path / "s.parquet"
    assert _main(video, "--out", out, "--model", CHECKPOINT, "--field-dtype", "float32", "--threshold", 0.3,
                 "--workers", 0, "--end", 2, "--no-summary", "--quiet") == 0
    assert packed and set(packed) == {0.3}
    assert read_metadata(out)["backend"]["field_low"] == 0.3


def test_torch_switches_name_what_is_wrong(tmp_path, video, capsys):
    out = tmp_path / "s.parquet"
    # The bundled default is an ONNX model.
    assert _main(video, "--out", out, "--compile", "--quiet") == 2
    err = capsys.readouterr().err
    assert "--compile set the torch backend" in err and "runs on onnxruntime" in err
    assert _main(video, "--out", out, "--field-dtype", "float16", "--backend", "classical", "--quiet") == 2
    assert "not --backend classical" in capsys.readouterr().err
    assert _main(video, "--out", out, "--compile", "--providers", "CPUExecutionProvider", "--quiet") == 2
    assert "--providers picks onnxruntime" in capsys.readouterr().err
    assert _main(video, "--out", out, "--objects", "loops", "--cuda-graphs", "--quiet") == 2
    assert "--cuda-graphs goes with dislocations" in capsys.readouterr().err
    assert not out.exists()


def test_cuda_graphs_without_cuda_is_a_clear_error(tmp_path, video, capsys):
    torch = pytest.importorskip("torch")
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA: --cuda-graphs would run")
    assert _main(video, "--out", tmp_path / "s.parquet", "--model", CHECKPOINT, "--cuda-graphs", "--quiet") == 2
    assert "--cuda-graphs needs an NVIDIA GPU" in capsys.readouterr().err
