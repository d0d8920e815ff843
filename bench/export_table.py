"""Export benchmark: every format of a waste classifier on this CPU, against its fp32 baseline.

    python bench/export_table.py                       # builds a waste-mini bundle first (224 px)
    python bench/export_table.py models/waste/v3       # or measures an existing image bundle
    python bench/export_table.py --size 160 --runs 100 --calib 200

Without a bundle it makes one the way `edgekit train waste` starts: ImageNet MobileNetV2 (the shared
Keras-converted weights, Keras padding) with a linear head trained on frozen features of waste-mini's
training photos (a seeded split, 20 validation photos per class). Then `edgekit export` runs with every
format; its gate measures accuracy, agreement, size and median single-thread latency with the device's
Predictor. The table adds each int8 format's ratios against the fp32 file of the same runtime, and the
issue's targets: int8 size <= 0.3x fp32, int8 latency <= 0.6x fp32 for at least one int8 format, and at
most 1 point accuracy drop.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from rich.table import Table

from edgekit.bundle import BundleWriter, InputSpec, Preprocess, resolve
from edgekit.console import console, setup_logging
from edgekit.errors import UserError
from edgekit.paths import shared_dir
from edgekit.trainer.export import ExportConfig, export_bundle
from edgekit.trainer.formats import FORMATS

VAL_PER_CLASS = 20


def build_bundle(root: Path, size: int, seed: int = 0):
    """A waste-mini bundle: ImageNet MobileNetV2, a linear head on frozen features."""
    import torch

    from edgekit import atomic
    from edgekit.edge.preprocess import preprocess_images
    from edgekit.trainer import models
    from edgekit.trainer.mobilenet import load_backbone, read_state_dict

    shared = shared_dir(required=True)
    data, weights = shared / "data" / "waste-mini", shared / "weights" / "mobilenet_v2_imagenet_keras_int8_dequant.pth"
    labels = sorted(p.name for p in data.iterdir() if p.is_dir())
    rng = np.random.default_rng(seed)
    split: dict[str, list] = {"train": [], "val": []}
    for i, c in enumerate(labels):
        files = sorted(p.name for p in (data / c).glob("*.jpg"))
        order = rng.permutation(len(files))
        for rank, j in enumerate(order):
            split["val" if rank < VAL_PER_CLASS else "train"].append([f"{c}/{files[j]}", i])
    pre = Preprocess(color="RGB", resize=(size, size), scale=1 / 127.5, offset=-1.0)
    arch = {"name": "mobilenet_v2", "kwargs": {"num_classes": len(labels), "width_mult": 1.0, "padding": "keras"}}
    torch.manual_seed(seed)
    model = models.build(arch["name"], **arch["kwargs"]).eval()
    load_backbone(model, read_state_dict(weights))
    x = torch.from_numpy(preprocess_images([data / r for r, _ in split["train"]], pre))
    y = torch.tensor([label for _, label in split["train"]])
    with torch.inference_mode():
        feats = torch.cat([torch.flatten(torch.nn.functional.adaptive_avg_pool2d(model.features(x[i:i + 32]), 1), 1)
                           for i in range(0, len(x), 32)])
    head = model.classifier[1]
    opt = torch.optim.Adam(head.parameters(), lr=1e-3, weight_decay=1e-3)
    for _ in range(400):
        opt.zero_grad()
        torch.nn.functional.cross_entropy(head(feats.clone()), y).backward()
        opt.step()
    w = BundleWriter("waste-bench", root=root)
    torch.save({k: v.detach() for k, v in model.state_dict().items()}, w.add("model.pt", "pytorch", "checkpoint"))
    atomic.write_json(w.add("split.json", "json", "data"), {"root": str(data), **split})
    return w.commit(task="image-classification", labels=labels,
                    input=InputSpec(shape=[1, 3, size, size], layout="NCHW", preprocess=pre),
                    extra={"arch": arch, "output": "logits"})


def interleaved_latency(bundle, names: list[str], runs: int) -> dict[str, float]:
    """Median single-thread latency per format, measured round-robin so load drift hits all alike."""
    from edgekit.edge.predictor import Predictor
    from edgekit.trainer.calibration_data import load_split

    x = load_split(bundle, "val", limit=8).x
    predictors = {n: Predictor.from_bundle(bundle, n, threads=1) for n in names}
    times: dict[str, list[float]] = {n: [] for n in names}
    for p in predictors.values():
        p.predict(x[:1])
    for i in range(runs):
        for n, p in predictors.items():
            start = time.perf_counter()
            p.predict(x[i % len(x)][None])
            times[n].append((time.perf_counter() - start) * 1000.0)
    return {n: float(np.median(t)) for n, t in times.items()}


def ratio_table(results: dict, reference_accuracy: float) -> tuple[Table, dict[str, bool]]:
    t = Table(title="int8 against fp32 of the same runtime", title_justify="left")
    for col in ("format", "size ratio", "latency ratio", "accuracy drop (points)"):
        t.add_column(col, justify="left" if col == "format" else "right")
    sizes_ok, latency_ok, drop_ok = [], [], []
    for name, fmt in FORMATS.items():
        if not fmt.int8 or name not in results:
            continue
        base = results[fmt.runtime]
        size, lat = results[name].size / base.size, results[name].latency_ms / base.latency_ms
        drop = 100 * (reference_accuracy - results[name].accuracy)
        sizes_ok.append(size <= 0.3)
        latency_ok.append(lat <= 0.6)
        drop_ok.append(drop <= 1.0)
        t.add_row(name, f"{size:.2f}x", f"{lat:.2f}x", f"{drop:+.1f}")
    return t, {"int8 size <= 0.3x fp32": all(sizes_ok), "int8 latency <= 0.6x fp32 (one format)": any(latency_ok),
               "accuracy drop <= 1 point": all(drop_ok)}


def report(bundle, rows: list, runs: int) -> bool:
    """Re-measure latency round-robin, print the ratio table and the verdicts; True when all targets hold."""
    results = {r.format: r for r in rows}
    for name, ms in interleaved_latency(bundle, list(results), runs).items():
        results[name].latency_ms = ms
    console.print("round-robin latency (median of the same runs over all formats), size, accuracy:")
    for name, r in results.items():
        console.print(f"  {name:12s} {r.latency_ms:7.2f} ms  {r.size / 1e6:5.2f} MB  {100 * r.accuracy:.1f}%")
    first = next(iter(results.values()))
    table, verdicts = ratio_table(results, first.accuracy + first.drop / 100)
    console.print(table)
    for what, ok in verdicts.items():
        console.print(f"{'PASS' if ok else 'FAIL'}  {what}")
    return all(verdicts.values())


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("bundle", nargs="?", help="an image bundle to export; default: build one from waste-mini")
    ap.add_argument("--size", type=int, default=224, help="input size of the built bundle")
    ap.add_argument("--runs", type=int, default=100, help="single-thread runs per latency median (>= 50)")
    ap.add_argument("--calib", type=int, default=200, help="calibration samples")
    args = ap.parse_args()
    setup_logging(False)
    import torch

    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        bundle = resolve(args.bundle) if args.bundle else build_bundle(Path(tmp), args.size)
        console.print(f"bundle {bundle.path} ready in {time.perf_counter() - start:.0f} s")
        start = time.perf_counter()
        try:  # max_drop 100: the bench reports drops, it does not reject
            rows = export_bundle(ExportConfig(bundle=str(bundle.path), calib_samples=args.calib,
                                              latency_runs=args.runs, max_drop=100.0))
        except UserError as e:
            console.print(f"error: {e}")
            return 2
        console.print(f"export and gate: {time.perf_counter() - start:.0f} s; torch {torch.__version__}")
        return 0 if report(resolve(bundle.path), rows, args.runs) else 1


if __name__ == "__main__":
    sys.exit(main())
