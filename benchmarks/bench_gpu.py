"""The GPU path against the model (issue 20): is the model kept busy, end to end?

    python benchmarks/bench_gpu.py                     # CUDA: <= 3 min; without CUDA it skips (exit 0)
    python benchmarks/bench_gpu.py --device cpu --quick    # the same code paths on the CPU, tiny sizes
    python benchmarks/bench_gpu.py --compile               # also time torch.compile (slow to compile)

One table per network, with ratios against a baseline measured in the same process:

- matmul rate: a bf16 matrix product (fp32 on the CPU), the ceiling to compare with;
- model FLOPs per frame (``torch.utils.flop_counter.FlopCounterMode``);
- model-only fps per batch size (input already on the device, nothing comes back) and
  the model's variants at the largest batch (fp32 eager; bf16/fp16 autocast +
  channels-last, the backend's default on CUDA; + CUDA graphs; + ``torch.compile``);
- backend fps: ``TorchBackend.predict`` (full planes back) and ``predict_packed``
  (compact results) from host frames, as a share of model-only at that batch;
- for the line-field model, the bytes per frame the main job pickles to its
  post-processing workers: the dense fields against the sparse ones
  (:class:`temtrack.sdk.linefield.SparseFields`, what ``predict_packed`` returns);
- end-to-end fps of :class:`temtrack.sdk.analyzer.Analyzer` on a synthetic 512² video
  (frames in memory: no decoding), as a share of the backend's;
- training img/s at batch 32 with the step split into host-to-device copy,
  forward + loss, backward and optimiser (a device synchronisation between the
  parts), and the data stream's items/s on one core.

The networks are the two bundled checkpoints (``models/``): the shipped line-field
model and the multi-label stop-gap (EfficientNet-B0 U-Net++, N = 20, the issue's
network family). Installs nothing; figures on the CPU are marked CPU and say nothing
about a GPU.
"""

from __future__ import annotations

import argparse
import os
import pickle
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
CHECKPOINTS = {
    "linefield": REPO / "models" / "tem-track-linefield-cpu.pt",
    "multilabel": REPO / "models" / "tem-track-cpu-stopgap.pt",
}
SEED = 20


def sizes(quick: bool, cuda: bool) -> dict:
    """What each part runs on: full sizes on CUDA, tiny ones with ``--quick``."""
    if quick:
        return dict(size=32, batches=(1, 2), packed_batch=2, frames=4, train_batch=2, steps=1, items=1, matmul=512,
                    seconds=0.0, warmup=1)
    return dict(size=512, batches=(1, 8, 32, 64), packed_batch=32, frames=256 if cuda else 16, train_batch=32,
                steps=8, items=8, matmul=8192 if cuda else 1024, seconds=1.0, warmup=2)


class Clock:
    """Wall time of device work: synchronises CUDA before reading the clock."""

    def __init__(self, torch, device, warmup: int = 2):
        self.torch, self.cuda, self.warmup = torch, device.type == "cuda", warmup

    def now(self) -> float:
        if self.cuda:
            self.torch.cuda.synchronize()
        return time.perf_counter()

    def rate(self, work, items: int, seconds: float, warmup: int | None = None) -> float:
        """``items`` per second of ``work()``, repeated for at least ``seconds``."""
        for _ in range(self.warmup if warmup is None else min(warmup, self.warmup)):
            work()
        start, n = self.now(), 0
        while True:
            work()
            n += 1
            elapsed = self.now() - start
            if elapsed >= seconds and (n >= 2 or not seconds):
                return items * n / elapsed


def matmul_rate(torch, device, n: int, clock: Clock, seconds: float) -> tuple[float, str]:
    """FLOP/s of an ``n x n`` product: bf16 on CUDA, fp32 on the CPU."""
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    a = torch.randn(n, n, device=device, dtype=dtype)
    b = torch.randn(n, n, device=device, dtype=dtype)
    with torch.inference_mode():
        per_second = clock.rate(lambda: a @ b, 1, seconds)
    return 2.0 * n**3 * per_second, str(dtype).removeprefix("torch.")


