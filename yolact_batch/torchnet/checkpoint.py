"""Load an official (or official-layout) YOLACT ``.pth`` checkpoint into ``Yolact``.

The official files are plain state dicts. Two kinds of legacy keys the reference ignores are
dropped here too: old duplicate backbone names (``backbone.layer1...``, not ``backbone.layers``)
and the extra FPN downsample convs of v1.0 weights (``fpn.downsample_layers.N`` with ``N >= 2``).
The training-only ``semantic_seg_conv`` may be missing. Anything else that does not match the
config is an error that names the file and, where the weights tell, the config to use instead.
"""

from __future__ import annotations

import io
import re
from collections.abc import Mapping
from pathlib import Path

import torch

from yolact_batch.core.configs import ModelConfig
from yolact_batch.torchnet.network import RESNET_BLOCKS, Yolact, build_network

OPTIONAL_PREFIXES = ("semantic_seg_conv.",)
_FPN_DOWNSAMPLE = re.compile(r"^fpn\.downsample_layers\.(\d+)\.")
_SHOWN = 5


def load_checkpoint(path: str | Path, config: ModelConfig) -> Yolact:
    """Build ``Yolact`` for ``config`` and load the weights at ``path`` into it (eval mode).

    Raises:
        FileNotFoundError: ``path`` does not exist.
        ValueError: the file is not a readable torch state dict, or its keys / shapes do not
            match ``config`` (the message lists some offending keys and suggests a config).
    """
    return load_state(read_state_dict(Path(path)), config, origin=str(path))


def load_state(state: Mapping[str, torch.Tensor], config: ModelConfig, *, origin: str) -> Yolact:
    """``Yolact`` for ``config`` with ``state`` loaded strictly (legacy keys dropped, eval mode).

    ``origin`` names the weights in error messages (a path or URL).
    """
    model = build_network(config)
    expected = model.state_dict()
    state = drop_legacy_keys(state)
    for key, value in expected.items():
        if key not in state and key.startswith(OPTIONAL_PREFIXES):
            state[key] = value
    _check_layout(origin, state, expected, config)
    model.load_state_dict(state, strict=True)
    return model


def read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    """The tensors stored in ``path`` (a plain state dict, or one under ``state_dict``/``model``)."""
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint {path} does not exist")
    return state_dict_of(torch_load_bytes(path.read_bytes(), origin=str(path)), origin=str(path))


def torch_load_bytes(data: bytes, *, origin: str) -> object:
    """``torch.load`` of a file's bytes on the CPU, tensors only (``weights_only``)."""
    try:
        return torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises RuntimeError, UnpicklingError, EOFError... for bad files
        raise ValueError(f"{origin}: {_load_failure(data[:4], exc)}") from exc


def state_dict_of(obj: object, *, origin: str) -> dict[str, torch.Tensor]:
    """The state dict in a loaded checkpoint: ``obj`` itself, or the one under ``state_dict``/``model``."""
    if isinstance(obj, Mapping):
        for wrapper in ("state_dict", "model"):
            if isinstance(obj.get(wrapper), Mapping):
                obj = obj[wrapper]
                break
    if not isinstance(obj, Mapping) or not obj:
        raise ValueError(f"{origin}: expected a state dict (a mapping of names to tensors), got {type(obj).__name__}")
    not_tensors = [k for k, v in obj.items() if not isinstance(v, torch.Tensor)]
    if not_tensors:
        raise ValueError(f"{origin}: not a state dict: entries {not_tensors[:_SHOWN]} are not tensors")
    return dict(obj)


