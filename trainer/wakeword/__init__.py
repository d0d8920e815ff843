"""Custom wake words: synthetic speech → openWakeWord features → a small head → a bundle."""
