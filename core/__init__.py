"""edgekit: take a model from a cloud GPU to a Raspberry Pi in the field and keep it working there."""

__version__ = "0.1.0"
