"""One inference runner for the device and for the export gate (no torch import).

CONTRACT (implemented by the exporter work; the device runtime and calibration call it):

    from edgekit.edge.predictor import Predictor

    p = Predictor.from_bundle(bundle, fmt="onnx-int8", threads=1)   # or Predictor(path, manifest, threads)
    p.labels                     # list[str]
    p.version                    # "name/vN"
    scores = p.predict(x)        # x: float32 batch in the bundle's PyTorch layout (manifest.input.layout),
                                 #    already preprocessed; returns float32 [N, n_out] (probabilities
                                 #    for classifiers: softmax applied if the model outputs logits)
    scores = p.predict_image(pil_or_uint8_hwc)  # decode/resize/scale per manifest.input.preprocess
    p.latency_ms                 # last call's inference time

Handles .onnx (onnxruntime) and .tflite (ai-edge-litert), fp32 or int8 I/O (quantizes inputs and
dequantizes outputs with the file's own parameters), NCHW↔NHWC as recorded per file.
"""
