"""The ``tem-track`` command line: the main job and one subcommand per other job.

Sits on top of every package (``temtrack.sdk``, ``temtrack.training``,
``temtrack.export``), so it is the one module allowed to import them all; it does so
only inside the subcommand that needs them, so ``tem-track --version`` and ``--help``
answer instantly and the main job runs without torch.

``tem-track patches`` and ``tem-track bundle`` hand their arguments to the command
lines of :mod:`temtrack.training.synth.patches` and :mod:`temtrack.export.bundle`,
which also run as ``python -m`` with those module names.
"""

from __future__ import annotations

import argparse
import contextlib
import errno
import math
import os
import signal
import sys
import warnings
from pathlib import Path

from temtrack import __version__

# name -> what it does, for the help of both parsers; the order is the order shown.
SUBCOMMANDS = {
    "synth": "synthetic images and videos with ground truth",
    "eval": "score a backend or a model against ground truth",
    "train": "train or fine-tune a model",
    "export": "a checkpoint to ONNX and a TensorRT engine",
    "models": "the bundled and your own models",
    "patches": "real background patches for the generator",
    "bundle": "make an exported model the bundled default, for maintainers",
}
# Subcommands whose parser lives in their module (also run with python -m MODULE).
DELEGATED = {"patches": "temtrack.training.synth.patches", "bundle": "temtrack.export.bundle"}


