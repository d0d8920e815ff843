"""What /predict costs beyond the model: JPEG decode + preprocess + inference vs inference alone, one core.

Both are measured in the same run on the same waste-mini JPEGs, interleaved image by image. The model is
a bundle given with --bundle (e.g. one made by `edgekit train waste` + `edgekit export`), or by default
MobileNetV2 (224×224, the shared ImageNet weights, 6-class head) exported to ONNX here with torch.
Target: full / inference <= 1.2.

    python bench/classify_latency.py
    python bench/classify_latency.py --bundle models/waste/v3 --format onnx-int8 --images 60
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
from rich.table import Table

from edgekit.bundle import Bundle, BundleWriter, InputSpec, Preprocess, resolve
from edgekit.console import console
from edgekit.edge.api import decode_image
from edgekit.edge.classify import Classifier
from edgekit.edge.predictor import Predictor
from edgekit.edge.preprocess import preprocess_image
from edgekit.paths import shared_dir

TARGET = 1.2
LABELS = ["cardboard", "glass", "metal", "paper", "plastic", "trash"]


def mobilenet_bundle(root: Path, weights: Path) -> Bundle:
    """MobileNetV2 with the shared ImageNet backbone and a 6-class head, exported to ONNX (fp32)."""
    import torch

    from edgekit.trainer import mobilenet

    torch.manual_seed(0)
    model = mobilenet.build(num_classes=len(LABELS), padding="keras").eval()
    mobilenet.load_backbone(model, mobilenet.read_state_dict(weights))
    w = BundleWriter("bench-mobilenet", root=root)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(model, (torch.zeros(1, 3, 224, 224),), str(w.add("model.onnx", "onnx", "model")),
                          input_names=["input"], output_names=["logits"], dynamo=False)
    pre = Preprocess(color="RGB", resize=(224, 224), scale=1 / 127.5, offset=-1.0)
    return w.commit(task="image-classification", labels=LABELS,
                    input=InputSpec(shape=[1, 3, 224, 224], layout="NCHW", preprocess=pre))


def measure(predictor: Predictor, jpegs: list[bytes], rounds: int) -> tuple[list[float], list[float]]:
    """Per-image seconds: (inference alone, decode + preprocess + inference as /predict runs it)."""
    clf = Classifier(predictor, {"default": 0.0})
    pre, layout = predictor.manifest.input.preprocess, predictor.manifest.input.layout
    inputs = [preprocess_image(decode_image(j, "image/jpeg"), pre, layout) for j in jpegs]
    infer, full = [], []
    for _ in range(rounds):
        for i, (jpeg, x) in enumerate(zip(jpegs, inputs, strict=True)):
            for which in ((0, 1) if i % 2 else (1, 0)):
                t0 = time.perf_counter()
                if which == 0:
                    predictor.predict(x)
                    infer.append(time.perf_counter() - t0)
                else:
                    clf.classify(decode_image(jpeg, "image/jpeg"))
                    full.append(time.perf_counter() - t0)
    return infer, full


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--bundle", help="bundle to run (default: MobileNetV2 exported here)")
    ap.add_argument("--format", default="onnx", help="model format in the bundle (onnx, onnx-int8, tflite...)")
    ap.add_argument("--images", type=int, default=30)
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args(argv)
    shared = shared_dir(required=True)
    if hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {sorted(os.sched_getaffinity(0))[0]})
    files = sorted((shared / "data" / "waste-mini").rglob("*.jpg"))
    jpegs = [p.read_bytes() for p in files[:: max(1, len(files) // args.images)][: args.images]]
    with tempfile.TemporaryDirectory() as tmp:
        if args.bundle:
            bundle = resolve(args.bundle)
        else:
            bundle = mobilenet_bundle(Path(tmp), shared / "weights" / "mobilenet_v2_imagenet_keras_int8_dequant.pth")
        predictor = Predictor.from_bundle(bundle, fmt=args.format, threads=1)
        measure(predictor, jpegs[:3], 1)  # warm-up
        infer, full = measure(predictor, jpegs, args.rounds)
    i_ms, f_ms = 1000 * statistics.median(infer), 1000 * statistics.median(full)
    table = Table(title=f"{bundle.name}/{bundle.version} {args.format}, {len(jpegs)} JPEGs x {args.rounds}, one core")
    for col in ("path", "median ms", "p90 ms"):
        table.add_column(col)
    table.add_row("inference alone", f"{i_ms:.2f}", f"{1000 * float(np.percentile(infer, 90)):.2f}")
    table.add_row("decode + preprocess + inference", f"{f_ms:.2f}", f"{1000 * float(np.percentile(full, 90)):.2f}")
    console.print(table)
    ratio = f_ms / i_ms
    console.print(f"full / inference = {ratio:.3f} ({'meets' if ratio <= TARGET else 'misses'} the <= {TARGET} target)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
