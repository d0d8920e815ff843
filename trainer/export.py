"""`edgekit export` and `edgekit eval`: convert a bundle's PyTorch model, gate it, record it.

Export: resolve and verify the bundle, rebuild its PyTorch model, convert to each format of the table
(`edgekit.trainer.formats`) in a scratch folder inside the bundle, move each file into place with
`os.replace` and record it (size, sha256, layout) in the manifest, then run the accuracy gate on the
validation samples and store every verdict. A rejected format keeps its file, marked `rejected`, and
the command ends with `GateRejected` (exit 3).
"""

from __future__ import annotations

import logging
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field
from rich.progress import BarColumn, TextColumn, TimeElapsedColumn

from edgekit.bundle import Bundle, resolve
from edgekit.console import console
from edgekit.errors import UserError
from edgekit.progress import Progress
from edgekit.trainer import calibration_data, formats, gate
from edgekit.trainer.calibration_data import Samples
from edgekit.trainer.chatter import to_debug_log

log = logging.getLogger(__name__)

CalibMethod = Literal["minmax", "entropy", "percentile"]


class ExportConfig(BaseModel):
    """What `edgekit export` was asked to do."""

    model_config = ConfigDict(extra="forbid")

    bundle: str
    """Bundle folder or name (`models/waste/v3`, `waste`)."""
    formats: list[str] = Field(default_factory=list)
    """Formats to write; empty = every format that applies to the task."""
    calib_samples: int = 200
    """Training samples used to calibrate int8 formats (at least 32)."""
    calib_method: CalibMethod = "minmax"
    """How onnx-int8 picks activation ranges (tflite-int8 always uses minmax). `entropy` is onnxruntime's KL
    calibration as `quantize_static` runs it, with 128 histogram bins and 128 quantized bins: that leaves the
    full range as its only candidate, and on the waste models its file was byte for byte minmax's. With 2048
    bins its symmetric search cut ReLU6 outputs to [0, 0.75] and int8 fell to 14-22% accuracy, so it is left
    as onnxruntime ships it; `percentile` (99.999%) is the one that clips outliers."""
    max_drop: float = Field(1.0, ge=0)
    """Accuracy points a format may lose against PyTorch before it is rejected."""
    latency_runs: int = Field(50, ge=0)
    """Single-sample runs whose median is the reported latency (0: latency not measured)."""
    seed: int = Field(0, ge=0)
    """Seed of the calibration subset."""


class EvalConfig(BaseModel):
    """What `edgekit eval` was asked to do."""

    model_config = ConfigDict(extra="forbid")

    bundle: str
    """Bundle folder or name."""
    data: str | None = None
    """Labeled data: an image folder with one subfolder per class, a folder of CSVs (sequence bundles) or an
    .npz with x and y; none = the bundle's own validation split."""
    formats: list[str] = Field(default_factory=list)
    """Formats to evaluate; empty = every model file in the bundle."""
    threads: int = Field(1, ge=1)
    """Inference threads (1 = the gate's measurement setting)."""
    latency_runs: int = Field(50, ge=0)
    """Single-sample runs whose median is the reported latency (0: latency not measured)."""


@dataclass
class ExportJob:
    """Everything a converter needs; fp32 files and calibration samples are made once, when first asked."""

    bundle: Bundle
    model: Any
    example: np.ndarray
    """One real input sample [1, ...], float32 in the PyTorch layout."""
    config: ExportConfig
    workdir: Path
    made: dict[str, Path] = field(default_factory=dict)
    _calibration: Samples | None = None

    def calibration(self) -> Samples:
        if self._calibration is None:
            self._calibration = calibration_data.calibration_set(self.bundle, self.config.calib_samples,
                                                                 self.config.seed)
        return self._calibration

    def float_file(self, name: str) -> Path:
        """The fp32 file of format `name`: made in this run, else the bundle's own (verified at the start:
        a bundle's weights never change), else converted now into the scratch folder."""
        if name not in self.made and (existing := self.bundle.model_file(name)) is not None:
            self.made[name] = existing
        if name not in self.made:
            fmt = formats.FORMATS[name]
            out = self.workdir / fmt.file_name(self.bundle.name)
            fmt.convert_fn()(self, fmt, out)
            self.made[name] = out
        return self.made[name]


def _progress() -> Progress:
    return Progress(TextColumn("{task.description}"), BarColumn(), TextColumn("{task.completed}/{task.total}"),
                    TimeElapsedColumn(), console=console, transient=True)


def convert_all(job: ExportJob, chosen: list[formats.Format]) -> None:
    """Convert each format and move it into the bundle, recording it in the manifest."""
    m = job.bundle.manifest
    with _progress() as bar:
        task = bar.add_task("exporting", total=len(chosen))
        for fmt in chosen:
            bar.update(task, description=f"exporting {fmt.name}")
            rel = fmt.file_name(job.bundle.name)
            out = job.workdir / rel
            fmt.convert_fn()(job, fmt, out)  # `chosen` has fp32 before int8: an int8 finds its fp32 in `made`
            out.chmod(0o644)  # ai-edge-quantizer writes its files executable
            os.replace(out, job.bundle.path / rel)
            job.made[fmt.name] = job.bundle.path / rel
            layout = fmt.layout_for(m.task, m.input.layout)
            # unchecked until gate.store records the verdict: an export that stops before it (a later
            # converter failing, Ctrl+C) leaves no file that deploy would take as gated
            job.bundle.add_file(rel, fmt.name, "model", layout=layout if layout != m.input.layout else None,
                                status="unchecked")
            log.info("wrote %s", rel)
            bar.advance(task)