def model_flops(torch, model, size: int, device) -> float:
    """FLOPs of one ``size``² frame through ``model`` (fp32, counted, not timed)."""
    from torch.utils.flop_counter import FlopCounterMode

    x = torch.zeros(1, 1, size, size, device=device)
    with torch.inference_mode(), FlopCounterMode(display=False) as counter:
        model(x)
    return float(counter.get_total_flops())


def network(name: str, quick: bool):
    """(model, config, source) of a bundled checkpoint, or a fresh network of its config."""
    from temtrack.training.checkpoint import load_model
    from temtrack.training.model import ModelConfig, build_model

    path = CHECKPOINTS[name]
    if path.exists():
        model, config, _ = load_model(path)
        return model, config, path.name
    config = ModelConfig(family="linefield", architecture="unet", encoder="mobilenet_v2",
                         decoder_channels=(128, 64, 32, 16, 16)) if name == "linefield" else \
        ModelConfig(encoder="efficientnet-b0", n_masks=20, decoder_channels=(128, 64, 32, 16, 16))
    return build_model(config), config, "untrained (checkpoint missing)"


def synthetic_frames(n: int, size: int, distinct: int = 8) -> np.ndarray:
    """``n`` float32 frames of the generator (``distinct`` different ones, repeated)."""
    from temtrack.training.synth import generate_sample

    made = [generate_sample(("sd1", "sd2", "sd3")[k % 3], seed=SEED + k, size=size).image.astype(np.float32)
            for k in range(min(distinct, n))]
    return np.stack([made[k % len(made)] for k in range(n)])


BYTES_ROW = "bytes per frame to the workers"


def shipped_bytes(backend, frames: np.ndarray) -> tuple[float, float, float]:
    """Mean pickled bytes per frame of a line-field ``backend``'s dense fields
    (``predict``) and sparse fields (``predict_packed``), and the share of pixels kept."""
    dense = [np.ascontiguousarray(f) for f in backend.predict(frames)]
    sparse = backend.predict_packed(frames)

    def size(payload):
        return len(pickle.dumps(payload, protocol=pickle.HIGHEST_PROTOCOL))

    kept = np.mean([len(s.indices) / (s.shape[1] * s.shape[2]) for s in sparse])
    return float(np.mean([size(f) for f in dense])), float(np.mean([size(s) for s in sparse])), float(kept)


