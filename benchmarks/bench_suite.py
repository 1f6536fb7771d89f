"""The whole product's speed in one command: every stage, every backend, ratios, GPU bound.

    python benchmarks/bench_suite.py                  # default run (< ~20 min on 2 cores)
    python benchmarks/bench_suite.py --quick          # smoke run (~2-3 min on 2 cores)
    python benchmarks/bench_suite.py --out suite.json --frames 32 --size 512 \\
        --batch-sizes 1,4,8 --backends classical,torch,onnxruntime \\
        --checkpoint RUN/best.pt --no-real

What runs
---------
Videos: a synthetic one (``sd1`` preset, ``--size`` px square, ``--frames`` frames) and,
with ``--real`` (default) when ``../shared/data/real`` is present, the first
``--frames`` frames of ``twip-8.4um/video.mp4`` and ``fecral-loops/video.mp4``.

Backends (each skipped with its reason when unavailable): ``classical`` (no model),
``torch`` (PyTorch eager fp32; on CUDA also ``torch-fp16``), ``onnxruntime`` (CPU
provider; ``onnxruntime-cuda`` / ``onnxruntime-tensorrt`` when onnxruntime has those
providers), ``tensorrt`` (native engine, when ``import tensorrt`` works and tem-track
has that backend). The model backends run "ours": ``--checkpoint`` (default
``../runs/cpu/best.pt`` beside the checkout, else a fresh efficientnet-b0 U-Net++ with decoder
(128, 64, 32, 16, 16)), exported to ONNX at ``--size``; torch is given the same input
size, so every runtime sees the same letterboxed frames. ``classical`` runs at one
batch size (4 when listed, else the largest): it does not batch.

Each (video, backend, batch size) runs in a fresh process (``_suite_stages.py``):
``Analyzer.run`` end to end first (after one warm-up call of the backend), then each
stage alone on the same frames.

Figures
-------
fps        frames per second of that stage alone (one process, one thread of ours;
           post-processing inline, where the pipeline gives it ``cpu_count - 1``
           worker processes).
p50/p99    latency in ms, per frame: decode = one frame out of the decoder;
           preprocess and inference = one batch call divided by the batch size;
           post-process = pack masks + ``frame_records`` of one frame; tracking =
           linker step + series update; writing = ``RunWriter.add`` (fps includes
           ``finish``); end to end = from the frame leaving the decoder to its result
           reaching the writer (includes queueing behind the read-ahead: offline, it
           grows with the queue, not with the work).
e2e fps    ``Analyzer.run`` frames / wall time (worker start-up included).
RSS        peak resident memory of the configuration's process during the end-to-end
           run (plus ``+W`` the largest post-processing worker); on CUDA also
           ``torch.cuda.max_memory_allocated``.

Ratios (same run)
-----------------
- thesis set-up vs ours: U-Net++ ResNet50 (decoder (256, 128, 64, 32, 16), N = 20,
  random weights: speed only), PyTorch eager fp32, batch 1, post-processing of every
  mask at full frame size (``_suite_stages.thesis_postprocess``), one frame after the
  other; against ours on onnxruntime with the pipeline (batching, packed masks,
  overlapped stages), at its best batch size. Both post-process the same masks (our
  model's probabilities for each frame), so the ratio is about speed only.
- TARGET: onnxruntime / torch eager fp32 end-to-end frames/s, the same model, each at
  its best batch size, on the synthetic video at ``--size`` (512 is the target's size):
  >= 1.5 (PASS/FAIL).
- trackpy vs curve linker: each linker alone on the same ground-truth curves of a
  synthetic video (ms per frame).
- classical vs ours, end to end.

GPU section (only with CUDA)
----------------------------
Measured fp16 matmul rate (8192^3, CUDA events), device-to-device copy bandwidth
(read + write bytes), our model's FLOPs and fp16 activation bytes per frame (leaf
modules' outputs); bound = min(rate / FLOPs, bandwidth / bytes) frames/s. Targets:
torch fp16 (channels_last, autocast) model-only at batch 32 >= 40 % of the bound, and
the pipeline end to end >= 80 % of model-only.

``--out FILE`` writes everything (and the machine: CPUs, versions, GPU) as JSON.
Progress goes to stderr, results to stdout.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
REAL = REPO.parent / "shared" / "data" / "real"
# The CPU run of examples/train/cpu_synthetic.toml when it sits beside the checkout
# (`tem-track train ... --out ../runs/cpu`); --checkpoint picks another.
DEFAULT_CHECKPOINT = Path(__file__).resolve().parents[2] / "runs" / "cpu" / "best.pt"
CHILD = Path(__file__).resolve().parent / "_suite_stages.py"
SEED = 7
STAGES = ("decode", "preprocess", "inference", "postprocess", "tracking", "writing")
TARGET_ORT_VS_TORCH = 1.5
TARGET_BOUND_FRACTION = 0.40
TARGET_PIPELINE_FRACTION = 0.80
ALL_BACKENDS = ("classical", "torch", "torch-fp16", "onnxruntime", "onnxruntime-cuda", "onnxruntime-tensorrt", "tensorrt")


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


# --- inputs: videos and models -----------------------------------------------------------


def synthetic_video(folder: Path, frames: int, size: int) -> Path:
    from temtrack.training.synth import resolve_config
    from temtrack.training.synth.video import VideoSettings, write_video

    path = folder / f"synthetic_{size}px_{frames}f"
    if not path.exists():
        log(f"writing a synthetic video: {frames} frames, {size}x{size}")
        write_video(path, resolve_config("sd1", size=size), SEED, VideoSettings(frames=frames), progress=False)
    return path / "video.mp4"


def real_videos(quick: bool) -> tuple[dict, list]:
    videos, skipped = {}, []
    for name in ("twip-8.4um",) if quick else ("twip-8.4um", "fecral-loops"):
        path = REAL / name / "video.mp4"
        if path.is_file():
            videos[name] = path
        else:
            skipped.append(f"real video {name}: {path} is absent")
    return videos, skipped


def our_checkpoint(given: Path | None, folder: Path) -> tuple[Path, str]:
    if given is not None:
        if not given.is_file():
            raise FileNotFoundError(f"--checkpoint {given} does not exist")
        return given, str(given)
    if DEFAULT_CHECKPOINT.is_file():
        return DEFAULT_CHECKPOINT, str(DEFAULT_CHECKPOINT)
    log(f"{DEFAULT_CHECKPOINT} is absent: using a freshly initialised efficientnet-b0 model (untrained: "
        "its masks are noise, post-processing figures are not representative)")
    path = _fresh_checkpoint(folder / "ours_random.pt", "efficientnet-b0", (128, 64, 32, 16, 16), 256)
    return path, "efficientnet-b0, decoder (128, 64, 32, 16, 16), random weights"


def _fresh_checkpoint(path: Path, encoder: str, decoder, size: int) -> Path:
    import torch

    from temtrack.training.checkpoint import save_checkpoint
    from temtrack.training.model import ModelConfig, build_model

    torch.manual_seed(SEED)
    config = ModelConfig(encoder=encoder, decoder_channels=tuple(decoder))
    save_checkpoint(path, model=build_model(config), config={"model": config.model_dump(), "image_size": size}, step=0)
    return path


def export(checkpoint: Path, folder: Path, size: int) -> Path:
    from temtrack.export.onnx import export_onnx

    log(f"exporting {checkpoint} to ONNX at {size}x{size} (with its parity check)")
    return export_onnx(checkpoint, folder / f"ours_{size}.onnx", input_size=(size, size), overwrite=True).path


def tensorrt_engine(onnx_path: Path, folder: Path) -> tuple[Path | None, str | None]:
    """A native engine of the ONNX model, or None and why not."""
    import importlib

    try:
        importlib.import_module("tensorrt")
    except Exception as error:  # ImportError, or a broken CUDA install raising at import
        return None, f"import tensorrt failed ({type(error).__name__}: {error})"
    try:
        from temtrack.sdk.backends import gpu as module
    except Exception as error:
        return None, f"temtrack.sdk.backends.gpu does not import ({type(error).__name__}: {error})"
    reason = module.tensorrt_available() if hasattr(module, "tensorrt_available") else None
    if reason:
        return None, reason
    try:
        from temtrack.export.tensorrt import build_engine

        engine = folder / f"{onnx_path.stem}.engine"
        built = build_engine(onnx_path, engine)
        return Path(getattr(built, "path", engine)), None
    except Exception as error:  # an API still being written: report, do not guess further
        return None, f"building an engine failed ({type(error).__name__}: {error})"


# --- configurations ----------------------------------------------------------------------


def backend_specs(args, ours: Path, onnx_path: Path | None, engine: Path | None, skipped: list) -> dict:
    """Backend label -> spec for the child, for every asked-for backend that exists here."""
    import onnxruntime
    import torch

    cuda = torch.cuda.is_available()
    providers = onnxruntime.get_available_providers()
    size = [args.size, args.size]
    torch_spec = {"type": "torch", "checkpoint": str(ours), "input_size": size}
    candidates = {
        "classical": ({"type": "classical"}, None),
        "torch": ({**torch_spec, "device": "cuda" if cuda else "cpu", "precision": "fp32"}, None),
        "torch-fp16": ({**torch_spec, "device": "cuda", "precision": "fp16", "channels_last": True},
                       None if cuda else "no CUDA GPU"),
        "onnxruntime": ({"type": "onnxruntime", "model": str(onnx_path), "providers": ["CPUExecutionProvider"]},
                        None if onnx_path else "no ONNX model"),
        "onnxruntime-cuda": ({"type": "onnxruntime", "model": str(onnx_path),
                              "providers": ["CUDAExecutionProvider", "CPUExecutionProvider"]},
                             None if "CUDAExecutionProvider" in providers else "onnxruntime has no CUDAExecutionProvider"),
        "onnxruntime-tensorrt": ({"type": "onnxruntime", "model": str(onnx_path),
                                  "providers": ["TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider"]},
                                 None if "TensorrtExecutionProvider" in providers else
                                 "onnxruntime has no TensorrtExecutionProvider"),
        "tensorrt": ({"type": "tensorrt", "engine": str(engine)}, None if engine else "no engine"),
    }
    specs = {}
    for name in args.backends:
        spec, reason = candidates[name]
        if reason:
            if not any(line.startswith(f"backend {name}:") for line in skipped):  # tensorrt: said already
                skipped.append(f"backend {name}: {reason}")
        else:
            specs[name] = spec
    return specs


def run_child(job: dict) -> dict:
    done = subprocess.run([sys.executable, str(CHILD), json.dumps(job)], capture_output=True, text=True,
                          env={**os.environ, "PYTHONWARNINGS": "ignore"})
    if done.returncode:
        return {"error": done.stderr.strip().splitlines()[-1] if done.stderr.strip() else f"exit {done.returncode}",
                "stderr_tail": done.stderr[-3000:]}
    return json.loads(done.stdout.strip().splitlines()[-1])


def run_matrix(video_name: str, video: Path, specs: dict, args) -> list:
    rows = []
    for backend, spec in specs.items():
        batches = args.batch_sizes
        if backend == "classical":
            batches = [4 if 4 in batches else max(batches)]
        for batch in batches:
            log(f"{video_name}: {backend}, batch {batch}")
            job = {"kind": "pipeline", "video": str(video), "frames": args.frames, "batch": batch,
                   "backend": {**spec, "batch": batch}}
            result = run_child(job)
            if "error" in result:
                log(f"  failed: {result['error']}")
            rows.append({"video": video_name, "backend": backend, "batch": batch, **result})
    return rows


# --- the thesis' set-up ------------------------------------------------------------------


def reference_masks(onnx_path: Path, video: Path, frames: int, out: Path) -> Path:
    """Our model's probabilities for each frame, packed, for the thesis run to post-process."""
    from temtrack.sdk.backends.onnx import OnnxBackend
    from temtrack.sdk.pipeline import PackedMasks
    from temtrack.sdk.preprocess import apply, placement_for
    from temtrack.sdk.sources import open_source

    backend = OnnxBackend(onnx_path)
    arrays, count = {}, 0
    with open_source(video) as source:
        for k, frame in enumerate(source.frames(end=frames)):
            placement = placement_for(frame.image.shape, backend.input_size)
            (masks,) = backend.predict(apply(frame.image, placement)[None])
            packed = PackedMasks.pack(placement.clear_outside(masks), backend.threshold)
            arrays[f"{k}_indices"], arrays[f"{k}_boxes"] = packed.indices, packed.boxes
            for j, crop in enumerate(packed.crops):
                arrays[f"{k}_crop{j}"] = crop
            count += 1
    np.savez(out, count=count, **arrays)
    return out