def drop_legacy_keys(state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """``state`` without the legacy keys the reference ignores (see the module docstring)."""
    kept = {}
    for key, value in state.items():
        if key.startswith("backbone.layer") and not key.startswith("backbone.layers."):
            continue
        match = _FPN_DOWNSAMPLE.match(key)
        if match and int(match.group(1)) >= 2:
            continue
        kept[key] = value
    return kept


def suggest_config(state: Mapping[str, torch.Tensor]) -> str | None:
    """A hint naming the official config(s) whose layout matches ``state``, or None."""
    if any(k.startswith("backbone._preconv.") for k in state):
        return "has a DarkNet-53 backbone: use --config yolact_darknet53"
    blocks = _stage_blocks(state)
    if len(blocks) == 4:
        if tuple(blocks) == RESNET_BLOCKS["resnet101"]:
            return (
                f"has a ResNet-101 backbone with a {blocks[2]}-block layer3: use --config yolact_base "
                "(or yolact_im400 / yolact_im700, trained for other input sizes)"
            )
        if tuple(blocks) == RESNET_BLOCKS["resnet50"]:
            return f"has a ResNet-50 backbone with a {blocks[2]}-block layer3: use --config yolact_resnet50"
    return None


def _stage_blocks(state: Mapping[str, torch.Tensor]) -> list[int]:
    """Number of residual blocks in each backbone stage, from ``backbone.layers.<stage>.<block>``."""
    counts: dict[int, int] = {}
    for key in state:
        parts = key.split(".")
        if len(parts) > 3 and parts[:2] == ["backbone", "layers"] and parts[2].isdigit() and parts[3].isdigit():
            counts[int(parts[2])] = max(counts.get(int(parts[2]), 0), int(parts[3]) + 1)
    return [counts[s] for s in sorted(counts)]


def _check_layout(
    origin: str, state: Mapping[str, torch.Tensor], expected: Mapping[str, torch.Tensor], config: ModelConfig
) -> None:
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    if not any(k.startswith(("fpn.", "prediction_layers.")) for k in state):
        raise ValueError(
            f"{origin}: not a YOLACT checkpoint (no 'fpn.*' or 'prediction_layers.*' weights; "
            f"first keys: {list(state)[:_SHOWN]})"
        )
    if missing or unexpected:
        hint = suggest_config(state)
        raise ValueError(
            f"{origin}: weights do not match config {config.name!r} ({config.backbone}): "
            f"{len(missing)} missing keys {missing[:_SHOWN]}, {len(unexpected)} unexpected keys "
            f"{unexpected[:_SHOWN]}." + (f" The checkpoint {hint}." if hint else "")
        )
    wrong = [(k, tuple(state[k].shape), tuple(v.shape)) for k, v in expected.items() if state[k].shape != v.shape]
    if wrong:
        hint = _class_hint(state, config)
        shown = ", ".join(f"{k} {got} (config expects {want})" for k, got, want in wrong[:_SHOWN])
        raise ValueError(
            f"{origin}: {len(wrong)} tensors have the wrong shape for config {config.name!r}: {shown}."
            + (f" {hint}" if hint else "")
        )


def _class_hint(state: Mapping[str, torch.Tensor], config: ModelConfig) -> str | None:
    conf = state.get("prediction_layers.0.conf_layer.weight")
    anchors = config.priors.anchors_per_location
    if conf is None or conf.shape[0] % anchors:
        return None
    num_classes = conf.shape[0] // anchors
    if num_classes == config.num_classes:
        return None
    return (
        f"The checkpoint predicts {num_classes} classes ({num_classes - 1} + background) but the config has "
        f"{config.num_classes}: build the config with {num_classes - 1} class names "
        "(yolact_batch.core.configs.with_classes)."
    )


def _load_failure(header: bytes, exc: Exception) -> str:
    """Why ``torch.load`` failed on a file starting with ``header``, in words, with what to do about it."""
    reason = f"{type(exc).__name__}: {_first_line(exc)}"
    if "Weights only load failed" in str(exc) and (header.startswith(b"PK") or header[:1] == b"\x80"):
        return (
            "the checkpoint holds Python objects besides tensors, which are not unpickled for safety; "
            "re-save it as a plain state dict: torch.save(model.state_dict(), path)"
        )
    if header.startswith(b"PK") or header[:1] == b"\x80":
        return (
            f"cannot read it as a PyTorch checkpoint ({reason}); the file looks truncated or damaged: "
            "download it again and check its size"
        )
    return f"cannot read it as a PyTorch checkpoint: it is neither a zip archive nor a pickle (starts with {header!r})"


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else "no message"


def infer_config(state: Mapping[str, torch.Tensor]) -> ModelConfig:
    """The config a checkpoint was trained with, read from its tensors' names and shapes.

    Placeholder until config inference lands: always raises, naming the likely config.
    """
    hint = suggest_config(state)
    raise ValueError(
        "the config cannot be inferred from the weights yet: pass --config NAME (e.g. yolact_base, "
        "yolact_resnet50)" + (f"; this checkpoint {hint}" if hint else "")
    )