def bench_network(name: str, args, plan: dict, torch, device, clock: Clock, matmul: float, rows: list) -> None:
    from temtrack.training.torch_backend import TorchBackend

    cuda, size, seconds = device.type == "cuda", plan["size"], plan["seconds"]
    model, config, source = network(name, args.quick)
    label = f"{name} ({config.architecture} {config.encoder}, {config.out_channels} out; {source})"
    rows.append((f"[{label}]", "", "", ""))
    flops = model_flops(torch, model.to(device).eval(), size, device)
    rows.append(("model FLOPs per frame", f"{flops / 1e9:.2f} GFLOP", "", f"{size}²"))
    precision = "auto" if cuda else "fp32"

    def backend(**options):
        return TorchBackend(model, config, device=device, precision=precision, **options)

    def model_only(be, batch: int) -> float:
        x = torch.rand(batch, 1, size, size, device=device)
        if be.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        with torch.inference_mode():
            return clock.rate(lambda: be._forward(x), batch, seconds)

    main = backend(batch_size=max(plan["batches"]))
    model_fps = {}
    for batch in plan["batches"]:
        model_fps[batch] = fps = model_only(main, batch)
        rows.append((f"model-only fps, batch {batch}", f"{fps:.1f}", f"{fps * flops / matmul:.1%} of matmul",
                     main.precision_label + (", channels-last" if main.channels_last else "")))
    top = max(plan["batches"])
    variants = [("fp32 eager", dict(precision="fp32", channels_last=False))]
    if cuda:
        variants.append(("+ CUDA graphs", dict(cuda_graphs=True)))
    if args.compile:
        variants.append(("+ torch.compile", dict(compile=True)))
    for what, options in variants:
        options = {"precision": precision, **options}
        be = TorchBackend(model, config, device=device, batch_size=top, **options)
        fps = model_only(be, top)
        rows.append((f"model-only fps, batch {top}, {what}", f"{fps:.1f}", f"{fps / model_fps[top]:.2f}x default", ""))

    batch = plan["packed_batch"]
    frames = synthetic_frames(batch, size)
    be = backend(batch_size=batch)
    base = model_fps.get(batch) or model_only(main, batch)
    predict = clock.rate(lambda: be.predict(frames), batch, seconds, warmup=1)
    rows.append((f"backend predict fps, batch {batch}", f"{predict:.1f}", f"{predict / base:.1%} of model-only",
                 "full planes to the host"))
    packed = clock.rate(lambda: be.predict_packed(frames), batch, seconds, warmup=1)
    rows.append((f"backend predict_packed fps, batch {batch}", f"{packed:.1f}", f"{packed / base:.1%} of model-only",
                 "target >= 80 %"))
    if config.family == "linefield":
        dense, sparse, kept = shipped_bytes(be, frames)
        rows.append((BYTES_ROW, f"{sparse / 1e3:.1f} kB", f"{dense / sparse:.1f}x fewer than dense {dense / 1e3:.0f} kB",
                     f"sparse fields: {kept:.1%} of pixels kept"))

    from temtrack.sdk.analyzer import Analyzer

    video = synthetic_frames(plan["frames"], size)
    workers = None if cuda else 1
    analyzer = Analyzer(backend=be, batch_size=batch, workers=workers)
    analyzer.run(video[: 2 * batch], progress=False)  # warm: workers started, kernels chosen
    start = time.perf_counter()
    result = analyzer.run(video, progress=False)
    e2e = result.frames / (time.perf_counter() - start)
    rows.append((f"end-to-end fps ({plan['frames']} frames)", f"{e2e:.1f}", f"{e2e / packed:.1%} of predict_packed",
                 f"workers={analyzer.settings.processes}, target >= 80 %"))

    train_rows(name, config, model, args, plan, torch, device, clock, rows)


