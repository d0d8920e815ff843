"""Store a quantized .tflite's repeated quantization vectors once, without changing what it computes.

A per-channel int8 tensor carries one float32 scale and one int64 zero point per output channel, and a
conv's int32 bias carries the same again. The zero points of symmetric int8 weights are all 0, so a
MobileNetV2 at 224 px holds 171 zero-point vectors (34,189 values, 274 KB, ~10% of the file) with only 15
distinct lengths. The TFLite schema stores these as FlatBuffers vectors, and FlatBuffers lets any number of
tables point at one vector, so each distinct vector is written once here (34 KB for that model).

ai-edge-quantizer packs with the generated object API, which writes every vector anew. This module packs
the same object tree through a builder that remembers the vectors it wrote. Tensor data keeps the layout
the file had: after the FlatBuffer at 16-byte aligned offsets (`Buffer.offset`/`size`, what
ai-edge-quantizer writes for models over 256 KB) or inside it. Nothing else changes: same tensors, same
bytes of weights, same operators.
"""

from __future__ import annotations

from typing import Any

import numpy as np

_TFLITE_IDENTIFIER = b"TFL3"
_ALIGN = 16


def _round_up(n: int) -> int:
    return (n + _ALIGN - 1) // _ALIGN * _ALIGN


class _VectorCache:
    """Vectors already written into one builder, by dtype and content."""

    def __init__(self, builder: Any) -> None:
        self.builder = builder
        self.offsets: dict[tuple[str, bytes], int] = {}

    def vector(self, values: Any, dtype: type) -> int:
        arr = np.ascontiguousarray(values, dtype=np.dtype(dtype).newbyteorder("<"))
        key = (arr.dtype.str, arr.tobytes())
        if key not in self.offsets:
            self.offsets[key] = self.builder.CreateNumpyVector(arr)
        return self.offsets[key]


def _shared_quantization(fb: Any, cache: _VectorCache) -> type:
    """A QuantizationParametersT whose vectors come from `cache` (schema: min, max, scale float32;
    zero_point int64)."""

    class Shared(fb.QuantizationParametersT):
        def Pack(self, builder: Any) -> int:  # noqa: N802 (the FlatBuffers object API's name)
            vectors = {name: cache.vector(getattr(self, name), dtype)
                       for name, dtype in (("min", np.float32), ("max", np.float32), ("scale", np.float32),
                                           ("zeroPoint", np.int64))
                       if getattr(self, name) is not None}
            details = self.details.Pack(builder) if self.details is not None else None
            fb.QuantizationParametersStart(builder)
            for name, add in (("min", fb.QuantizationParametersAddMin), ("max", fb.QuantizationParametersAddMax),
                              ("scale", fb.QuantizationParametersAddScale),
                              ("zeroPoint", fb.QuantizationParametersAddZeroPoint)):
                if name in vectors:
                    add(builder, vectors[name])
            fb.QuantizationParametersAddDetailsType(builder, self.detailsType)
            if details is not None:
                fb.QuantizationParametersAddDetails(builder, details)
            fb.QuantizationParametersAddQuantizedDimension(builder, self.quantizedDimension)
            return fb.QuantizationParametersEnd(builder)

    return Shared


def compact(model: bytes) -> bytearray:
    """The same TFLite model with each distinct quantization vector stored once.

    Raises:
        ValueError: `model` is not a TFLite file.
    """
    import flatbuffers
    from ai_edge_litert import schema_py_generated as fb
    from ai_edge_litert.tools import flatbuffer_utils

    if bytes(model[4:8]) != _TFLITE_IDENTIFIER:
        raise ValueError("not a TFLite model (no TFL3 identifier)")
    packed_in = fb.Model.GetRootAs(model, 0)
    external = any(packed_in.Buffers(i).Offset() > 1 for i in range(packed_in.BuffersLength()))
    obj = flatbuffer_utils.read_model_from_bytearray(bytearray(model))  # external buffers read into .data
    builder = flatbuffers.Builder(1024)
    shared = _shared_quantization(fb, _VectorCache(builder))
    for graph in obj.subgraphs:
        for tensor in graph.tensors:
            if tensor.quantization is not None:
                q = shared()
                q.__dict__.update(tensor.quantization.__dict__)
                tensor.quantization = q
    data: dict[int, bytes] = {}
    for i, buf in enumerate(obj.buffers):
        if external and buf.data is not None and len(buf.data):
            data[i] = bytes(buf.data)
            buf.data, buf.offset, buf.size = None, 1, 1  # non-default, so Pack writes the fields we patch below
    builder.Finish(obj.Pack(builder), file_identifier=_TFLITE_IDENTIFIER)
    head = builder.Output()
    if not data:
        return bytearray(head)
    offsets, end = {}, _round_up(len(head))
    for i, blob in data.items():
        offsets[i], end = end, _round_up(end + len(blob))
    out = bytearray(end)
    out[:len(head)] = head
    packed = fb.Model.GetRootAs(out, 0)
    for i, blob in data.items():
        out[offsets[i]:offsets[i] + len(blob)] = blob
        flatbuffer_utils.update_packed_buffer(packed.Buffers(i), offset=offsets[i], size=len(blob))
    return out