def _subcommand_list() -> str:
    return "Subcommands: " + "; ".join(f"{name} ({what})" for name, what in SUBCOMMANDS.items()) + "."


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="tem-track",
        description="Dislocations in in-situ TEM videos as tracked splines and time series.",
        epilog="Main job: 'tem-track VIDEO --out splines.parquet' (options: 'tem-track VIDEO --help'). "
        f"{_subcommand_list()} Run 'tem-track SUBCOMMAND --help' for their options.",
    )
    parser.add_argument("--version", action="version", version=f"tem-track {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="SUBCOMMAND")

    synth = sub.add_parser(
        "synth",
        help="generate synthetic TEM images (or a video) with exact ground truth",
        description="Generate synthetic TEM images of dislocations with one mask per dislocation, "
        "exact centrelines and a JSON of every parameter; or, with --video, a synthetic in-situ "
        "video with a ground-truth table.",
    )
    synth.add_argument("--preset", default="sd3", help="sd1, sd2 or sd3 (default: sd3)")
    synth.add_argument("--config", type=Path, help="JSON generator config (overrides --preset); see --show-config")
    synth.add_argument("--out", type=Path, help="output folder: new, empty, or (with --overwrite) one tem-track synth wrote")
    synth.add_argument("--n", type=int, default=100, help="number of images (default: 100)")
    synth.add_argument("--seed", type=int, default=0, help="dataset seed (default: 0)")
    synth.add_argument("--size", type=int, help="image size in pixels (square; default: the preset's, 512)")
    synth.add_argument("--backgrounds", type=Path, help="folder of real background patches; switches the background to real patches")
    synth.add_argument(
        "--background-mode",
        choices=("perlin", "patches", "mixed"),
        help="Perlin noise, real patches, or a mix (default: the preset's, or patches with --backgrounds)",
    )
    synth.add_argument("--workers", type=int, default=1, help="parallel processes (default: 1)")
    synth.add_argument("--video", action="store_true", help="write a synthetic video (video.mp4 + ground_truth.parquet)")
    synth.add_argument("--frames", type=int, default=100, help="video length in frames (default: 100)")
    synth.add_argument("--fps", type=float, default=15.0, help="video frame rate (default: 15)")
    synth.add_argument("--labelme", action="store_true", help="also write labelme JSON beside each image (to correct in labelme)")
    synth.add_argument("--overwrite", action="store_true", help="replace an existing output folder")
    synth.add_argument("--resume", action="store_true", help="continue an interrupted run (images only)")
    synth.add_argument("--quiet", action="store_true", help="no progress bar")
    synth.add_argument("--list-presets", action="store_true", help="list the presets and exit")
    synth.add_argument("--show-config", action="store_true", help="print the resolved config as JSON and exit")

    evaluate = sub.add_parser(
        "eval",
        help="score a segmentation backend against ground truth (thesis length metric, Dice, ...)",
        description="Segment every image of a synthetic dataset folder, a folder of labelme files or a "
        "folder of line-label PNGs (NAME.png with NAME_dislocations.png beside it) with "
        "a backend, and score it against the ground truth: the thesis' length metric, pixel Dice/IoU, "
        "per-dislocation precision and recall, count error, centreline distance. Writes a JSON report and "
        "a box plot (PNG) beside it, and prints a summary.",
    )
    evaluate.add_argument("--data", type=Path, required=True, help="synthetic dataset folder, folder of labelme JSON files with their images, "
                          "or folder of line labels (NAME.png with NAME_dislocations.png)")
    what = evaluate.add_mutually_exclusive_group(required=True)
    what.add_argument("--backend", help="backend name (classical), or 'truth' to score the ground truth itself (the post-processing ceiling)")
    what.add_argument("--model", help="a model: training checkpoint (.pt, needs the [train] extra), ONNX file, or a "
                      "model name from 'tem-track models' (e.g. default, the bundled model)")
    evaluate.add_argument("--out", type=Path, help="report JSON (default: DIR_BACKEND_report.json beside the data folder); the PNG goes beside it")
    evaluate.add_argument("--label-width", type=int, default=3, help="mask width in pixels drawn from labelme centrelines (default: 3)")
    evaluate.add_argument("--min-dice", type=float, default=0.1, help="smallest Dice of a match (default: 0.1, as the thesis)")
    evaluate.add_argument(
        "--multiple",
        choices=("exclude", "zero"),
        default="exclude",
        help="predicted masks holding several dislocations: left out of matching (thesis; default) or matched and scored 0",
    )
    evaluate.add_argument("--scale", type=_scale, default="auto", metavar="S|auto", help="line-field model: model px per "
                          "image px; default auto, as the main job: the line width of 8 images spread over the folder "
                          "decides one scale for all (the lines are scored in the images' own pixels)")
    evaluate.add_argument("--lines", choices=("dark", "bright"), default="dark", help="dislocations darker than the "
                          "background (default) or brighter (the model sees the inverted images)")
    evaluate.add_argument("--flatten", type=_flatten, default="auto", metavar="SIGMA|auto|off", help="even out uneven "
                          "illumination before the model, as the main job (default auto: 45 px for a line-field model)")
    evaluate.add_argument("--threshold", type=_thresholds, metavar="T[,T...]", help="the main job's --threshold "
                          "(a line-field model's upper threshold on its centre map, a mask model's mask threshold; "
                          "default: the model's own). Several, comma-separated, compare them in one run: the model "
                          "runs once per image, one report per threshold (OUT_tT.json), a table and a plot "
                          "(OUT_thresholds.png) of what each finds and how many lines it draws")
    evaluate.add_argument("--overwrite", action="store_true", help="replace an existing report")
    evaluate.add_argument("--quiet", action="store_true", help="no progress bar")

    trainer = sub.add_parser(
        "train",
        help="train or fine-tune the multi-label U-Net++ (needs the [train] extra)",
        description="Train the U-Net++ that predicts one dislocation per output mask, on synthetic images "
        "generated on the fly, stored datasets and/or labelled real frames, as the config says (TOML or JSON; "
        "unknown keys are errors; see --print-config for every setting and its default). The run folder gets "
        "config.json, log.csv, validation.csv, curves.png, best.pt (best validation length score) and last.pt.",
    )
    trainer.add_argument("config", nargs="?", type=Path, help="config file (.toml or .json); default: all defaults")
    trainer.add_argument("--out", type=Path, help="run folder (required unless --print-config)")
    trainer.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                         help="override a setting, e.g. --set model.encoder=resnet34 --set steps=2000 (JSON values)")
    trainer.add_argument("--resume", action="store_true", help="continue the run in --out from its last.pt")
    trainer.add_argument("--overwrite", action="store_true", help="replace a run already in --out")
    trainer.add_argument("--max-minutes", type=float, help="stop (with a checkpoint) after this many minutes; --resume continues")
    trainer.add_argument("--validation-workers", type=int, default=0, help="processes scoring validation images (default: 0, in the main process)")
    trainer.add_argument("--print-config", action="store_true", help="print the resolved config as JSON and exit")
    trainer.add_argument("--quiet", action="store_true", help="no progress bar")

    models = sub.add_parser(
        "models",
        help="list the bundled and your own models with their metadata, or add one",
        description="List the models 'tem-track VIDEO --model NAME' knows: the bundled default (its file "
        "checked against the SHA-256 shipped with it) and the .onnx/.engine files in your model folder "
        "($TEMTRACK_MODEL_DIR, else ~/.local/share/tem-track/models). --add copies an exported model there.",
    )
    models.add_argument("--json", action="store_true", help="print the list as JSON (every metadata field)")
    models.add_argument("--add", type=Path, metavar="MODEL.onnx", help="copy this exported model into your model folder")
    models.add_argument("--name", help="with --add: the name to know it by (default: the file stem)")
    models.add_argument("--overwrite", action="store_true", help="with --add: replace a model of that name")

    exporter = sub.add_parser(
        "export",
        help="export a training checkpoint to ONNX (and a TensorRT engine), checked for parity",
        description="Export a checkpoint to an ONNX model with a dynamic batch dimension, the sigmoid (and "
        "optionally the threshold and a cast to uint8) inside the graph, and the 'temtrack' metadata the runtime "
        "reads. Before the file appears, onnxruntime runs it on synthetic frames and its masks are compared with "
        "the PyTorch network's (fp32: max |difference| <= 1e-4; fp16: <= 2e-2 and >= 99.9 % of thresholded "
        "pixels identical); a failed check writes nothing. --tensorrt also builds a TensorRT engine from it "
        "(needs TensorRT and an NVIDIA GPU).",
    )
    exporter.add_argument("checkpoint", type=Path, help="training checkpoint (.pt) written by tem-track train")
    exporter.add_argument("--out", type=Path, required=True, help="the ONNX file to write (.onnx)")
    exporter.add_argument("--input-size", type=int, nargs="+", metavar="PX",
                          help="frame size the model takes: H [W], multiples of 32 (default: the training image size)")
    precision = exporter.add_mutually_exclusive_group()
    precision.add_argument("--fp16", action="store_true", help="half-precision weights and arithmetic (float32 in and out)")
    precision.add_argument("--fp16-weights", action="store_true",
                           help="half-precision stored weights, float32 arithmetic: half the file at fp32 speed on CPUs")
    exporter.add_argument("--opset", type=int, default=17, help="ONNX opset (default: 17)")
    exporter.add_argument("--masks", action="store_true",
                          help="threshold and cast to uint8 inside the graph (a quarter of the output bytes; "
                          "the per-dislocation score is then 1)")
    exporter.add_argument("--threshold", type=float, default=0.5, help="mask probability threshold (default: 0.5)")
    exporter.add_argument("--line-threshold", type=float, help="line-field model: the upper threshold on its centre "
                          "map that the main job and eval use unless given --threshold (default: the tracing's, 0.7); "
                          "choose it with 'tem-track eval --threshold T1,T2,...'")
    exporter.add_argument("--name", help="model name stored in the file (default: the architecture)")
    exporter.add_argument("--model-version", help="model version stored in the file (default: step-STEP)")
    exporter.add_argument("--description", help="one line about the model stored in the file")
    exporter.add_argument("--report", action="append", default=[], type=Path, metavar="REPORT.json",
                          help="a 'tem-track eval' report whose summary to record as the model's metric figures")
    exporter.add_argument("--tensorrt", type=Path, metavar="ENGINE",
                          help="also build a TensorRT engine (fp16, batch 1-32) here, with ENGINE.json beside it")
    exporter.add_argument("--overwrite", action="store_true", help="replace existing files")

    # Listed here for the help; main() hands their arguments to their own parsers.
    sub.add_parser("patches", add_help=False, help="crop real background patches (no dislocations) for the "
                   "generator's 'patches' mode")
    sub.add_parser("bundle", add_help=False, help="make an exported ONNX model the bundled default "
                   "(maintainers; writes into the repository's models/)")
    return parser


