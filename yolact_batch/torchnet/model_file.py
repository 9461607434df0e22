"""The weights the torch backend runs: a dbolya/yolact ``.pth`` state dict, or our model file.

Our model file (``.pt``) is one ``torch.save`` of a plain dict::

    {"format": "yolact_batch.torch", "metadata": "<ModelMetadata JSON>", "state_dict": {name: tensor}}

It holds only strings and tensors, so it loads with ``weights_only=True`` like the official
files, and it carries its config (any config, also one with other classes or a small
backbone), so it runs without ``--config``. An official ``.pth`` carries no config: pass one,
or leave it to ``infer_config`` (the weights' network, official defaults for the rest).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import torch

from yolact_batch.core.configs import ModelConfig
from yolact_batch.core.metadata import ModelMetadata
from yolact_batch.torchnet.checkpoint import infer_config, load_state, state_dict_of, torch_load_bytes
from yolact_batch.torchnet.network import Yolact

FORMAT = "yolact_batch.torch"


@dataclass(frozen=True)
class Weights:
    """A checkpoint read into memory.

    Attributes:
        state_dict: the tensors, by official parameter name.
        metadata: what our model file says about the model; None for an official ``.pth``.
        origin: where the bytes came from (a path or URL), for error messages.
    """

    state_dict: dict[str, torch.Tensor]
    metadata: ModelMetadata | None
    origin: str


def read_weights(data: bytes, *, origin: str) -> Weights:
    """Parse a checkpoint's bytes: our model file when it says so, else an official state dict.

    Raises:
        ValueError: not a torch file, not tensors, or our file with unreadable metadata.
    """
    obj = torch_load_bytes(data, origin=origin)
    if isinstance(obj, dict) and obj.get("format") == FORMAT:
        text = obj.get("metadata")
        if not isinstance(text, str):
            raise ValueError(f"{origin}: a {FORMAT} file without its 'metadata' string; write it again with save_model")
        try:
            metadata = ModelMetadata.from_dict(json.loads(text), origin=origin)
        except json.JSONDecodeError as exc:
            raise ValueError(f"{origin}: the model file's metadata is not valid JSON: {exc}") from exc
        return Weights(state_dict_of(obj.get("state_dict"), origin=origin), metadata, origin)
    return Weights(state_dict_of(obj, origin=origin), None, origin)


def resolve_config(weights: Weights, config: ModelConfig | None) -> ModelConfig:
    """The config to build: our file's own, else ``config``, else ``infer_config`` of the tensors.

    Raises:
        ValueError: ``config`` contradicts our file's config, or none can be found.
    """
    if weights.metadata is not None:
        own = weights.metadata.config
        if config is not None and config != own:
            raise ValueError(
                f"{weights.origin}: the model file is config {own.name!r}, not {config.name!r}; drop --config "
                "(a yolact_batch model file carries its own)"
            )
        return own
    if config is not None:
        return config
    return infer_config(weights.state_dict, origin=weights.origin)


def load_network(weights: Weights, config: ModelConfig) -> Yolact:
    """``Yolact`` for ``config`` with ``weights`` loaded strictly, in eval mode, on the CPU."""
    return load_state(weights.state_dict, config, origin=weights.origin)


def save_model(path: str | Path, network: Yolact, metadata: ModelMetadata) -> Path:
    """Write ``network``'s weights and ``metadata`` as our model file (see the module docstring)."""
    if metadata.config != network.config:
        raise ValueError(f"metadata config {metadata.config.name!r} is not the network's {network.config.name!r}")
    path = Path(path)
    state = {k: v.detach().cpu() for k, v in network.state_dict().items()}
    text = json.dumps(metadata.to_dict(), sort_keys=True)
    torch.save({"format": FORMAT, "metadata": text, "state_dict": state}, path)
    return path