def thesis(video: Path, onnx_path: Path, folder: Path, args) -> dict:
    import torch

    size = args.size
    log("thesis set-up: ResNet50 U-Net++ (random weights), reference masks from our model")
    checkpoint = _fresh_checkpoint(folder / "thesis_resnet50.pt", "resnet50", (256, 128, 64, 32, 16), size)
    reference = reference_masks(onnx_path, video, args.thesis_frames, folder / "reference.npz")
    spec = {"type": "torch", "checkpoint": str(checkpoint), "device": "cuda" if torch.cuda.is_available() else "cpu",
            "precision": "fp32", "batch": 1, "input_size": [size, size]}
    log(f"thesis set-up: {args.thesis_frames} frames, batch 1, full-frame post-processing")
    result = run_child({"kind": "thesis", "video": str(video), "frames": args.thesis_frames, "backend": spec,
                        "reference": str(reference)})
    checkpoint.unlink(missing_ok=True)
    if "error" in result:
        log(f"  failed: {result['error']}")
    return {"video": "synthetic", "backend": "thesis resnet50 fp32", "batch": 1, **result}


# --- linkers ---------------------------------------------------------------------------


def linkers(size: int, frames: int) -> dict:
    """ms per frame of each linker alone, on the generator's exact curves."""
    from temtrack.tracker import make_linker
    from temtrack.training.synth import iter_video, resolve_config
    from temtrack.training.synth.video import VideoSettings

    log(f"linkers: curve vs trackpy on {frames} frames of exact curves")
    detections = [(f.index, [c for c in f.centrelines if len(c) >= 2])
                  for f in iter_video(resolve_config("sd1", size=size), SEED, VideoSettings(frames=frames))]
    figures = {}
    for name in ("curve", "trackpy"):
        make_linker(name).step(0, detections[0][1])  # imports and first-call costs out of the timing
        linker, took = make_linker(name), []
        for index, curves in detections:
            began = time.perf_counter()
            linker.step(index, curves)
            took.append(time.perf_counter() - began)
        took = np.array(took)
        figures[name] = {"ms_per_frame": 1e3 * took.mean(), "p50_ms": 1e3 * np.median(took),
                         "p99_ms": 1e3 * np.percentile(took, 99), "frames": len(took),
                         "curves_per_frame": float(np.mean([len(c) for _, c in detections]))}
    return figures