def _synth(args: argparse.Namespace) -> int:
    from temtrack.training.synth import get_preset, load_config, preset_names, validate_config

    if args.list_presets:
        for name in preset_names():
            print(f"{name}: {get_preset(name).description}")
        return 0
    if args.config is not None and args.config.is_dir():
        raise ValueError(f"--config must be a JSON file (see --show-config), got the folder {args.config}")
    if args.seed < 0:
        raise ValueError(f"--seed must be a non-negative integer, got {args.seed}")
    config = load_config(args.config) if args.config else get_preset(args.preset)
    changes = {}
    if args.size is not None:
        changes["size"] = (args.size, args.size)
    mode = args.background_mode or ("patches" if args.backgrounds else None)
    if mode:
        changes["background"] = {**config.background.model_dump(), "mode": mode}
    if changes:
        config = validate_config({**config.model_dump(), **changes})
    if args.show_config:
        print(config.to_json())
        return 0
    if args.out is None:
        raise ValueError("--out is required: the folder to write to")
    if args.video:
        from temtrack.training.synth.video import VideoSettings, write_video

        for flag, given in (("--resume", args.resume), ("--labelme", args.labelme)):
            if given:
                raise ValueError(f"{flag} goes with image datasets, not --video")
        if not 1 <= args.frames <= 10_000_000:
            raise ValueError(f"--frames must be between 1 and 10000000, got {args.frames}")
        if not 0 < args.fps <= 10_000:  # also refuses nan
            raise ValueError(f"--fps must be above 0 and at most 10000, got {args.fps}")
        write_video(
            args.out,
            config,
            args.seed,
            VideoSettings(frames=args.frames, fps=args.fps),
            backgrounds=args.backgrounds,
            overwrite=args.overwrite,
            progress=not args.quiet,
        )
        print(f"wrote {args.out / 'video.mp4'} and {args.out / 'ground_truth.parquet'}")
        return 0
    from temtrack.training.synth.storage import write_dataset

    write_dataset(
        args.out,
        config,
        args.n,
        seed=args.seed,
        backgrounds=args.backgrounds,
        workers=args.workers,
        overwrite=args.overwrite,
        resume=args.resume,
        progress=not args.quiet,
        labelme=args.labelme,
    )
    print(f"wrote {args.n} images with ground truth to {args.out}")
    return 0


