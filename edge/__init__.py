"""Device side: what runs on the Pi. Imports with only the `edge` extra (no torch, tensorflow or fabric)."""