# --- GPU --------------------------------------------------------------------------------


def gpu_section(ours: Path, video_folder: Path, size: int, frames: int) -> dict:
    import torch

    if not torch.cuda.is_available():
        return {"skipped": "no CUDA GPU"}
    from temtrack.sdk.analyzer import Analyzer
    from temtrack.training.torch_backend import TorchBackend

    log("GPU: matmul rate, copy bandwidth, model bound")
    device = torch.device("cuda")

    def timed(work, repeats: int) -> float:
        work()
        torch.cuda.synchronize()
        start, stop = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        for _ in range(repeats):
            work()
        stop.record()
        torch.cuda.synchronize()
        return start.elapsed_time(stop) / 1e3 / repeats

    def matmul_rate(n: int = 8192) -> float:
        a, b = (torch.randn(n, n, device=device, dtype=torch.float16) for _ in range(2))
        return 2 * n**3 / timed(lambda: torch.matmul(a, b), 20)

    def copy_bandwidth(elements: int = 2**29) -> float:  # 1 GiB of fp16
        source = torch.empty(elements, device=device, dtype=torch.float16)
        target = torch.empty_like(source)
        return 2 * source.nbytes / timed(lambda: target.copy_(source), 20)  # read + write

    matrix_rate, bandwidth = matmul_rate(), copy_bandwidth()
    torch.cuda.empty_cache()

    backend = TorchBackend.from_checkpoint(ours, device="cuda", precision="fp16", batch_size=32)
    model = backend.model.to(memory_format=torch.channels_last)
    x1 = torch.rand(1, 1, size, size, device=device)
    from torch.utils.flop_counter import FlopCounterMode

    with torch.inference_mode(), torch.autocast("cuda", dtype=torch.float16):
        counter = FlopCounterMode(display=False)
        with counter:
            model(x1)
        flops = counter.get_total_flops()
        activation = [0]
        # Leaf modules' outputs: what the network writes to memory (Identity writes nothing).
        leaves = [m for m in model.modules() if not list(m.children()) and not isinstance(m, torch.nn.Identity)]

        def note(_module, _inputs, output):
            if torch.is_tensor(output):
                activation[0] += output.numel() * 2  # fp16 bytes

        hooks = [m.register_forward_hook(note) for m in leaves]
        model(x1)
        for hook in hooks:
            hook.remove()
        bound = min(matrix_rate / flops, bandwidth / activation[0])
        x32 = torch.rand(32, 1, size, size, device=device).contiguous(memory_format=torch.channels_last)
        model_only = 32 / timed(lambda: model(x32), 10)
    frames_np = np.random.default_rng(SEED).random((32, size, size), dtype=np.float32)
    backend.input_size = (size, size)
    backend.predict(frames_np)
    torch.cuda.synchronize()
    began = time.perf_counter()
    for _ in range(3):
        backend.predict(frames_np)
    backend_only = 96 / (time.perf_counter() - began)
    video = synthetic_video(video_folder, frames, size)
    with tempfile.TemporaryDirectory() as scratch:
        run = Analyzer(backend=backend, batch_size=32).run(video, Path(scratch) / "gpu.parquet", progress=False)
    return {
        "gpu": torch.cuda.get_device_name(),
        "matmul_fp16_tflops": matrix_rate / 1e12,
        "copy_bandwidth_gb_s": bandwidth / 1e9,
        "model_gflops_per_frame": flops / 1e9,
        "activation_mib_per_frame_fp16": activation[0] / 2**20,
        "bound_fps": bound,
        "bound_by": "matrix rate" if matrix_rate / flops < bandwidth / activation[0] else "bandwidth",
        "model_only_fps_batch32": model_only,
        "model_only_fraction_of_bound": model_only / bound,
        "backend_predict_fps_batch32": backend_only,
        "end_to_end_fps": run.fps,
        "end_to_end_frames": run.frames,
        "pipeline_fraction_of_model_only": run.fps / model_only,
    }


