"""Cloud side: datasets, training, export. Heavy libraries (torch, onnx) are imported where used."""