def _eval(args: argparse.Namespace) -> int:
    from temtrack.sdk.evaluate import (
        default_report_path,
        evaluate_thresholds,
        format_skipped,
        format_summary,
        format_thresholds,
        plot_path,
        plot_thresholds,
        threshold_report_path,
        thresholds_plot_path,
        write_report,
    )

    name = args.backend if args.model is None else Path(args.model).stem
    out = args.out if args.out is not None else default_report_path(args.data, name)
    if out.suffix.lower() != ".json":
        raise ValueError(f"--out must end in .json (the box plot goes beside it as .png), got {out}")
    thresholds = args.threshold or [None]
    sweep = len(thresholds) > 1
    reports_at = [threshold_report_path(out, t) if sweep else out for t in thresholds]
    written = [p for path in reports_at for p in (path, plot_path(path))] + ([thresholds_plot_path(out)] if sweep else [])
    for path in written:
        if path.is_dir():
            raise ValueError(f"--out {out}: {path} is a folder; give a report file name ending in .json")
    if not args.overwrite:  # fail before the work, not after
        for existing in written:
            if existing.exists():
                raise FileExistsError(f"{existing} already exists; choose another --out or pass --overwrite")
    if args.model is not None:
        from temtrack.sdk.backends import get_backend
        from temtrack.sdk.models import resolve_model

        model = resolve_model(args.model)
        if model.is_dir():
            raise ValueError(f"--model {args.model} is a folder, not a model file (.onnx, .engine or .pt)")
        if not model.is_file():
            raise FileNotFoundError(f"model {args.model} does not exist")
        backend = get_backend(str(model))
    else:
        backend = args.backend
    reports = evaluate_thresholds(
        args.data,
        backend,
        thresholds,
        min_dice=args.min_dice,
        multiple=args.multiple,
        label_width=args.label_width,
        scale=args.scale,
        lines=args.lines,
        flatten=args.flatten,
        progress=not args.quiet,
    )
    for report, path in zip(reports, reports_at):
        write_report(report, path, overwrite=args.overwrite)
    if sweep:
        print(format_thresholds(reports))
        plot_thresholds(reports, written[-1], overwrite=args.overwrite)
    else:
        print(format_summary(reports[0]))
    skipped = format_skipped(reports[0])
    if skipped:
        print(f"warning: {skipped}", file=sys.stderr)
    if sweep:
        print(f"wrote {len(reports)} reports ({reports_at[0].name}, ...) with their box plots and {written[-1]}")
    else:
        print(f"wrote {out} and {plot_path(out)}")
    return 0


def _models(args: argparse.Namespace) -> int:
    import json

    from temtrack.sdk.models import add_user_model, describe, list_models, user_model_dir

    if args.add is not None:
        target = add_user_model(args.add, args.name, overwrite=args.overwrite)
        print(f"added {target}; run it with --model {target.stem}")
        return 0
    if args.name is not None or args.overwrite:
        raise ValueError("--name and --overwrite go with --add")
    rows = [describe(entry) for entry in list_models()]
    broken = [row["name"] for row in rows if row["problem"]]
    verdict = (f"{len(broken)} of {len(rows)} models {'is' if len(broken) == 1 else 'are'} broken: "
               f"{', '.join(broken)} (its {'problem field' if args.json else 'PROBLEM line'} says why)")
    if args.json:
        print(json.dumps(rows, indent=2))
        if broken:
            print(verdict, file=sys.stderr)
        return 1 if broken else 0
    for row in rows:
        meta = row["metadata"] or {}
        extra = meta.get("extra", {})
        checkpoint = extra.get("checkpoint", {})
        flags = ", ".join(f for f in ("default" if row["default"] else "", row["source"]) if f)
        print(f"{row['name']}  ({flags})")
        print(f"  file       {row['path']}" + (f"  {row['size_mib']} MiB" if row["size_mib"] is not None else ""))
        if row["problem"]:
            print(f"  PROBLEM    {row['problem']}")
        if meta:
            size = "x".join(str(v) for v in meta["input_size"])
            if meta.get("family") == "linefield":
                shape = f"line fields ({meta['n_masks']} channels), any frame size (trained at {size})"
                own = meta.get("line_threshold")
                threshold = f"traced at threshold {own}" if own is not None else "traced at the default threshold"
            else:
                shape = f"N={meta['n_masks']}, input {size}"
                threshold = f"threshold {meta['threshold']}"
            print(f"  model      {meta['name']} {meta['version']}: {meta.get('family', 'multilabel')} "
                  f"{extra.get('architecture', '?')} {extra.get('encoder', '')}, {shape}, {extra.get('precision', '?')}, "
                  f"output {meta['output']}, {threshold}")
            if checkpoint:
                score = checkpoint.get("best_length_score")
                score = f"{score:.4f}" if isinstance(score, float) else score
                print(f"  trained    step {checkpoint.get('step')}, best validation length score {score}")
            if meta.get("description"):
                print(f"  about      {meta['description']}")
        if row["card"]:
            print(f"  card       {row['card']}")
    if not any(r["source"] == "user" for r in rows):
        print(f"(no user models in {user_model_dir()}; add one with 'tem-track models --add MODEL.onnx')")
    if broken:
        print(verdict, file=sys.stderr)
    return 1 if broken else 0


def _export(args: argparse.Namespace) -> int:
    from temtrack.export.onnx import export_onnx

    size = None
    if args.input_size is not None:
        if len(args.input_size) > 2:
            raise ValueError(f"--input-size takes H or H W, got {len(args.input_size)} numbers")
        size = tuple(args.input_size) * (3 - len(args.input_size))
    if args.tensorrt is not None and args.tensorrt.exists() and not args.overwrite:  # fail before the work
        raise FileExistsError(f"{args.tensorrt} exists; pass --overwrite to replace it")
    from temtrack.sdk.evaluate import read_report_summary

    reports = {}
    for path in args.report:
        try:
            reports[path.stem] = read_report_summary(path)
        except ValueError as exc:
            raise ValueError(f"--report {exc}") from None
    result = export_onnx(
        args.checkpoint,
        args.out,
        input_size=size,
        fp16=args.fp16,
        fp16_weights=args.fp16_weights,
        opset=args.opset,
        output="masks" if args.masks else "probabilities",
        threshold=args.threshold,
        line_threshold=args.line_threshold,
        reports=reports,
        overwrite=args.overwrite,
        name=args.name,
        version=args.model_version,
        description=args.description,
    )
    size_mib = result.path.stat().st_size / 2**20
    print(result.parity.summary())
    meta = result.metadata
    if meta.family == "linefield":
        shape = f"any frame size (sides padded to multiples of {meta.size_multiple}), {meta.n_masks} fields"
    else:
        shape = f"input {meta.input_size[0]}x{meta.input_size[1]}, {meta.n_masks} masks"
    print(f"wrote {result.path} ({size_mib:.1f} MiB, {shape}, sha256 {result.sha256[:12]})")
    if args.tensorrt is not None:
        from temtrack.export.tensorrt import build_engine

        build_engine(result.path, args.tensorrt, fp16=True, overwrite=args.overwrite)
        print(f"wrote {args.tensorrt} and {args.tensorrt}.json")
    return 0


