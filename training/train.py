"""Training either model family (``tem-track train CONFIG --out RUN``).

One run folder holds everything a run makes:

- ``config.json``: the full configuration (every default filled in);
- ``log.csv``: step, training loss (mean since the last line), learning rate,
  images per second, elapsed seconds;
- ``validation.csv``: the length metric (thesis 3.4.3) on the fixed validation set,
  overall and per group, at every validation;
- ``curves.png``: loss and validation score against steps;
- ``best.pt``: the checkpoint with the best validation length score (the thesis' early
  stopping: keep the best, not the last); ``last.pt``: the latest, for ``--resume``;
- ``summary.json``: the final figures.

Interrupted runs (Ctrl-C, a time limit, a crash after a checkpoint) continue with
``resume=True`` from ``last.pt``: the data stream continues where it stopped, because
every training image is generated from its index in the stream.
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader, IterableDataset

from temtrack.sdk.atomic import write_atomic

from .augment import AugmentedDataset
from .checkpoint import init_weights, read_checkpoint, save_checkpoint
from .config import TrainConfig, validate_train_config
from .datasets import SyntheticDataset, worker_items
from .torch_backend import TorchBackend, autocast, autocast_dtype, resolve_device
from .linefield import linefield_loss
from .losses import matched_dice_loss
from .model import build_model

__all__ = ["ItemStream", "TrainResult", "ValidationItem", "build_validation", "train", "validate"]

RUN_FILES = ("config.json", "log.csv", "validation.csv", "curves.png", "best.pt", "last.pt", "summary.json")
LOG_COLUMNS = ("step", "loss", "lr", "images_per_s", "elapsed_s")


# --- data -----------------------------------------------------------------------------


class ItemStream(IterableDataset):
    """Mixes sources of training items into one endless, index-addressed stream.

    Item ``i`` comes from source ``k`` drawn with probabilities proportional to
    ``weights`` by ``np.random.default_rng([seed, i])``, as ``sources[k].item(i)``.
    Each item depends on its index only, so the stream is the same whatever the number
    of DataLoader workers (worker ``w`` of ``W`` makes items ``w, w + W, ...``), and a
    resumed run continues it exactly from ``start``.
    """

    def __init__(self, sources, weights, *, seed: int = 0, start: int = 0):
        super().__init__()
        if len(sources) != len(weights) or not sources:
            raise ValueError(f"need one weight per source, got {len(sources)} sources and {len(weights)} weights")
        weights = np.asarray(weights, float)
        if not (weights > 0).all():
            raise ValueError(f"weights must be > 0, got {weights.tolist()}")
        self.sources = list(sources)
        self.probabilities = weights / weights.sum()
        self.seed = int(seed)
        self.start = int(start)

    def source_of(self, index: int) -> int:
        """Which source item ``index`` comes from."""
        if len(self.sources) == 1:
            return 0
        return int(np.random.default_rng([self.seed, index]).choice(len(self.sources), p=self.probabilities))

    def item(self, index: int) -> dict:
        item = dict(self.sources[self.source_of(index)].item(index))
        item["index"] = torch.tensor(index, dtype=torch.int64)
        return item

    def __iter__(self):
        return worker_items(self.item, start=self.start)


def _labelled_split(config: TrainConfig):
    """(training frames, validation frames) of the labelled folders, split by video (or time)."""
    from .labelled import load_frames, split_frames

    frames = [f for folder in config.data.labelled for f in load_frames(folder)]
    if not frames:
        return [], []
    split = split_frames(frames, val_fraction=config.validation.labelled_fraction, gap=config.validation.gap)
    return split.train, split.val


def training_stream(config: TrainConfig, labelled_train: list, *, start: int = 0) -> IterableDataset:
    """The augmented training stream of ``config``, from item ``start``."""
    from .labelled import CropDataset, load_frames

    if config.model.family == "linefield":
        return _linefield_stream(config, labelled_train, start=start)
    n, size, seed = config.model.n_masks, config.image_size, config.seed
    kinds, weights = [], []
    if config.data.presets:
        presets = list(config.data.presets)
        synthetic = [
            SyntheticDataset(_preset(p), seed=seed + 7919 * k, max_masks=n, size=size, backgrounds=config.data.backgrounds)
            for k, p in enumerate(presets)
        ]
        kinds.append(ItemStream(synthetic, [config.data.presets[p] for p in presets], seed=seed + 1))
        weights.append(config.data.weights.get("synthetic", 1.0))
    if config.data.datasets:
        stored = [f for folder in config.data.datasets for f in load_frames(folder)]
        kinds.append(CropDataset(stored, size=size, max_masks=n, seed=seed + 2, partial=False))
        weights.append(config.data.weights.get("datasets", 1.0))
    if labelled_train:
        kinds.append(CropDataset(labelled_train, size=size, max_masks=n, seed=seed + 3, partial=True))
        weights.append(config.data.weights.get("labelled", 1.0))
    stream = ItemStream(kinds, weights, seed=seed + 4, start=start)
    return AugmentedDataset(stream, config.augment, seed=seed + 5)


def _linefield_stream(config: TrainConfig, labelled_train: list = (), *, start: int = 0) -> IterableDataset:
    """The line-field family's stream: generator presets with dense targets, augmented,
    mixed with crops of partially labelled real frames when there are any."""
    from .linefield import LabelledLineDataset, LineFieldDataset

    presets = list(config.data.presets)
    sources = [
        LineFieldDataset(
            _preset(p), seed=config.seed + 7919 * k, size=config.image_size, sigma=config.model.sigma,
            extras=config.model.extras, gaps=config.loss.gap_weight > 0, augment_config=config.augment,
            backgrounds=config.data.backgrounds,
        )
        for k, p in enumerate(presets)
    ]
    weights = [config.data.presets[p] for p in presets]
    if not labelled_train:
        return ItemStream(sources, weights, seed=config.seed + 1, start=start)
    kinds, shares = [], []
    if sources:
        kinds.append(ItemStream(sources, weights, seed=config.seed + 1))
        shares.append(config.data.weights.get("synthetic", 1.0))
    kinds.append(LabelledLineDataset(
        labelled_train, size=config.image_size, seed=config.seed + 3, sigma=config.model.sigma,
        extras=config.model.extras, gaps=config.loss.gap_weight > 0, rule=config.loss.partial_negatives,
        near=config.loss.near_labels, augment_config=config.augment,
    ))
    shares.append(config.data.weights.get("labelled", 1.0))
    return ItemStream(kinds, shares, seed=config.seed + 4, start=start)


def _preset(name: str):
    if name.lower().endswith(".json"):
        from .synth import load_config

        return load_config(name)
    return name


# --- validation -----------------------------------------------------------------------


@dataclass(frozen=True)
class ValidationItem:
    """One validation image: ``group`` (preset or video), id, (H, W) image, (n, H, W) masks."""

    group: str
    image_id: str
    image: np.ndarray
    masks: np.ndarray


def build_validation(config: TrainConfig, labelled_val: list = ()) -> list[ValidationItem]:
    """The fixed validation set: ``validation.images`` per preset from ``validation.seed``
    (never a training seed), plus the held-out labelled frames."""
    from .synth import render_scene, resolve_config, sample_scene
    from .synth.storage import sample_seed

    size = config.validation.size or config.image_size
    items = []
    for k, preset in enumerate(config.validation.presets):
        synth = resolve_config(_preset(preset), size=size)
        for i in range(config.validation.images):
            seed = sample_seed(config.validation.seed + 104729 * k, i)
            sample = render_scene(sample_scene(synth, seed, backgrounds=config.data.backgrounds), backgrounds=config.data.backgrounds)
            items.append(ValidationItem(Path(preset).stem, f"{i:05d}", sample.image, sample.masks))
    for frame in labelled_val:
        items.append(ValidationItem(frame.video, frame.image_id, frame.image, frame.masks))
    return items


def _score(args):
    from temtrack.sdk.metrics import score_image

    pred, masks = args
    return score_image(pred, masks)


def _score_fields(args):
    """The thesis metric of a line-field prediction: its traced lines drawn as masks."""
    from temtrack.sdk.linefield import extract_lines, instance_masks
    from temtrack.sdk.metrics import score_image

    fields, masks = args
    return score_image(instance_masks(extract_lines(fields)), masks)


def validate(backend: TorchBackend, items: list[ValidationItem], *, workers: int = 0, progress: bool = False) -> dict:
    """Length metric of ``backend`` on ``items``: ``{"length_score": mean over groups,
    "groups": {group: summary}}`` where a group's summary is
    :func:`~temtrack.sdk.metrics.summarize` of its images."""
    from temtrack.sdk.metrics import summarize

    if not items:
        raise ValueError("the validation set is empty")
    was_training = backend.model.training
    backend.model.eval()
    try:
        preds = [backend.probabilities(item.image[None])[0] for item in items]
    finally:
        backend.model.train(was_training)
    jobs = [(p, item.masks) for p, item in zip(preds, items)]
    score = _score_fields if getattr(backend, "family", "multilabel") == "linefield" else _score
    if workers > 1:
        import multiprocessing

        from temtrack.sdk.pipeline import interrupts_ignored, worker_init

        with interrupts_ignored():
            pool = multiprocessing.get_context("fork").Pool(workers, worker_init, (os.getpid(),))
        with pool:
            scores = pool.map(score, jobs, chunksize=4)
    else:
        scores = [score(job) for job in jobs]
    groups: dict[str, list] = {}
    for item, score in zip(items, scores):
        groups.setdefault(item.group, []).append(score)
    summaries = {name: summarize(s) for name, s in groups.items()}
    return {
        "length_score": float(np.mean([s["length_score_mean"] for s in summaries.values()])),
        "groups": summaries,
    }


# --- the run folder -------------------------------------------------------------------


def _write_text(path: Path, text: str) -> None:
    write_atomic(path, lambda tmp: tmp.write_text(text))


def _append_csv(path: Path, row: dict) -> None:
    new = not path.exists()
    with path.open("a", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(row))
        if new:
            writer.writeheader()
        writer.writerow(row)


def _truncate_csv(path: Path, step: int) -> None:
    """Drop log rows after ``step`` (written after the checkpoint a run resumes from)."""
    rows = _read_csv(path)
    if not rows:
        return
    kept = [r for r in rows if int(r["step"]) <= step]
    if not kept:
        path.unlink()
        return
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=list(kept[0]))
    writer.writeheader()
    writer.writerows(kept)
    _write_text(path, buffer.getvalue())


def _read_csv(path: Path) -> list[dict]:
    if not path.exists():
        return []
    with path.open(newline="") as f:
        return list(csv.DictReader(f))


def plot_curves(run: str | os.PathLike) -> Path:
    """``curves.png`` of a run folder: training loss and validation length score."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    run = Path(run)
    log, val = _read_csv(run / "log.csv"), _read_csv(run / "validation.csv")
    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 4))
    if log:
        left.plot([int(r["step"]) for r in log], [float(r["loss"]) for r in log], lw=1)
    left.set(xlabel="step", ylabel="training loss", title="loss")
    left.grid(alpha=0.3)
    if val:
        steps = [int(r["step"]) for r in val]
        for key in [k for k in val[0] if k.endswith("length_score")]:
            label = "mean" if key == "length_score" else key.removesuffix("_length_score")
            right.plot(steps, [float(r[key]) for r in val], marker="o", ms=3, lw=2 if label == "mean" else 1, label=label)
        right.legend(fontsize=8)
    right.set(xlabel="step", ylabel="length score", title="validation (thesis 3.4.3)", ylim=(0, 1))
    right.grid(alpha=0.3)
    fig.tight_layout()
    try:
        return write_atomic(run / "curves.png", lambda tmp: fig.savefig(tmp, format="png", dpi=100))
    finally:
        plt.close(fig)


