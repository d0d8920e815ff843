"""The export formats: one table, and everything about formats comes from it.

A row names the file suffix, the tasks it applies to, whether it is int8, the converter (a
`module:function`, imported only when used) and the runtime that runs it on the device. `--format`
parsing, the default list per task, the `--help` text and "did you mean" all read `FORMATS`; adding a
format is adding a row and a converter function.

Converters have the signature `convert(job: ExportJob, fmt: Format, out: Path) -> None` and write the
file at `out` (a scratch folder; the orchestrator moves it into the bundle atomically).
"""

from __future__ import annotations

import difflib
import importlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from edgekit.bundle import TASKS
from edgekit.errors import UserError

IMAGE = "image-classification"
ALL_TASKS = tuple(TASKS)


@dataclass(frozen=True)
class Format:
    """One export format."""

    name: str
    suffix: str
    """Appended to the bundle name to make the file name (`waste` + `.int8.tflite`)."""
    tasks: tuple[str, ...]
    """Tasks this format applies to."""
    int8: bool
    """Quantized: needs calibration samples."""
    converter: str
    """`module:function` that writes the file."""
    runtime: str
    """The device runtime (`MODEL_FRAMEWORK`): onnx or tflite."""
    image_layout: str
    """Input axis order of this file for image models (other tasks keep the PyTorch layout)."""
    help: str

    def convert_fn(self) -> Callable[..., Any]:
        module, func = self.converter.split(":")
        return getattr(importlib.import_module(module), func)

    def file_name(self, bundle_name: str) -> str:
        return f"{bundle_name}{self.suffix}"

    def layout_for(self, task: str, pytorch_layout: str) -> str:
        return self.image_layout if task == IMAGE else pytorch_layout


FORMATS: dict[str, Format] = {
    f.name: f
    for f in (
        Format("onnx", ".onnx", ALL_TASKS, False, "edgekit.trainer.export_onnx:export_onnx", "onnx", "NCHW",
               "ONNX fp32 (torch.onnx, opset 17), metadata in metadata_props"),
        Format("onnx-int8", ".int8.onnx", ALL_TASKS, True, "edgekit.trainer.export_onnx:quantize_onnx", "onnx",
               "NCHW", "ONNX static QDQ int8, per-channel weights, float I/O"),
        Format("tflite", ".tflite", ALL_TASKS, False, "edgekit.trainer.export_tflite:export_tflite", "tflite",
               "NHWC", "TFLite fp32 (litert-torch), image input NHWC"),
        # int8 I/O: openwakeword feeds float32 features, so wake-word heads get no tflite-int8.
        Format("tflite-int8", ".int8.tflite", (IMAGE, "sequence-classification"), True,
               "edgekit.trainer.export_tflite:quantize_tflite", "tflite", "NHWC",
               "TFLite full int8 (ai-edge-quantizer static), int8 I/O"),
    )
}


def formats_for(task: str) -> list[str]:
    """Every format that applies to `task`, in table order (the default of `edgekit export`)."""
    return [name for name, f in FORMATS.items() if task in f.tasks]


def help_text() -> str:
    """The `--format` help, from the table."""
    return "Comma-separated formats (default: all for the task): " + "; ".join(
        f"{name} = {f.help}" for name, f in FORMATS.items()
    ) + "."


def lookup(name: str) -> Format:
    """The format called `name`, or a UserError with the closest names."""
    if name in FORMATS:
        return FORMATS[name]
    close = difflib.get_close_matches(name, FORMATS, n=2, cutoff=0.5)
    hint = f" Did you mean {' or '.join(close)}?" if close else ""
    raise UserError(f"Unknown format {name!r}; known: {', '.join(FORMATS)}.{hint}")


def select(spec: str | list[str] | None, task: str) -> list[Format]:
    """The formats asked for (comma-separated or a list), checked against the task; default all."""
    names = spec.split(",") if isinstance(spec, str) else list(spec or [])
    names = [n.strip() for n in names if n.strip()]
    if not names:
        return [FORMATS[n] for n in formats_for(task)]
    chosen: list[Format] = []
    for name in names:
        fmt = lookup(name)
        if task not in fmt.tasks:
            raise UserError(f"Format {name} does not apply to {task} models; use one of: "
                            f"{', '.join(formats_for(task))}.")
        if fmt not in chosen:
            chosen.append(fmt)
    return sorted(chosen, key=list(FORMATS.values()).index)  # fp32 before the int8 made from it