def _train(args: argparse.Namespace) -> int:
    import json

    from temtrack.training.config import (
        TrainConfig,
        load_train_config,
        merge_settings,
        nest_dotted,
        validate_train_config,
    )

    base = TrainConfig() if args.config is None else load_train_config(args.config)
    overrides = nest_dotted(_key_values(args.set, "--set"), option="--set")
    config = validate_train_config(merge_settings(base.to_json(), overrides), source="the config with --set")
    if args.print_config:
        print(json.dumps(config.to_json(), indent=2))
        return 0
    if args.out is None:
        raise ValueError("--out RUN_FOLDER is required (where the checkpoints and logs go)")
    from temtrack.training.train import train

    result = train(
        config,
        args.out,
        resume=args.resume,
        overwrite=args.overwrite,
        progress=not args.quiet,
        max_seconds=None if args.max_minutes is None else 60.0 * args.max_minutes,
        validation_workers=args.validation_workers,
    )
    best = "none" if result.best is None else f"{result.best:.4f} at step {result.best_step}"
    ending = "" if result.stopped == "steps" else f" (stopped: {result.stopped} limit; --resume continues)"
    print(f"trained {result.step} steps in {result.seconds / 60:.1f} min{ending}; best validation length score {best}")
    print(f"run folder: {result.run} (best.pt, last.pt, log.csv, validation.csv, curves.png)")
    return 0


def _run_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="tem-track",
        usage="tem-track VIDEO --out splines.parquet [options]\n       tem-track SUBCOMMAND ...",
        description="Find every dislocation in every frame as a spline, link them into tracks and "
        "write splines, per-track series and pair distances as Parquet. VIDEO is a video file "
        "(mp4, avi, mkv, mov, ...), a TIFF stack, a folder of images or a glob pattern in quotes.",
        epilog=f"{_subcommand_list()} Run 'tem-track SUBCOMMAND --help' for their options.",
    )
    parser.add_argument("--version", action="version", version=f"tem-track {__version__}")
    parser.add_argument("video", metavar="VIDEO", help="video file, TIFF stack, image folder or glob")
    parser.add_argument("--out", help="splines Parquet file (default: VIDEO's name + _splines.parquet "
                        "beside it); OUT_tracks.parquet and OUT_pairs.parquet go beside it")
    parser.add_argument("--model", help="model file (.onnx, TensorRT .engine or training checkpoint .pt) or a model "
                        "name from 'tem-track models' (default: the bundled default model)")
    parser.add_argument("--backend", help="auto (default with --model: the fastest available, announced), "
                        "onnxruntime, tensorrt, torch, or classical (no model)")
    parser.add_argument("--providers", help="onnxruntime execution providers, comma-separated, e.g. "
                        "CUDAExecutionProvider,CPUExecutionProvider (implies --backend onnxruntime)")
    parser.add_argument("--compile", action="store_true", help="torch backend (a .pt checkpoint): torch.compile the "
                        "network (a compile of tens of seconds per frame size first; not yet measured on a GPU)")
    parser.add_argument("--cuda-graphs", action="store_true", help="torch backend on an NVIDIA GPU: replay the forward "
                        "pass as a CUDA graph (fewer kernel launches; not yet measured on a GPU)")
    parser.add_argument("--field-dtype", choices=("float32", "float16"), help="torch backend, line-field model: the "
                        "dtype of the fields sent to post-processing (default float32, which traces exactly the "
                        "model's lines; float16 halves the values' bytes and can move lines)")
    parser.add_argument("--batch-size", type=int, default=4, help="frames per model call (default: 4)")
    parser.add_argument("--workers", type=int, help="post-processing processes (default: CPU cores - 1; 0 = none)")
    parser.add_argument("--scale", type=_scale, metavar="S|auto", help="model px per frame px; default auto: a "
                        "line-field model measures the dislocations' width in 8 frames and resamples them when it is "
                        "far from the width the model was trained at (announced), otherwise runs at the frames' own "
                        "size; a fixed-size model fits each frame to its input. --scale 1: always the frames' own "
                        "size")
    parser.add_argument("--lines", choices=("dark", "bright"), default="dark", help="dislocations darker than the "
                        "background (bright field; default) or brighter (dark field, weak beam: the model sees the "
                        "inverted frames)")
    parser.add_argument("--flatten", type=_flatten, default="auto", metavar="SIGMA|auto|off", help="even out uneven illumination "
                        "(vignetting, thickness, bend contours) before the model: each frame is divided by its "
                        "Gaussian blur of SIGMA model px; default auto: 45 px for a line-field model, off for others")
    parser.add_argument("--every", type=int, default=1, help="process every K-th frame (default: 1)")
    parser.add_argument("--start", type=int, default=0, help="first frame (default: 0)")
    parser.add_argument("--end", type=int, help="stop before this frame (default: the last)")
    parser.add_argument("--fps", type=float, help="frame rate, overriding the file's")
    parser.add_argument("--pixel-size", type=float, metavar="NM", help="nm per pixel, overriding the file's metadata")
    parser.add_argument("--input-range", metavar="RANGE", help="how pixel values map to gray: auto (default: the "
                        "dtype or declared bit depth; for 16-bit data holding 10/12/14-bit values and for floats, "
                        "from sampled frames, announced), dtype (the dtype's full range), or LOW,HIGH")
    parser.add_argument("--threshold", type=float, help="mask probability threshold, or a line-field model's upper threshold on its centreline map "
                        "(default: the model's)")
    parser.add_argument("--objects", choices=("dislocations", "loops"), default="dislocations",
                        help="what to find: dislocation lines (default), or dislocation loops and black dots "
                        "(classical detector, ellipse fit, trackpy linking, D_eff; writes OUT and OUT_tracks.parquet; "
                        "--overlay draws the ellipses and ids, --tracker-option sets the trackpy linking, e.g. "
                        "search_range=6)")
    parser.add_argument("--loop-exclude", action="append", default=[], type=int, nargs=4, metavar=("X0", "Y0", "X1", "Y1"),
                        help="with --objects loops: a box (px, end exclusive) where no loop is kept, for a burnt-in "
                        "label the automatic annotation mask misses (repeatable)")
    parser.add_argument("--keep-overlays", action="store_true", help="keep dislocations found on burnt-in overlays "
                        "(scale bars and their labels, dose text, timestamps, cursors: saturated, sharp-edged marks found "
                        "in every frame); by default they are left out and counted in the metadata")
    parser.add_argument("--tracker", default="curve", help="linker: curve (default) or trackpy")
    parser.add_argument("--tracker-option", action="append", default=[], metavar="KEY=VALUE",
                        help="a linker setting, e.g. max_cost=10 or memory=5 (repeatable)")
    parser.add_argument("--overlay", type=Path, help="also write an mp4 with every spline drawn in its track's colour")
    parser.add_argument("--plots", type=Path, help="also write PNG plots into this folder: pair distances and positions "
                        "against time, one panel per pile-up, largest first, paged")
    parser.add_argument("--no-summary", action="store_true", help="do not write OUT_summary.html (counts, time series "
                        "and overlay stills on one page) beside the tables")
    parser.add_argument("--resume", action="store_true", help="continue an interrupted run writing --out")
    parser.add_argument("--overwrite", action="store_true", help="replace existing outputs")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    return parser