# Keys every config.json a run has written holds: how a run folder is recognised (also
# one written by an older version, whose config may no longer validate).
_RUN_CONFIG_KEYS = frozenset({"model", "data", "optim", "steps", "batch_size", "image_size"})


def _run_config(run: Path) -> dict | None:
    """The ``config.json`` of a tem-track run folder, or None if ``run`` holds none."""
    try:
        document = json.loads((run / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return document if isinstance(document, dict) and _RUN_CONFIG_KEYS <= document.keys() else None


def _prepare_run(config: TrainConfig, run: Path, *, resume: bool, overwrite: bool):
    """Check the run folder; returns the checkpoint state to resume from (or None).

    ``overwrite`` replaces the files of a run (:data:`RUN_FILES`) only in a folder a run
    wrote (its ``config.json`` is a training config); anything else raises, untouched.
    """
    if (run.exists() or run.is_symlink()) and not run.is_dir():
        raise NotADirectoryError(f"the run folder {run} is a file; give a new or empty folder, or a run folder")
    if resume:
        last = run / "last.pt"
        if not last.is_file():
            raise FileNotFoundError(f"cannot resume: {last} does not exist (start the run without --resume)")
        document = _run_config(run)
        if document is None:
            raise ValueError(
                f"cannot resume {run}: it is not a tem-track run folder (no config.json written by "
                "'tem-track train' beside last.pt)"
            )
        stored = validate_train_config(document, source=str(run / "config.json"))
        # What a resumed run may change: the length of the run, its bookkeeping, and how
        # often and on how many images it validates (none of which changes a step).
        ignore = {"steps", "checkpoint_every", "log_every", "threads"}
        mine, theirs = config.to_json(), stored.to_json()
        for settings in (mine, theirs):
            for key in ("every", "images"):
                settings["validation"].pop(key, None)
        differ = sorted(k for k in mine if k not in ignore and mine[k] != theirs[k])
        if differ:
            raise ValueError(
                f"cannot resume {run}: the config differs from the run's in {', '.join(differ)} "
                "(only steps, checkpoint_every, log_every, threads, validation.every and validation.images may change)"
            )
        return read_checkpoint(last)
    existing = [name for name in RUN_FILES if (run / name).exists()]
    ours = _run_config(run) is not None
    if existing and not ours:
        raise FileExistsError(
            f"{run} does not look like a tem-track run folder (no config.json written by 'tem-track train') "
            f"but holds {', '.join(existing)}, so they are not replaced even with --overwrite; choose another --out"
        )
    if existing and not overwrite:
        raise FileExistsError(
            f"{run} already holds a training run ({', '.join(existing)}); pass --resume to continue it, "
            "--overwrite to replace it, or choose another --out"
        )
    run.mkdir(parents=True, exist_ok=True)
    for name in existing:
        (run / name).unlink()
    return None


# --- training -------------------------------------------------------------------------


@dataclass(frozen=True)
class TrainResult:
    """What a run ended with."""

    run: Path
    step: int
    best: float | None
    best_step: int | None
    last_loss: float | None
    seconds: float
    stopped: str  # "steps", "time" (max_seconds reached)


def _lr_lambda(config: TrainConfig):
    optim, steps = config.optim, config.steps

    def factor(step: int) -> float:
        if step < optim.warmup_steps:
            return (step + 1) / optim.warmup_steps
        if optim.schedule == "constant":
            return 1.0
        progress = min(1.0, (step - optim.warmup_steps) / max(1, steps - optim.warmup_steps))
        shape = 0.5 * (1 + math.cos(math.pi * progress)) if optim.schedule == "cosine" else 1 - progress
        return optim.min_lr_ratio + (1 - optim.min_lr_ratio) * shape

    return factor


def train(
    config: TrainConfig,
    run: str | os.PathLike,
    *,
    resume: bool = False,
    overwrite: bool = False,
    progress: bool = True,
    max_seconds: float | None = None,
    validation_workers: int = 0,
) -> TrainResult:
    """Train (or fine-tune, with ``config.init``) a model; see the module docstring.

    Parameters
    ----------
    config : TrainConfig
    run : path
        The run folder.
    resume : bool
        Continue the run in ``run`` from its ``last.pt``.
    overwrite : bool
        Replace a run already in ``run`` (only a folder a run wrote: one whose
        ``config.json`` is a training config; other files in it are kept).
    progress : bool
        Show a progress bar.
    max_seconds : float, optional
        Stop after this much wall time (checkpointing first), e.g. to fit a time budget;
        ``resume`` continues.
    validation_workers : int
        Processes scoring validation images (0: in this process).
    """
    from tqdm import tqdm

    if not isinstance(config, TrainConfig):
        raise TypeError(f"config must be a TrainConfig, got {type(config).__name__}")
    run = Path(run)
    state = _prepare_run(config, run, resume=resume, overwrite=overwrite)
    _write_text(run / "config.json", json.dumps(config.to_json(), indent=2))
    if config.threads:
        torch.set_num_threads(config.threads)
    torch.manual_seed(config.seed)
    device = resolve_device(config.device)
    dtype = autocast_dtype(config.precision, device)
    channels_last = device.type == "cuda" if config.channels_last is None else config.channels_last

    model = build_model(config.model)
    if config.init is not None and state is None:
        init_weights(model, config.init, config.model)
    model.to(device)
    if channels_last:
        model.to(memory_format=torch.channels_last)
    optimizer = torch.optim.AdamW(model.parameters(), lr=config.optim.lr, weight_decay=config.optim.weight_decay)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, _lr_lambda(config))
    scaler = torch.amp.GradScaler("cuda") if dtype == torch.float16 else None
    step, best, best_step = 0, None, None
    if state is not None:
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        if scaler is not None and "scaler" in state:
            scaler.load_state_dict(state["scaler"])
        torch.set_rng_state(state["torch_rng"])
        step, best = state["step"], state["best"]
        best_step = state["metrics"].get("best_step")
        for name in ("log.csv", "validation.csv"):
            _truncate_csv(run / name, step)

    labelled_train, labelled_val = _labelled_split(config)
    valset = build_validation(config, labelled_val)
    backend = TorchBackend(model, config.model, device=device, precision=config.precision)
    loader = DataLoader(
        training_stream(config, labelled_train, start=step * config.batch_size),
        batch_size=config.batch_size,
        num_workers=config.data.workers,
        pin_memory=device.type == "cuda",
        persistent_workers=config.data.workers > 0,
        prefetch_factor=4 if config.data.workers > 0 else None,
    )
    config_json = config.to_json()

    def batch_loss(logits, batch) -> torch.Tensor:
        if config.model.family == "linefield":
            loss, _ = linefield_loss(
                logits, batch["target"].to(device, non_blocking=True), batch["weight"].to(device, non_blocking=True),
                known=batch["known"].to(device, non_blocking=True),
                positive_weight=config.loss.positive_weight, direction_weight=config.loss.direction_weight,
                ends_weight=config.loss.ends_weight, gap_weight=config.loss.gap_weight,
                gaps=batch["gaps"].to(device, non_blocking=True) if "gaps" in batch else None,
            )
            return loss
        target = batch["masks"].to(device, non_blocking=True)
        empty_weight = torch.where(batch["partial"].to(device), 0.0, config.loss.empty_weight).float()
        return matched_dice_loss(
            torch.sigmoid(logits.float()), target, batch["count"].to(device),
            matching=config.loss.matching, empty_weight=empty_weight,
        )

    def checkpoint(path: Path, metrics: dict) -> None:
        save_checkpoint(
            path, model=model, config=config_json, step=step, best=best,
            metrics={**metrics, "best_step": best_step}, optimizer=optimizer, scheduler=scheduler, scaler=scaler,
        )

    def run_validation() -> dict:
        nonlocal best, best_step
        tic = time.perf_counter()
        result = validate(backend, valset, workers=validation_workers)
        row = {"step": step, "length_score": result["length_score"]}
        for group, summary in result["groups"].items():
            row[f"{group}_length_score"] = summary["length_score_mean"]
            row[f"{group}_recall"] = summary["dislocation_recall_mean"]
        row["seconds"] = round(time.perf_counter() - tic, 2)
        _append_csv(run / "validation.csv", row)
        if best is None or result["length_score"] > best:
            best, best_step = result["length_score"], step
            checkpoint(run / "best.pt", result)
        plot_curves(run)
        return result

    model.train()
    started = time.perf_counter()
    window_loss, window_n, window_start = 0.0, 0, time.perf_counter()
    last_loss, stopped, last_saved = None, "steps", step
    bar = tqdm(total=config.steps, initial=step, desc="train", unit="step", disable=not progress, dynamic_ncols=True)
    try:
        batches = iter(loader)
        while step < config.steps:
            batch = next(batches)
            x = batch["image"].to(device, non_blocking=True)
            if channels_last:
                x = x.contiguous(memory_format=torch.channels_last)
            with autocast(device, dtype):
                logits = model(x)
            loss = batch_loss(logits, batch)
            optimizer.zero_grad(set_to_none=True)
            if scaler is not None:
                scaler.scale(loss).backward()
                scaler.unscale_(optimizer)
            else:
                loss.backward()
            if config.optim.grad_clip is not None:
                torch.nn.utils.clip_grad_norm_(model.parameters(), config.optim.grad_clip)
            if scaler is not None:
                scaler.step(optimizer)
                scaler.update()
            else:
                optimizer.step()
            scheduler.step()
            step += 1
            window_loss += float(loss.detach())
            window_n += 1
            bar.update()
            if step % config.log_every == 0 or step == config.steps:
                now = time.perf_counter()
                last_loss = window_loss / window_n
                _append_csv(run / "log.csv", {
                    "step": step,
                    "loss": round(last_loss, 6),
                    "lr": scheduler.get_last_lr()[0],
                    "images_per_s": round(window_n * config.batch_size / (now - window_start), 2),
                    "elapsed_s": round(now - started, 1),
                })
                bar.set_postfix(loss=f"{last_loss:.4f}", best="-" if best is None else f"{best:.3f}")
                window_loss, window_n, window_start = 0.0, 0, now
            out_of_time = max_seconds is not None and time.perf_counter() - started > max_seconds
            if step % config.validation.every == 0 or step == config.steps or out_of_time:
                run_validation()
            if step % config.checkpoint_every == 0 or step == config.steps or out_of_time:
                checkpoint(run / "last.pt", {})
                last_saved = step
            if out_of_time:
                stopped = "time"
                break
    except KeyboardInterrupt:
        if step > last_saved:
            checkpoint(run / "last.pt", {})
        raise
    finally:
        bar.close()
    seconds = time.perf_counter() - started
    result = TrainResult(run, step, best, best_step, last_loss, seconds, stopped)
    summary = {
        "step": step, "best_length_score": best, "best_step": best_step, "last_loss": last_loss,
        "seconds": round(seconds, 1), "stopped": stopped, "device": str(device),
        "precision": str(dtype).removeprefix("torch.") if dtype else "fp32",
    }
    _write_text(run / "summary.json", json.dumps(summary, indent=2))
    return result