# --- report -----------------------------------------------------------------------------


def machine() -> dict:
    import onnxruntime
    import torch

    info = {"python": platform.python_version(), "platform": platform.platform(), "cpu_count": os.cpu_count(),
            "cpu": platform.processor() or None, "torch": torch.__version__, "onnxruntime": onnxruntime.__version__,
            "onnxruntime_providers": onnxruntime.get_available_providers(),
            "gpu": torch.cuda.get_device_name() if torch.cuda.is_available() else None}
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                info["cpu"] = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    try:
        from temtrack import __version__

        info["tem_track"] = __version__
    except ImportError:
        pass
    return info


def _cell(figures: dict | None) -> str:
    if not figures or figures.get("fps") is None:
        return f"{'-':>17}"
    return f"{figures['fps']:7.1f} {figures['p50_ms']:4.0f}/{figures['p99_ms']:<4.0f}"


def print_table(title: str, rows: list) -> None:
    print(f"\n## {title}")
    print("   stage cells: frames/s  p50/p99 ms per frame (see the legend in the module docstring)")
    header = f"{'backend / batch':<24}" + "".join(f"{s:>18}" for s in STAGES)
    print(header + f"{'e2e fps':>9}{'e2e p50/p99':>13}{'RSS MiB':>12}{'disl/fr':>8}")
    for row in rows:
        label = f"{row['backend']} /{row['batch']}"
        if "error" in row:
            print(f"{label:<24}  failed: {row['error']}")
            continue
        e2e = row["end_to_end"]
        rss = f"{row['rss_mib']:.0f}+{row['worker_rss_mib']:.0f}"
        if row.get("cuda_max_allocated_mib"):
            rss += f" cuda {row['cuda_max_allocated_mib']:.0f}"
        print(f"{label:<24}" + "".join(f" {_cell(row['stages'].get(s))}" for s in STAGES)
              + f"{e2e['fps']:9.2f}{e2e['p50_ms']:6.0f}/{e2e['p99_ms']:<6.0f}{rss:>12}{row['dislocations_per_frame']:8.1f}")