def _number_or_word(text: str, words: dict):
    """A number > 0, or one of ``words`` (read case-blind) as the value it stands for."""
    word = text.strip().lower()
    if word in words:
        return words[word]
    expected = f"expected a number > 0 or {' or '.join(map(repr, words))}, got {text!r}"
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(expected) from None
    if not (math.isfinite(value) and value > 0):
        raise argparse.ArgumentTypeError(expected)
    return value


def _scale(text: str):
    """``--scale``: a number > 0 or ``auto``."""
    return _number_or_word(text, {"auto": "auto"})


def _thresholds(text: str) -> list[float]:
    """``--threshold``: one number in (0, 1), or several separated by commas."""
    values = []
    for part in text.split(","):
        try:
            value = float(part)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected numbers in (0, 1) separated by commas, got {part.strip()!r} in {text!r}") from None
        if not 0.0 < value < 1.0:
            raise argparse.ArgumentTypeError(f"a threshold must be in (0, 1), got {part.strip()!r}")
        if value in values:
            raise argparse.ArgumentTypeError(f"threshold {part.strip()} is given twice in {text!r}")
        values.append(value)
    return values


def _flatten(text: str):
    """``--flatten``: a number of px > 0, ``auto`` or ``off`` (None)."""
    return _number_or_word(text, {"auto": "auto", "off": None})


def _key_values(items: list[str], option: str) -> dict:
    """``KEY=VALUE`` strings as a dict; values read as JSON where they parse (numbers,
    true/false, null), else kept as text."""
    import json

    options = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise ValueError(f"{option} takes KEY=VALUE, got {item!r}")
        try:
            options[key.strip()] = json.loads(value)
        except ValueError:
            options[key.strip()] = value
    return options


