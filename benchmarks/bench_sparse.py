"""Sparse line fields against dense ones: bytes a frame costs on its way to the main
job's worker processes, and the time of that trip, side by side (issue 20).

    python benchmarks/bench_sparse.py [--model default] [--frames 8] [--twip 12]

For a line-field model (the bundled one by default, through onnxruntime on the CPU):
on ``--frames`` generator frames of 512² (sd1-sd3 in turn) and on every 5th of the
first ``5 * --twip`` labelled TWIP frames (``../shared/data/real/twip-8.4um/labeled``;
skipped when absent), prints per set the share of pixels
:class:`~temtrack.sdk.linefield.SparseFields` keeps, the pickled bytes per frame dense
and sparse, and the time per frame of packing plus the trip to a worker process and
back, against the dense fields' trip (what the main job's pool does with a frame), as
a ratio.
Checks on the way that the sparse fields trace exactly the dense fields' splines.
Timings are medians over the frames, with one worker process (the two processes share
the machine's cores).
"""

from __future__ import annotations

import argparse
import pickle
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
from bench_linefield import _median_ms  # the same median timing (benchmarks/ runs as scripts)

LABELLED = Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "real" / "twip-8.4um" / "labeled"


def _received(payload) -> int:
    """Run in the worker: ``payload`` has been unpickled there."""
    return len(payload.indices) if hasattr(payload, "indices") else payload.size


def compare(name: str, fields: list, low: float, pool) -> tuple:
    from temtrack.sdk.linefield import SparseFields, extract_lines

    sparse = [SparseFields.pack(f, low=low) for f in fields]
    for dense_fields, packed in zip(fields, sparse):
        a = [d.points for d in extract_lines(dense_fields).dislocations]
        b = [d.points for d in extract_lines(packed).dislocations]
        if len(a) != len(b) or not all(np.array_equal(p, q) for p, q in zip(a, b)):
            raise AssertionError(f"{name}: the sparse fields traced other splines than the dense ones")
    kept = np.mean([len(s.indices) / (s.shape[1] * s.shape[2]) for s in sparse])
    dense_bytes = np.mean([len(pickle.dumps(f, protocol=pickle.HIGHEST_PROTOCOL)) for f in fields])
    sparse_bytes = np.mean([len(pickle.dumps(s, protocol=pickle.HIGHEST_PROTOCOL)) for s in sparse])
    def trip(payload):  # to a worker process and back, as the main job sends a frame
        return pool.submit(_received, payload).result()

    for f in fields[:2]:  # warm the pipe
        trip(f)
    dense_ms = _median_ms(trip, fields)
    sparse_ms = _median_ms(lambda f: trip(SparseFields.pack(f, low=low)), fields)
    return name, len(fields), kept, dense_bytes, sparse_bytes, dense_ms, sparse_ms


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="default")
    parser.add_argument("--frames", type=int, default=8, help="512² generator frames (default 8)")
    parser.add_argument("--twip", type=int, default=12, help="labelled TWIP frames, every 5th (default 12; 0 skips)")
    args = parser.parse_args()

    from temtrack.sdk.backends import get_backend
    from temtrack.sdk.linefield import LineFieldSettings
    from temtrack.sdk.models import resolve_model
    from temtrack.training.synth import generate_sample

    backend = get_backend(str(resolve_model(args.model)) if not Path(args.model).exists() else args.model)
    low = LineFieldSettings().low

    def fields_of(image):
        return np.ascontiguousarray(np.asarray(backend.predict(np.asarray(image, np.float32)[None])[0], np.float32))

    rows = []
    presets = ("sd1", "sd2", "sd3")
    generated = [fields_of(generate_sample(presets[k % 3], seed=880000 + k, size=512).image) for k in range(args.frames)]
    with ProcessPoolExecutor(max_workers=1) as pool:
        rows.append(compare("generator 512²", generated, low, pool))
        if args.twip > 0:
            if LABELLED.is_dir():
                from temtrack.sdk.groundtruth import iter_ground_truth

                images = [t.image for k, t in enumerate(iter_ground_truth(LABELLED)) if k % 5 == 0][: args.twip]
                rows.append(compare("TWIP labelled", [fields_of(image) for image in images], low, pool))
            else:
                print(f"TWIP frames skipped: {LABELLED} is absent")
    print(f"model {args.model}; sparse fields packed at low = {low}; splines identical on every frame")
    print(f"{'frames':<16} {'n':>3} {'kept':>7} {'dense kB':>9} {'sparse kB':>10} {'bytes ratio':>12} "
          f"{'dense trip ms':>14} {'pack+trip ms':>13} {'time ratio':>11}")
    for name, n, kept, dense_b, sparse_b, dense_ms, sparse_ms in rows:
        print(f"{name:<16} {n:>3} {kept:>7.1%} {dense_b / 1e3:>9.0f} {sparse_b / 1e3:>10.0f} {sparse_b / dense_b:>12.2f} "
              f"{dense_ms:>14.2f} {sparse_ms:>13.2f} {sparse_ms / dense_ms:>11.2f}")


if __name__ == "__main__":
    main()