def _best(rows: list, video: str, backend: str) -> dict | None:
    ok = [r for r in rows if r["video"] == video and r["backend"] == backend and "error" not in r]
    return max(ok, key=lambda r: r["end_to_end"]["fps"]) if ok else None


def ratios(rows: list, thesis_row: dict | None, linker_figures: dict | None, size: int) -> dict:
    out = {}
    print("\n## ratios (same run)")
    ort, eager = _best(rows, "synthetic", "onnxruntime"), _best(rows, "synthetic", "torch")
    if ort and eager:
        ratio = ort["end_to_end"]["fps"] / eager["end_to_end"]["fps"]
        verdict = "PASS" if ratio >= TARGET_ORT_VS_TORCH else "FAIL"
        note = "" if size == 512 else f"  (measured at {size}x{size}; the target is stated at 512x512)"
        print(f"\n*** TARGET onnxruntime / torch eager fp32, end-to-end frames/s, same model: {ratio:.2f}x "
              f"(onnxruntime {ort['end_to_end']['fps']:.2f} fps at batch {ort['batch']}, torch "
              f"{eager['end_to_end']['fps']:.2f} fps at batch {eager['batch']}; target >= {TARGET_ORT_VS_TORCH}) "
              f"{verdict} ***{note}")
        per_batch = {}
        for batch in sorted({r["batch"] for r in rows}):
            pair = [next((r for r in rows if r["video"] == "synthetic" and r["backend"] == b and r["batch"] == batch
                          and "error" not in r), None) for b in ("onnxruntime", "torch")]
            if all(pair):
                per_batch[batch] = pair[0]["end_to_end"]["fps"] / pair[1]["end_to_end"]["fps"]
                inference = pair[0]["stages"]["inference"]["fps"] / pair[1]["stages"]["inference"]["fps"]
                print(f"    batch {batch}: end to end {per_batch[batch]:.2f}x, inference stage alone {inference:.2f}x")
        out["onnxruntime_vs_torch"] = {"ratio": ratio, "target": TARGET_ORT_VS_TORCH, "pass": ratio >= TARGET_ORT_VS_TORCH,
                                       "size": size, "onnxruntime_batch": ort["batch"], "torch_batch": eager["batch"],
                                       "per_batch": per_batch}
    else:
        print("TARGET onnxruntime / torch: not measured (a backend was skipped or failed)")
    if thesis_row and "error" not in thesis_row and ort:
        t, o = thesis_row["end_to_end"]["fps"], ort["end_to_end"]["fps"]
        post_t = thesis_row["stages"]["postprocess"]["fps"]
        post_o = ort["stages"]["postprocess"]["fps"]
        infer_t = thesis_row["stages"]["inference"]["fps"]
        infer_o = ort["stages"]["inference"]["fps"]
        print(f"ours (onnxruntime, batch {ort['batch']}, pipeline) / thesis set-up (ResNet50, torch fp32, batch 1, "
              f"full-frame post-processing): end to end {o / t:.1f}x ({o:.2f} vs {t:.2f} fps); "
              f"inference {infer_o / infer_t:.1f}x; post-processing {post_o / post_t:.1f}x; "
              f"peak RSS {thesis_row['rss_mib']:.0f} vs {ort['rss_mib']:.0f}+{ort['worker_rss_mib']:.0f} MiB")
        out["ours_vs_thesis"] = {"end_to_end": o / t, "inference": infer_o / infer_t, "postprocess": post_o / post_t}
    if linker_figures:
        c, p = linker_figures["curve"], linker_figures["trackpy"]
        print(f"linking alone ({c['frames']} frames, {c['curves_per_frame']:.1f} curves/frame): curve "
              f"{c['ms_per_frame']:.2f} ms/frame, trackpy {p['ms_per_frame']:.2f} ms/frame; "
              f"trackpy / curve time {p['ms_per_frame'] / c['ms_per_frame']:.2f}x")
        out["trackpy_vs_curve_time"] = p["ms_per_frame"] / c["ms_per_frame"]
    for video in sorted({r["video"] for r in rows}):
        classical, ours = _best(rows, video, "classical"), _best(rows, video, "onnxruntime")
        if classical and ours:
            ratio = classical["end_to_end"]["fps"] / ours["end_to_end"]["fps"]
            print(f"classical / ours (onnxruntime) end to end on {video}: {ratio:.2f}x "
                  f"({classical['end_to_end']['fps']:.2f} vs {ours['end_to_end']['fps']:.2f} fps)")
            out.setdefault("classical_vs_ours", {})[video] = ratio
    return out