def _loops(args: argparse.Namespace, out: Path | None) -> int:
    """``--objects loops``: loops and black dots, two tables (``temtrack.sdk.loops``)."""
    from temtrack.sdk.loops import track_loops

    if out is None:
        video = Path(args.video)
        out = video.with_name(f"{video.stem if video.suffix else video.name}_loops.parquet")
    if args.plots is not None and args.plots.exists() and not args.plots.is_dir():
        raise ValueError(f"--plots {args.plots} is a file; give a folder to write loops.png into")
    for flag, given in (("--model", args.model), ("--backend", args.backend), ("--providers", args.providers),
                        ("--scale", args.scale), ("--threshold", args.threshold), ("--input-range", args.input_range)):
        if given is not None:
            raise ValueError(f"{flag} goes with dislocations; the loop detector is classical (no model)")
    for key in _torch_switches(args):
        raise ValueError(f"--{key.replace('_', '-')} goes with dislocations; the loop detector is classical (no model)")
    if args.lines != "dark":
        raise ValueError("--lines goes with dislocation lines; the loop detector finds dark loops and dots")
    if args.flatten != "auto":
        raise ValueError("--flatten goes with dislocations; the loop detector is classical (no model)")
    picture = None if args.plots is None else args.plots / "loops.png"
    if picture is not None and picture.exists() and not args.overwrite:
        raise FileExistsError(f"plot {picture} already exists; pass --overwrite to replace it")
    options = {"exclude": [tuple(box) for box in args.loop_exclude]} if args.loop_exclude else {}
    if args.tracker_option:
        options["link"] = _key_values(args.tracker_option, "--tracker-option")
    if getattr(args, "keep_overlays", False):
        options["annotations"] = "off"  # no mask from sampled frames (the detector's own text rules stay)
    result = track_loops(args.video, out, start=args.start, end=args.end, every=args.every, settings=options,
                         fps=args.fps, pixel_size_nm=args.pixel_size, overlay=args.overlay, resume=args.resume,
                         overwrite=args.overwrite, progress=not args.quiet)
    frames = result.loops.frame.nunique() if len(result.loops) else 0
    resumed = f" (+{result.resumed_frames} resumed)" if result.resumed_frames else ""
    print(f"{result.frames} frames{resumed} in {result.seconds:.1f} s ({result.fps:.1f} frames/s): "
          f"{len(result.loops)} loops in {frames} frames with loops, {len(result.tracks)} tracks")
    written = [str(path) for path in result.paths.values()]
    if picture is not None:
        from temtrack.tracker import plot_loops

        picture.parent.mkdir(parents=True, exist_ok=True)
        written.append(str(plot_loops(result.loops, result.tracks, picture)))
    print("wrote " + ", ".join(written))
    return 0


def _torch_switches(args: argparse.Namespace) -> dict:
    """The torch backend's options given on the command line (``--compile``,
    ``--cuda-graphs``, ``--field-dtype``), by option name; empty when none is given."""
    given = {"compile": args.compile, "cuda_graphs": args.cuda_graphs, "field_dtype": args.field_dtype}
    return {key: value for key, value in given.items() if value not in (False, None)}


def _torch_backend(args: argparse.Namespace, switches: dict):
    """The torch backend of ``--model`` with ``switches``; a ValueError saying why when
    the model does not run on torch, another backend is asked for, or ``--cuda-graphs``
    has no CUDA GPU to run on."""
    from temtrack.sdk.backends import get_backend, model_backend
    from temtrack.sdk.models import default_model, resolve_model

    flags = ", ".join("--" + key.replace("_", "-") for key in switches)
    if args.providers is not None:
        raise ValueError(f"{flags} set the torch backend; --providers picks onnxruntime: give one or the other")
    if args.backend not in (None, "auto", "torch"):
        raise ValueError(f"{flags} set the torch backend, not --backend {args.backend}")
    model = default_model() if args.model is None else resolve_model(args.model)
    runs_on = model_backend(model)
    if runs_on != "torch":
        raise ValueError(f"{flags} set the torch backend, which runs training checkpoints (.pt); model {model} runs "
                         f"on {runs_on} (give --model CHECKPOINT.pt, or leave {flags} out)")
    if switches.get("cuda_graphs"):
        try:
            import torch
        except ModuleNotFoundError:
            torch = None
        if torch is None or not torch.cuda.is_available():
            raise ValueError("--cuda-graphs needs an NVIDIA GPU, and torch sees no CUDA device on this machine; "
                             "run without --cuda-graphs")
    # The user's threshold goes to the backend too: it cuts a line-field model's sparse
    # fields at the tracing's lower threshold (and a mask model's crops at the mask
    # threshold), which the main job otherwise refuses and recomputes from dense outputs.
    threshold = {} if args.threshold is None else {"threshold": args.threshold}
    return get_backend(str(model), device="auto", precision="auto", **threshold, **switches)