def _reference(bundle: Bundle, model: Any, samples: Samples) -> tuple[np.ndarray, gate.Result]:
    from edgekit.edge.predictor import output_kind

    scores = gate.pytorch_scores(model, samples.x, output_kind(bundle.manifest))
    pred = gate.decisions(scores, gate.threshold_of(bundle))
    return scores, gate.Result(format="pytorch", accuracy=float((pred == samples.y).mean()))


def measure(bundle: Bundle, names: list[str], samples: Samples, reference: np.ndarray | None,
            threads: int, latency_runs: int) -> list[gate.Result]:
    """Run every format through the Predictor on `samples`."""
    from edgekit.edge.predictor import Predictor

    results = []
    with _progress() as bar:
        task = bar.add_task("evaluating", total=len(names))
        for name in names:
            bar.update(task, description=f"evaluating {name}")
            with to_debug_log(f"{name} runtime"):  # LiteRT's one XNNPACK info line
                p = Predictor.from_bundle(bundle, name, threads=threads)
            r = gate.evaluate(p, samples, gate.threshold_of(bundle), reference, latency_runs)
            r.format = name
            results.append(r)
            bar.advance(task)
    return results


def export_bundle(cfg: ExportConfig) -> list[gate.Result]:
    """Export, gate and record; raises `GateRejected` when a format loses more than `max_drop` points."""
    from edgekit.trainer.models import load_from_bundle

    bundle = resolve(cfg.bundle)
    bundle.verify()
    chosen = formats.select(cfg.formats, bundle.manifest.task)
    if any(f.int8 for f in chosen) and cfg.calib_samples < calibration_data.MIN_CALIBRATION:
        raise UserError(f"--calib-samples {cfg.calib_samples} is too few; int8 calibration needs at least "
                        f"{calibration_data.MIN_CALIBRATION}.")
    model = load_from_bundle(bundle)
    val = calibration_data.load_split(bundle, "val")
    if len(val) == 0:
        raise UserError(f"Bundle {bundle.path} has no held-out samples for the accuracy gate.")
    workdir = bundle.path / f".export-{os.getpid()}"
    workdir.mkdir(exist_ok=True)
    try:
        job = ExportJob(bundle, model, val.x[:1].copy(), cfg, workdir)
        convert_all(job, chosen)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    scores, ref = _reference(bundle, model, val)
    results = measure(bundle, [f.name for f in chosen], val, scores, 1, cfg.latency_runs)
    rejected = gate.judge(results, ref, cfg.max_drop)
    gate.store(bundle, results, cfg.max_drop, f"{len(val)} from {val.source}")
    gate.print_table(results, ref, f"{bundle.name}/{bundle.version}: accuracy gate on {len(val)} validation "
                                   f"samples (max drop {cfg.max_drop:g} points)")
    for note in gate.int8_without_gain(results):
        log.warning(note)
    if rejected:
        names = ", ".join(f"{r.format} ({r.drop:.1f} points below PyTorch)" for r in rejected)
        raise gate.GateRejected(f"The accuracy gate rejected {names}; the files stay in {bundle.path} marked "
                                "rejected, and deploy refuses them unless forced."
                                + gate.coarseness(len(val), cfg.max_drop))
    return results


def eval_bundle(cfg: EvalConfig) -> list[gate.Result]:
    """Evaluate model files of a bundle on labeled data with the gate's code; prints the table."""
    bundle = resolve(cfg.bundle)
    names = [f.name for f in formats.select(cfg.formats, bundle.manifest.task)] if cfg.formats else bundle.formats()
    names = [n for n in names if n != "pytorch"]
    if not names:
        raise UserError(f"Bundle {bundle.path} has no exported model; run `edgekit export` first.")
    samples = (calibration_data.labeled_data(bundle, cfg.data) if cfg.data
               else calibration_data.load_split(bundle, "val"))
    reference, ref = None, None
    try:
        from edgekit.trainer.models import load_from_bundle

        model = load_from_bundle(bundle)
        reference, ref = _reference(bundle, model, samples)
    except ImportError:
        log.info("torch is not installed: no PyTorch reference")
    except UserError as e:  # a bundle without its checkpoint (or arch) is still evaluated, just without a reference
        log.warning("no PyTorch reference: %s", e)
    results = measure(bundle, names, samples, reference, cfg.threads, cfg.latency_runs)
    if ref is not None:
        for r in results:
            r.drop = 100.0 * (ref.accuracy - r.accuracy)
    gate.print_table(results, ref, f"{bundle.name}/{bundle.version} on {len(samples)} samples from {samples.source}")
    return results
