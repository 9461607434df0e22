"""Anchor boxes ("priors") in the reference's layout."""

from __future__ import annotations

import numpy as np

from yolact_batch.core.configs import PriorConfig


def make_priors(config: PriorConfig) -> np.ndarray:
    """Build the priors for one config.

    Order is level (finest first) -> row y -> column x -> scale -> aspect ratio, matching the
    head's ``NHWC`` reshape (anchor ``a = scale_index * len(aspect_ratios) + ratio_index``). Each prior is ``(cx, cy, w, h)`` relative to the input side, with
    ``w = scale * sqrt(ar) / input_size`` and, for square anchors, ``h = w`` (the reference's
    backward-compatible behaviour; otherwise ``h = scale / sqrt(ar) / input_size``).

    Returns:
        ``float32[P, 4]`` with ``P = config.num_priors``.
    """
    levels = []
    for size, level_scales in zip(config.conv_sizes, config.scales):
        # Centres in float64 then cast once, as the reference builds a Python list of floats.
        centers = (np.arange(size, dtype=np.float64) + 0.5) / size
        cy, cx = np.meshgrid(centers, centers, indexing="ij")
        level = np.empty((size, size, config.anchors_per_location, 4), dtype=np.float64)
        anchors = [(s, r) for s in level_scales for r in config.aspect_ratios]
        for a, (scale, ratio) in enumerate(anchors):
            w = scale * np.sqrt(ratio) / config.input_size
            h = w if config.square else scale / np.sqrt(ratio) / config.input_size
            level[:, :, a] = np.stack(np.broadcast_arrays(cx, cy, w, h), axis=-1)
        levels.append(level.reshape(-1, 4))
    return np.concatenate(levels).astype(np.float32)
