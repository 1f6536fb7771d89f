"""Put an exported ONNX model inside the package as the bundled default (maintainers).

Usage::

    tem-track bundle MODEL.onnx [--name NAME] [--card docs/model-card.md] [--checkpoint CKPT]

(or ``python -m temtrack.export.bundle``, the same command line).

With ``--checkpoint CKPT`` (the training checkpoint it was exported from) the
network's weights are also written, in fp16 without optimiser state, to
``models/NAME.pt`` in the repository (not the package): the starting point for
fine-tuning (``tem-track train ... --set init=models/NAME.pt``), since an ONNX graph
cannot be trained.

Copies ``MODEL.onnx`` into ``sdk/models/`` (as ``NAME.onnx``), and rewrites
``sdk/models/manifest.json`` so that it is the one bundled model and the default, with
its SHA-256 and size, which :mod:`temtrack.sdk.models` checks at every load. The
previous bundled file is removed. Refused: a file without tem-track metadata, or one
over :data:`MAX_BYTES` (16 MiB: the package stays light, and it is the most the GPU
machine hands back in one file).
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import sys
from pathlib import Path

from temtrack.sdk.modelmeta import ModelError, file_sha256, read_metadata
from temtrack.sdk.models import BUNDLED_DIR, MANIFEST
from temtrack.sdk.atomic import write_atomic

__all__ = ["MAX_BYTES", "bundle_model", "fine_tuning_weights", "main"]

MAX_BYTES = 16 * 2**20
REPOSITORY = BUNDLED_DIR.parents[1]  # sdk/models -> the checkout (editable installs)


def bundle_model(model: str | Path, *, name: str | None = None, card: str | None = None,
                 folder: Path = BUNDLED_DIR) -> dict:
    """Make ``model`` the bundled default in ``folder``; return the manifest written."""
    model = Path(model)
    metadata = read_metadata(model)
    if metadata is None:
        raise ModelError(f"{model} has no tem-track metadata; export it with 'tem-track export'")
    size = model.stat().st_size
    if size > MAX_BYTES:
        raise ModelError(f"{model} has {size / 2**20:.1f} MiB, over the {MAX_BYTES / 2**20:.0f} MiB a bundled model "
                         "may have; export it with --fp16-weights")
    name = name or metadata.name
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]*", name) or name == "default":
        raise ValueError(f"bundled model name must be letters, digits, '.', '_' or '-' (not 'default'), got {name!r}")
    target = folder / f"{name}.onnx"
    manifest_path = folder / MANIFEST.name
    old = json.loads(manifest_path.read_text()) if manifest_path.exists() else {"models": []}
    if target.resolve() != model.resolve():
        write_atomic(target, lambda tmp: shutil.copyfile(model, tmp))
    manifest = {
        "format_version": 1,
        "default": name,
        "models": [{
            "name": name,
            "file": target.name,
            "sha256": file_sha256(target),
            "bytes": target.stat().st_size,
            "version": metadata.version,
            "card": card,
        }],
    }
    write_atomic(manifest_path, lambda tmp: tmp.write_text(json.dumps(manifest, indent=2) + "\n"))
    for item in old.get("models", []):
        stale = folder / str(item.get("file", ""))
        if stale.name != target.name and stale.suffix == ".onnx" and stale.is_file():
            stale.unlink()
    return manifest


def fine_tuning_weights(checkpoint: str | Path, out: str | Path) -> Path:
    """Write ``checkpoint``'s network in fp16, with its config and scores but no optimiser
    state, as a checkpoint ``tem-track train`` takes as ``init`` (weights load back into
    float32)."""
    from temtrack.training.checkpoint import load_model, save_checkpoint

    net, _, state = load_model(checkpoint)
    return save_checkpoint(out, model=net.half(), config=state["config"], step=state["step"], best=state["best"],
                           metrics=state["metrics"])


def main(argv: list[str] | None = None, *, prog: str | None = None) -> int:
    parser = argparse.ArgumentParser(prog=prog or "python -m temtrack.export.bundle", description=__doc__.split("\n\n")[0])
    parser.add_argument("model", type=Path, help="an ONNX file written by 'tem-track export'")
    parser.add_argument("--name", help="the bundled model's name (default: the name in its metadata)")
    parser.add_argument("--card", help="repository path of its model card")
    parser.add_argument("--checkpoint", type=Path, help="its training checkpoint: fp16 weights go to models/NAME.pt")
    args = parser.parse_args(argv)
    try:
        manifest = bundle_model(args.model, name=args.name, card=args.card)
    except (ModelError, ValueError, OSError) as exc:
        print(f"bundle: error: {exc}", file=sys.stderr)
        return 2
    entry = manifest["models"][0]
    print(f"bundled {entry['file']} ({entry['bytes'] / 2**20:.1f} MiB, sha256 {entry['sha256'][:12]}) as the default")
    if args.checkpoint is not None:
        weights = fine_tuning_weights(args.checkpoint, REPOSITORY / "models" / f"{entry['name']}.pt")
        print(f"wrote {weights} ({weights.stat().st_size / 2**20:.1f} MiB) for fine-tuning")
    return 0


if __name__ == "__main__":
    sys.exit(main())
