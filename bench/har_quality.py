"""Leave-one-person-out quality of `edgekit train sequence` on har-mini (6 people, 6 basic activities).

For each person: train on the other five, test on that person's windows, rotate; report the mean
accuracy. Nothing is chosen on the held-out person: training runs a fixed number of epochs with a
cosine learning-rate decay (`select="last"`). The baseline, measured in the same run on the same
windows, is a nearest-centroid classifier on per-window channel means and standard deviations.

    python bench/har_quality.py                        # the seed's LSTM 128 → 64, 15 epochs, mean readout
    python bench/har_quality.py --arch cnn1d --units 64,64 --json runs/har.json
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from rich.table import Table

from edgekit.console import console
from edgekit.paths import shared_dir
from edgekit.trainer import seq_data
from edgekit.trainer.sequence import SequenceConfig, evaluate, fit_model, prepare

BASIC = ["WALKING", "WALKING_UPSTAIRS", "WALKING_DOWNSTAIRS", "SITTING", "STANDING", "LAYING"]
PERSON = r"file:user(\d+)"


def centroid_baseline(train: seq_data.Windows, test: seq_data.Windows) -> float:
    """Accuracy of nearest class centroid over [mean, std] of each channel (standardised features)."""
    def feats(w: seq_data.Windows) -> np.ndarray:
        return np.concatenate([w.x.mean(1), w.x.std(1)], axis=1)

    ftr, fte = feats(train), feats(test)
    mu, sd = ftr.mean(0), ftr.std(0) + 1e-6
    ftr, fte = (ftr - mu) / sd, (fte - mu) / sd
    centroids = np.stack([ftr[train.y == c].mean(0) for c in range(len(train.labels))])
    pred = np.argmin(((fte[:, None, :] - centroids[None]) ** 2).sum(-1), axis=1)
    return float((pred == test.y).mean())


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, default=None, help="har-mini folder [default: shared/data/har-mini]")
    ap.add_argument("--arch", default="lstm")
    ap.add_argument("--units", default="128,64")
    ap.add_argument("--pool", default="mean", choices=["last", "mean"])
    ap.add_argument("--epochs", type=int, default=15)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--lr", type=float, default=2e-3)
    ap.add_argument("--train-stride", type=int, default=32)
    ap.add_argument("--persons", default=None, help="comma-separated subset of people to hold out")
    ap.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    ap.add_argument("--json", type=Path, default=None, help="also write the results here")
    args = ap.parse_args(argv)
    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    data = args.data or (shared_dir(required=True) / "data" / "har-mini")
    base = SequenceConfig(data=data, group_by=PERSON, include_labels=BASIC, window=128, stride=64,
                          train_stride=args.train_stride, arch=args.arch, pool=args.pool,
                          units=[int(u) for u in args.units.split(",")], epochs=args.epochs,
                          batch_size=args.batch_size, lr=args.lr, select="last", device="auto")
    recs, _ = seq_data.load_folder(data, base.label_col, None, PERSON)
    people = sorted({str(r.groups[0]) for r in recs})
    held = args.persons.split(",") if args.persons else people
    rows = []
    runs = Path(tempfile.mkdtemp(prefix="har-bench-"))
    for p in held:
        cfg = base.model_copy(update={"test_groups": [p], "val_groups": [p], "run_dir": runs / p})
        prep = prepare(cfg, recs, show=False)
        t0 = time.perf_counter()
        model, _ = fit_model(cfg, prep)
        report = evaluate(model, prep.test)
        rows.append({"person": p, "windows": report["n"], "baseline": centroid_baseline(prep.train, prep.test),
                     "accuracy": report["accuracy"], "macro_f1": report["macro_f1"],
                     "train_s": time.perf_counter() - t0, "confusion": report["confusion_matrix"]})
        console.print(f"person {p}: accuracy {report['accuracy']:.1%} (baseline {rows[-1]['baseline']:.1%})")
    shutil.rmtree(runs, ignore_errors=True)
    _print(rows, args)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({"args": vars(args) | {"data": str(data), "json": str(args.json)},
                                         "labels": prep.labels, "rows": rows}, indent=2))
    return 0


def _print(rows: list[dict], args: argparse.Namespace) -> None:
    readout = "" if args.arch == "cnn1d" else f" ({args.pool} readout)"
    t = Table(title=f"har-mini leave-one-person-out, {args.arch} {args.units}{readout}, {args.epochs} epochs",
              title_justify="left")
    for col in ("held-out person", "test windows", "baseline acc", "model acc", "macro F1", "train s"):
        t.add_column(col, justify="right")
    for r in rows:
        t.add_row(r["person"], str(r["windows"]), f"{r['baseline']:.1%}", f"{r['accuracy']:.1%}",
                  f"{r['macro_f1']:.3f}", f"{r['train_s']:.0f}")
    mean_b = float(np.mean([r["baseline"] for r in rows]))
    mean_m = float(np.mean([r["accuracy"] for r in rows]))
    t.add_row("[b]mean[/b]", "", f"{mean_b:.1%}", f"[b]{mean_m:.1%}[/b]",
              f"{np.mean([r['macro_f1'] for r in rows]):.3f}", f"{sum(r['train_s'] for r in rows):.0f}")
    console.print(t)
    console.print(f"model / baseline accuracy: {mean_m / mean_b:.2f}x   target ≥ 85%: "
                  f"{'met' if mean_m >= 0.85 else 'NOT met'}")


if __name__ == "__main__":
    sys.exit(main())