def train_rows(name, config, model, args, plan, torch, device, clock: Clock, rows: list) -> None:
    """Training img/s with the step split into its parts, and the data stream per core."""
    from torch.utils.data import DataLoader

    from temtrack.training.config import TrainConfig
    from temtrack.training.linefield import linefield_loss
    from temtrack.training.losses import matched_dice_loss
    from temtrack.training.torch_backend import autocast, autocast_dtype
    from temtrack.training.train import training_stream

    batch, size = plan["train_batch"], plan["size"]
    train_config = TrainConfig(model=config, image_size=size, batch_size=batch, device=device.type, seed=SEED,
                               data={"workers": 0, "presets": {"sd1": 1.0, "sd2": 1.0, "sd3": 2.0}})
    stream = training_stream(train_config, [])
    iterator = iter(stream)
    next(iterator)
    start = time.perf_counter()
    for _ in range(plan["items"]):
        next(iterator)
    per_core = plan["items"] / (time.perf_counter() - start)
    cores = os.cpu_count() or 1
    rows.append(("training data items/s, one core", f"{per_core:.1f}", f"x{cores} cores = {per_core * cores:.0f}",
                 "generator + augmentation"))
    host = next(iter(DataLoader(stream, batch_size=batch, num_workers=0)))
    cuda = device.type == "cuda"
    dtype = autocast_dtype("auto", device)
    model = model.to(device).train()
    if cuda:
        model = model.to(memory_format=torch.channels_last)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
    loss_config = train_config.loss

    def loss_of(logits, batch_on_device):
        if config.family == "linefield":
            return linefield_loss(logits, batch_on_device["target"], batch_on_device["weight"],
                                  known=batch_on_device["known"], positive_weight=loss_config.positive_weight,
                                  direction_weight=loss_config.direction_weight, ends_weight=loss_config.ends_weight)[0]
        empty = torch.where(batch_on_device["partial"], 0.0, loss_config.empty_weight).float()
        return matched_dice_loss(torch.sigmoid(logits.float()), batch_on_device["masks"], batch_on_device["count"],
                                 matching=loss_config.matching, empty_weight=empty)

    parts = np.zeros(4)
    if cuda:
        host = {k: v.pin_memory() if isinstance(v, torch.Tensor) else v for k, v in host.items()}
    for step in range(plan["steps"] + 1):  # step 0 warms up
        t0 = clock.now()
        on_device = {k: v.to(device, non_blocking=True) if isinstance(v, torch.Tensor) else v for k, v in host.items()}
        x = on_device["image"]
        if cuda:
            x = x.contiguous(memory_format=torch.channels_last)
        t1 = clock.now()
        with autocast(device, dtype):
            logits = model(x)
        loss = loss_of(logits, on_device)
        t2 = clock.now()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        t3 = clock.now()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        t4 = clock.now()
        if step:
            parts += np.diff([t0, t1, t2, t3, t4])
    step_s = parts.sum() / plan["steps"]
    rows.append((f"training img/s, batch {batch} (step only)", f"{batch / step_s:.1f}",
                 f"{batch / step_s / (per_core * cores):.2f}x the data stream on all cores", "target 1000 on an H200"))
    for what, seconds in zip(("host-to-device", "forward + loss", "backward", "optimiser (+ clip)"), parts):
        rows.append((f"  step: {what}", f"{1e3 * seconds / plan['steps']:.1f} ms", f"{seconds / parts.sum():.0%} of step",
                     ""))
    model.eval()


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", choices=("cuda", "cpu"), default="cuda")
    parser.add_argument("--quick", action="store_true", help="tiny sizes (for the tests and machines without a GPU)")
    parser.add_argument("--compile", action="store_true", help="also time torch.compile (compiling takes minutes)")
    parser.add_argument("--networks", default="linefield,multilabel", help="comma-separated: linefield, multilabel")
    args = parser.parse_args(argv)
    try:
        import torch
    except ImportError:
        print("bench_gpu: skipped: torch is not installed (pip install 'tem-track[train]')")
        return 0
    if args.device == "cuda" and not torch.cuda.is_available():
        print("bench_gpu: skipped: torch sees no CUDA GPU on this machine "
              "(python benchmarks/bench_gpu.py --device cpu --quick runs the same code paths on the CPU)")
        return 0
    networks = [n.strip() for n in args.networks.split(",") if n.strip()]
    unknown = sorted(set(networks) - set(CHECKPOINTS))
    if unknown:
        parser.error(f"unknown networks {unknown}; valid: {', '.join(CHECKPOINTS)}")
    torch.manual_seed(SEED)
    device = torch.device(args.device)
    cuda = device.type == "cuda"
    plan = sizes(args.quick, cuda)
    clock = Clock(torch, device, plan["warmup"])
    where = torch.cuda.get_device_name(device) if cuda else f"CPU, {torch.get_num_threads()} threads"
    tag = "" if cuda else "CPU "
    started = time.perf_counter()
    rate, dtype = matmul_rate(torch, device, plan["matmul"], clock, plan["seconds"])
    rows = [(f"matmul {plan['matmul']}² {dtype}", f"{rate / 1e12:.3f} TFLOP/s", "1 (baseline)", "")]
    for name in networks:
        bench_network(name, args, plan, torch, device, clock, rate, rows)
    print(f"bench_gpu on {where} (torch {torch.__version__}){'' if cuda else ': CPU figures, not GPU ones'}"
          f"{', quick sizes' if args.quick else ''}")
    width = max(len(r[0]) for r in rows) + 2
    print(f"{'':2}{'quantity':<{width}}{'value':>18}  {'ratio':<40}note")
    for what, value, ratio, note in rows:
        value = f"{tag}{value}" if value and what != BYTES_ROW else value  # bytes are no CPU figure
        print(f"{'':2}{what:<{width}}{value:>18}  {ratio:<40}{note}")
    print(f"({time.perf_counter() - started:.0f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