def _run(args: argparse.Namespace) -> int:
    from temtrack.sdk.analyzer import Analyzer

    out = args.out
    from temtrack.sdk.sources import parse_input_range

    input_range = None if args.input_range is None else parse_input_range(args.input_range)
    if out is not None and out.endswith(("/", os.sep)):
        raise ValueError(f"--out {out} ends in '/'; give the splines file, e.g. {out.rstrip('/' + os.sep)}/splines.parquet")
    out = None if out is None else Path(out)
    if args.objects == "loops":
        return _loops(args, out)
    if out is None:
        video = Path(args.video)
        out = video.with_name(f"{video.stem if video.suffix else video.name}_splines.parquet")
    model, backend = args.model, args.backend
    switches = _torch_switches(args)
    if switches:
        model, backend = None, _torch_backend(args, switches)
        if not args.quiet:
            print(f"torch on {backend.device} ({backend.precision_label}; compile {backend.compiled}, CUDA graphs "
                  f"{backend.cuda_graphs}, fields {backend.field_dtype})", file=sys.stderr)
    analyzer = Analyzer(
        model,
        backend=backend,
        threshold=args.threshold,
        tracker=args.tracker,
        tracker_options=_key_values(args.tracker_option, "--tracker-option"),
        batch_size=args.batch_size,
        workers=args.workers,
        scale="auto" if args.scale is None else args.scale,
        lines=args.lines,
        flatten=args.flatten,
        providers=None if args.providers is None else [p.strip() for p in args.providers.split(",") if p.strip()],
        annotations=not args.keep_overlays,
    )
    if analyzer.selection and not args.quiet:
        print(analyzer.selection, file=sys.stderr)
    result = analyzer.run(
        args.video,
        out,
        start=args.start,
        end=args.end,
        every=args.every,
        fps=args.fps,
        pixel_size_nm=args.pixel_size,
        input_range=input_range,
        summary=not args.no_summary,
        overlay=args.overlay,
        plots=args.plots,
        resume=args.resume,
        overwrite=args.overwrite,
        progress=not args.quiet,
    )
    import pyarrow.parquet as pq

    ids = pq.read_table(result.paths["splines"], columns=["track_id"]).column("track_id")  # not the points
    resumed = f" (+{result.resumed_frames} resumed)" if result.resumed_frames else ""
    print(
        f"{result.frames} frames{resumed} in {result.seconds:.1f} s ({result.fps:.1f} frames/s): "
        f"{len(ids)} dislocations in {len(ids.unique())} tracks"
    )
    print("wrote " + ", ".join(str(path) for path in result.paths.values()))
    return 0


class _Signalled(KeyboardInterrupt):
    """SIGTERM or SIGHUP, raised in the main thread so the run stops as on Ctrl-C."""

    def __init__(self, signum: int):
        super().__init__(signum)
        self.signum = signum


@contextlib.contextmanager
def _signals_as_interrupts():
    """SIGTERM and SIGHUP stop the job like Ctrl-C (finished frames flushed, workers
    ended); the previous handlers come back afterwards. Only the main thread can."""
    import threading

    wanted = [getattr(signal, name) for name in ("SIGTERM", "SIGHUP") if hasattr(signal, name)]
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def raise_interrupt(signum, frame):
        raise _Signalled(signum)

    previous = {signum: signal.signal(signum, raise_interrupt) for signum in wanted}
    try:
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)


@contextlib.contextmanager
def _warnings_as_lines(prog: str):
    """Warnings printed as one line each, ``tem-track: warning: ...``, not with source lines."""

    def show(message, category, filename, lineno, file=None, line=None):
        print(f"{prog}: warning: {message}", file=sys.stderr)

    with warnings.catch_warnings():
        warnings.simplefilter("default")
        for category in (DeprecationWarning, PendingDeprecationWarning, FutureWarning):
            warnings.simplefilter("ignore", category)  # libraries' notes to developers, not to users
        warnings.showwarning = show
        yield


def _os_error(error: OSError) -> str:
    """One line for an operating-system error, naming the path and what to do."""
    where = error.filename or ""
    if error.filename2:
        where = f"{where} -> {error.filename2}"
    reason = error.strerror or str(error)
    hints = {
        errno.ENOSPC: "no space left on the device; free some space (finished frames are kept: rerun with --resume)",
        errno.EACCES: "permission denied; choose a folder you can write to, or fix its permissions",
        errno.EPERM: "operation not permitted (an immutable or protected file?); choose another place",
        errno.EROFS: "read-only file system; choose a writable folder",
        getattr(errno, "EDQUOT", -1): "disk quota exceeded; free some space (finished frames are kept: rerun with --resume)",
    }
    text = hints.get(error.errno, reason)
    return f"{text}: {where}" if where else text


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv and argv[0] in DELEGATED:
        import importlib

        return importlib.import_module(DELEGATED[argv[0]]).main(argv[1:], prog=f"tem-track {argv[0]}")
    if argv and not argv[0].startswith("-") and argv[0] not in SUBCOMMANDS:
        args = _run_parser().parse_args(argv)
        args.command = "run"
    else:
        parser = _parser()
        args = parser.parse_args(argv)
        if args.command is None:
            parser.print_help()
            print("\nMain job: tem-track VIDEO --out splines.parquet [options]  (tem-track VIDEO --help)")
            return 0
    prog = "tem-track" if args.command == "run" else f"tem-track {args.command}"
    job = {"synth": _synth, "eval": _eval, "train": _train, "export": _export, "models": _models, "run": _run}[args.command]
    try:
        with _signals_as_interrupts(), _warnings_as_lines(prog):
            return job(args)
    except (ValueError, FileNotFoundError, FileExistsError, NotADirectoryError, IsADirectoryError, ModuleNotFoundError) as exc:
        # Our own error classes derive from ValueError and name the problem; a
        # traceback would only bury the message.
        print(f"{prog}: error: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:  # the machine's resources: a full disk, a permission, a read-only folder
        print(f"{prog}: error: {_os_error(exc)}", file=sys.stderr)
        return 1
    except KeyboardInterrupt as exc:
        signum = getattr(exc, "signum", signal.SIGINT)
        hint = {
            "run": "; the finished frames are kept: rerun with --resume to continue",
            "synth": "; rerun with --resume to continue",
            "train": "; rerun with --resume to continue from the last checkpoint",
        }.get(args.command, "")
        print(f"{prog}: interrupted ({signal.Signals(signum).name}){hint}", file=sys.stderr)
        return 128 + int(signum)


if __name__ == "__main__":
    sys.exit(main())
