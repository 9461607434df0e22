"""Anchor boxes ("priors") in the reference's layout."""

from __future__ import annotations

import numpy as np

from yolact_batch.core.configs import PriorConfig


def make_priors(config: PriorConfig) -> np.ndarray:
    """Build the priors for one config.

    Order is level (finest first) -> row y -> column x -> aspect ratio, matching the head's
    ``NHWC`` reshape. Each prior is ``(cx, cy, w, h)`` relative to the input side, with
    ``w = scale * sqrt(ar) / input_size`` and, for square anchors, ``h = w`` (the reference's
    backward-compatible behaviour; otherwise ``h = scale / sqrt(ar) / input_size``).

    Returns:
        ``float32[P, 4]`` with ``P = config.num_priors``.
    """
    levels = []
    for size, scale in zip(config.conv_sizes, config.scales):
        # Centres in float64 then cast once, as the reference builds a Python list of floats.
        centers = (np.arange(size, dtype=np.float64) + 0.5) / size
        cy, cx = np.meshgrid(centers, centers, indexing="ij")
        level = np.empty((size, size, len(config.aspect_ratios), 4), dtype=np.float64)
        for a, ratio in enumerate(config.aspect_ratios):
            w = scale * np.sqrt(ratio) / config.input_size
            h = w if config.square else scale / np.sqrt(ratio) / config.input_size
            level[:, :, a] = np.stack(np.broadcast_arrays(cx, cy, w, h), axis=-1)
        levels.append(level.reshape(-1, 4))
    return np.concatenate(levels).astype(np.float32)
