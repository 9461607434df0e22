"""Inference backends. Each module imports its runtime lazily, inside the class that needs it."""