def print_gpu(figures: dict) -> None:
    print("\n## GPU")
    if "skipped" in figures or "error" in figures:
        print(f"skipped: {figures.get('skipped') or figures.get('error')}")
        return
    f = figures
    print(f"{f['gpu']}: fp16 matmul {f['matmul_fp16_tflops']:.0f} TFLOP/s, copy {f['copy_bandwidth_gb_s']:.0f} GB/s; "
          f"model {f['model_gflops_per_frame']:.1f} GFLOP/frame, {f['activation_mib_per_frame_fp16']:.0f} MiB "
          f"activations/frame (fp16)")
    print(f"bound {f['bound_fps']:.0f} frames/s (by {f['bound_by']}); torch fp16 model-only at batch 32: "
          f"{f['model_only_fps_batch32']:.0f} frames/s = {f['model_only_fraction_of_bound']:.0%} of the bound "
          f"(target >= {TARGET_BOUND_FRACTION:.0%}) {'PASS' if f['model_only_fraction_of_bound'] >= TARGET_BOUND_FRACTION else 'FAIL'}")
    print(f"backend.predict (with copies, sigmoid) {f['backend_predict_fps_batch32']:.0f} frames/s; pipeline end to end "
          f"{f['end_to_end_fps']:.0f} frames/s = {f['pipeline_fraction_of_model_only']:.0%} of model-only "
          f"(target >= {TARGET_PIPELINE_FRACTION:.0%}) "
          f"{'PASS' if f['pipeline_fraction_of_model_only'] >= TARGET_PIPELINE_FRACTION else 'FAIL'}")


