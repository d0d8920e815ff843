"""Does the input pipeline keep up with the model? One epoch of real training vs the model alone.

Same machine, same run, same shapes: (a) the real pipeline of `edgekit train waste` (memory-mapped
uint8 cache → batched augmentation on the device → normalisation) feeding forward/backward/step of
MobileNetV2 in its phase-2 setting, and (b) the same steps on tensors made before the clock starts.
The ratio (a)/(b) is the pipeline's overhead; the target is <= 1.15.

With `--views K` (default 16; `edgekit train waste --views`) the same is measured for the cached-view path
(`edgekit.trainer.waste_views`): stored activations of the frozen layers feeding the trainable tail, vs
the tail on pre-made activations, plus the one-off cost of caching the views and the speed-up of a
cached-view epoch over a live one.

    .venv/bin/python bench/train_throughput.py --img-size 224 --batch-size 32 --device auto
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch
from rich.console import Console
from rich.table import Table

REPO = Path(__file__).resolve().parents[1]


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def _steps(model, opt, batches, device: torch.device, make) -> float:
    """Seconds for forward/backward/step over `batches` (index arrays), inputs from `make(idx)`."""
    _sync(device)
    t0 = time.perf_counter()
    for idx in batches:
        x, y = make(idx)
        opt.zero_grad(set_to_none=True)
        with torch.autocast(device.type, dtype=torch.float16, enabled=device.type == "cuda"):
            loss = torch.nn.functional.cross_entropy(model(x), y)
        loss.backward()
        opt.step()
    _sync(device)
    return time.perf_counter() - t0


def _views(args, cfg, prep, model, style, batches, device) -> list[tuple[str, float]]:
    """(label, seconds) for the cached-view epoch, the tail alone, and the one-off caching."""
    import tempfile

    from edgekit.trainer import waste, waste_views

    cut = waste_views.first_trainable_block(model)
    _sync(device)
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory() as root:  # a fresh store: the caching is really done, and timed
        views = waste_views.build(prep, model, cut, style.preprocess(args.img_size), cfg.augment, args.views,
                                  cfg.seed, device, root=Path(root))
        _sync(device)
        t_cache = time.perf_counter() - t0
        views = waste_views.Views(cut, np.array(views.plain), np.array(views.augmented))  # before the folder goes
    tail = waste_views.Tail(model, cut)
    waste.bn_frozen_train_mode(tail)
    opt = torch.optim.Adam([p for p in tail.parameters() if p.requires_grad], lr=1e-4)
    data = waste_views.ViewBatches(views, prep, balanced=False)
    premade = {len(b): (torch.randn(len(b), *views.plain.shape[1:], device=device)
                        .contiguous(memory_format=torch.channels_last),
                        torch.randint(0, len(prep.labels), (len(b),), device=device)) for b in batches}
    _steps(tail, opt, batches[:2], device, lambda idx: premade[len(idx)])
    _steps(tail, opt, batches[:2], device, lambda idx: data.batch(idx, device))
    t_model = t_real = float("inf")
    for _ in range(args.repeats):
        t_model = min(t_model, _steps(tail, opt, batches, device, lambda idx: premade[len(idx)]))
        t_real = min(t_real, _steps(tail, opt, batches, device, lambda idx: data.batch(idx, device)))
    return [(f"cached views + tail (blocks {cut}-18)", t_real), ("tail alone (pre-made activations)", t_model),
            ("caching", t_cache)]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", default=None, help="Dataset folder [default: ../shared/data/waste-mini].")
    ap.add_argument("--img-size", type=int, default=224)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--unfreeze", type=int, default=91)
    ap.add_argument("--views", type=int, default=16, help="Also time the cached-view path (0: skip).")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default).")
    ap.add_argument("--repeats", type=int, default=3, help="Interleaved repeats; the best time of each counts.")
    ap.add_argument("--max-batches", type=int, default=0, help="Time only this many batches (0: one epoch).")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    from edgekit.paths import shared_dir
    from edgekit.trainer import waste, waste_data
    from edgekit.trainer.engine import resolve_device

    shared = shared_dir(required=True)
    data_dir = Path(args.data) if args.data else shared / "data" / "waste-mini"
    weights = shared / "weights" / "mobilenet_v2_imagenet_keras_int8_dequant.pth"
    cfg = waste.WasteConfig(data=data_dir, img_size=args.img_size, batch_size=args.batch_size,
                            weights=str(weights) if weights.exists() else "none", device=args.device)
    device = resolve_device(args.device)
    prep = waste_data.prepare(cfg)  # fills the cache: decoding is a one-off, not part of an epoch
    model, style, _ = waste.build_model(cfg, len(prep.labels))
    model.to(device).to(memory_format=torch.channels_last)  # as `edgekit train waste` does
    waste.set_trainable(model, args.unfreeze)
    waste.bn_frozen_train_mode(model)
    opt = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=1e-4)
    data = waste_data.PhotoBatches(prep, style.preprocess(args.img_size), cfg.augment, balanced=False)
    order = np.random.default_rng(0).permutation(len(data))
    batches = [order[i:i + args.batch_size] for i in range(0, len(order), args.batch_size)]
    if args.max_batches:
        batches = batches[:args.max_batches]
    n_images = sum(len(b) for b in batches)

    # same shapes and memory format (channels_last) as the pipeline's batches
    premade = {len(b): (torch.randn(len(b), 3, args.img_size, args.img_size, device=device)
                        .contiguous(memory_format=torch.channels_last),
                        torch.randint(0, len(prep.labels), (len(b),), device=device)) for b in batches}
    warm = batches[:2]
    _steps(model, opt, warm, device, lambda idx: premade[len(idx)])
    _steps(model, opt, warm, device, lambda idx: data.batch(idx, device))

    # interleaved repeats, best of each: other processes on a shared machine slow single runs at random
    t_model = t_real = t_pipe = float("inf")
    for _ in range(args.repeats):
        t_model = min(t_model, _steps(model, opt, batches, device, lambda idx: premade[len(idx)]))
        t_real = min(t_real, _steps(model, opt, batches, device, lambda idx: data.batch(idx, device)))
        _sync(device)
        t0 = time.perf_counter()
        for idx in batches:
            data.batch(idx, device)
        _sync(device)
        t_pipe = min(t_pipe, time.perf_counter() - t0)

    ratio = t_real / t_model
    views_rows = _views(args, cfg, prep, model, style, batches, device) if args.views else []
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else f"cpu ({torch.get_num_threads()} threads)"
    table = Table(title=f"Training throughput, {n_images} images at {args.img_size}px, batch {args.batch_size}, "
                        f"{name}")
    for col in ("run", "seconds", "images/s"):
        table.add_column(col, justify="left" if col == "run" else "right")
    table.add_row("model alone (pre-made tensors)", f"{t_model:.2f}", f"{n_images / t_model:.1f}")
    table.add_row("real pipeline + model", f"{t_real:.2f}", f"{n_images / t_real:.1f}")
    table.add_row("pipeline alone (cache → augment → normalise)", f"{t_pipe:.2f}", f"{n_images / t_pipe:.1f}")
    for label, seconds in views_rows[:2]:
        table.add_row(label, f"{seconds:.2f}", f"{n_images / seconds:.1f}")
    console = Console()
    console.print(table)
    console.print(f"best of {args.repeats} interleaved repeats each")
    verdict = "[green]meets[/]" if ratio <= 1.15 else "[red]misses[/]"
    console.print(f"ratio real/model = {ratio:.3f} ({verdict} the <= 1.15 target)")
    if views_rows:
        (_, t_tail_real), (_, t_tail_model), (_, t_cache) = views_rows
        v_ratio = t_tail_real / t_tail_model
        verdict = "[green]meets[/]" if v_ratio <= 1.15 else "[red]misses[/]"
        console.print(f"cached views: ratio real/tail = {v_ratio:.3f} ({verdict} the <= 1.15 target); an epoch is "
                      f"{t_real / t_tail_real:.1f}x faster than live; caching {args.views} views took {t_cache:.1f} s "
                      f"once ({t_cache / t_tail_real:.1f} cached-view epochs)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