# --- main -------------------------------------------------------------------------------


def parse(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="smoke run: 256 px, 6 frames, batch 1,4, one 4-frame real slice")
    parser.add_argument("--out", type=Path, help="write all figures as JSON here")
    parser.add_argument("--frames", type=int, help="frames per video (default 32; quick 6)")
    parser.add_argument("--size", type=int, help="synthetic video and model input size in px (default 512; quick 256)")
    parser.add_argument("--batch-sizes", help="comma-separated (default 1,4,8; quick 1,4)")
    parser.add_argument("--backends", help=f"comma-separated subset of {','.join(ALL_BACKENDS)} (default: all available)")
    parser.add_argument("--checkpoint", type=Path, help=f"our model (default {DEFAULT_CHECKPOINT} if present)")
    parser.add_argument("--real", action=argparse.BooleanOptionalAction, default=True,
                        help="also the real videos under ../shared/data/real (default: yes)")
    parser.add_argument("--thesis-frames", type=int, help="frames of the thesis set-up (default 8; quick 3)")
    parser.add_argument("--gpu-frames", type=int, default=256, help="frames of the GPU section's end-to-end run")
    parser.add_argument("--keep", type=Path, help="keep videos and models in this folder")
    args = parser.parse_args(argv)
    args.size = args.size or (256 if args.quick else 512)
    args.frames = args.frames or (6 if args.quick else 32)
    args.thesis_frames = min(args.thesis_frames or (3 if args.quick else 8), args.frames)
    args.batch_sizes = sorted({int(b) for b in (args.batch_sizes or ("1,4" if args.quick else "1,4,8")).split(",")})
    args.backends = [b.strip() for b in args.backends.split(",")] if args.backends else list(ALL_BACKENDS)
    unknown = sorted(set(args.backends) - set(ALL_BACKENDS))
    if unknown:
        parser.error(f"unknown backend(s) {', '.join(unknown)}; valid: {', '.join(ALL_BACKENDS)}")
    if min(args.batch_sizes) < 1 or args.frames < 1 or args.size % 32:
        parser.error("batch sizes and frames must be >= 1, size a multiple of 32")
    return args


def main(argv=None) -> None:
    args = parse(argv)
    began = time.perf_counter()
    report = {"machine": machine(), "settings": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
              "skipped": []}
    skipped = report["skipped"]
    with tempfile.TemporaryDirectory() as scratch:
        folder = args.keep or Path(scratch)
        folder.mkdir(parents=True, exist_ok=True)
        ours, described = our_checkpoint(args.checkpoint, folder)
        report["ours"] = described
        onnx_path = export(ours, folder, args.size)
        engine = None
        if "tensorrt" in args.backends:
            engine, reason = tensorrt_engine(onnx_path, folder)
            if reason:
                skipped.append(f"backend tensorrt: {reason}")
        specs = backend_specs(args, ours, onnx_path, engine, skipped)
        for line in skipped:
            log(f"skipped: {line}")

        videos = {"synthetic": synthetic_video(folder, args.frames, args.size)}
        if args.real:
            found, missing = real_videos(args.quick)
            videos.update(found)
            skipped.extend(missing)
            for line in missing:
                log(f"skipped: {line}")
        else:
            skipped.append("real videos: --no-real")

        rows = []
        for name, video in videos.items():
            quick_real = args.quick and name != "synthetic"
            run_args = argparse.Namespace(**{**vars(args), "frames": 4 if quick_real else args.frames,
                                              "batch_sizes": [4] if quick_real else args.batch_sizes})
            rows.extend(run_matrix(name, video, specs, run_args))
        thesis_row = thesis(videos["synthetic"], onnx_path, folder, args)
        linker_figures = linkers(args.size, max(args.frames, 30 if args.quick else 100))
        try:
            gpu = gpu_section(ours, folder, args.size, args.gpu_frames)
        except Exception as error:  # the GPU section must not cost the CPU results
            gpu = {"error": f"{type(error).__name__}: {error}"}

    m = report["machine"]
    print(f"\n# tem-track speed suite: {m['cpu_count']} CPUs ({m['cpu']}), torch {m['torch']}, "
          f"onnxruntime {m['onnxruntime']}, GPU {m['gpu'] or 'none'}")
    print(f"ours: {described}; synthetic video {args.size}x{args.size}, {args.frames} frames")
    for line in skipped:
        print(f"skipped: {line}")
    for name in videos:
        print_table(f"{name}" + (f" ({args.size}x{args.size})" if name == "synthetic" else ""),
                    [r for r in rows if r["video"] == name] + ([thesis_row] if name == "synthetic" else []))
    report.update(rows=rows, thesis=thesis_row, linkers=linker_figures, gpu=gpu)
    report["ratios"] = ratios(rows, thesis_row, linker_figures, args.size)
    print_gpu(gpu)
    report["seconds"] = time.perf_counter() - began
    print(f"\n({report['seconds']:.0f} s in all)")
    if args.out:
        from temtrack.sdk.atomic import write_atomic

        text = json.dumps(report, indent=2, default=str)
        write_atomic(args.out, lambda tmp: Path(tmp).write_text(text))
        log(f"wrote {args.out}")


if __name__ == "__main__":
    main()
