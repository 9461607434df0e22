"""Load an official (or official-layout) YOLACT ``.pth`` checkpoint into ``Yolact``.

The official files are plain state dicts. Two kinds of legacy keys the reference ignores are
dropped here too: old duplicate backbone names (``backbone.layer1...``, not ``backbone.layers``)
and the extra FPN downsample convs of v1.0 weights (``fpn.downsample_layers.N`` with ``N >= 2``).
The training-only ``semantic_seg_conv`` may be missing. Anything else that does not match the
config is an error that names the file and, where the weights tell, the config to use instead.
``config_for_checkpoint`` reads the config from the weights instead (see ``config_from_weights``).
"""

from __future__ import annotations

import io
import re
from collections.abc import Mapping
from pathlib import Path

import torch

from yolact_batch.core.configs import ModelConfig
from yolact_batch.core.overrides import ConfigOverrides
from yolact_batch.torchnet.checkpoint_layout import NotYolactError, read_layout
from yolact_batch.torchnet.config_from_weights import DEFAULT_CONFIG, ResolvedConfig, resolve_config
from yolact_batch.torchnet.network import Yolact, build_network

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


def config_for_checkpoint(
    path: str | Path,
    *,
    config_name: str | None = None,
    overrides: ConfigOverrides = ConfigOverrides(),
    class_names: tuple[str, ...] | None = None,
    category_ids: tuple[int, ...] | None = None,
    class_origin: str = "--class-names",
) -> ResolvedConfig:
    """``config_from_weights.resolve_config`` for the checkpoint file at ``path`` (named after the file when custom).

    Raises:
        FileNotFoundError, ValueError: as ``read_state_dict`` and ``resolve_config``;
            every message starts with the file name.
    """
    path = Path(path)
    state = drop_legacy_keys(read_state_dict(path))
    return _resolve_state(
        state, str(path), path.stem, config_name=config_name, overrides=overrides, class_names=class_names,
        category_ids=category_ids, class_origin=class_origin,
    )  # fmt: skip


def _resolve_state(state: Mapping[str, torch.Tensor], origin: str, name: str, **options) -> ResolvedConfig:
    layout = read_layout({k: tuple(v.shape) for k, v in state.items()}, origin)
    try:
        return resolve_config(layout, name=name, **options)
    except ValueError as exc:
        raise ValueError(f"{origin}: {exc}") from exc


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
    """A hint naming the network ``state`` holds and the official config for it, or None."""
    try:
        layout = read_layout({k: tuple(v.shape) for k, v in state.items()}, "checkpoint")
    except ValueError:
        return None
    name = DEFAULT_CONFIG[layout.backbone, layout.is_plus]
    also = " (or yolact_im400 / yolact_im700, trained for other input sizes)" if name == "yolact_base" else ""
    return (
        f"has a {'YOLACT++ ' if layout.is_plus else ''}{layout.describe_backbone()} backbone: export without "
        f"--config (the config is read from the weights) or use --config {name}{also}"
    )


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
    try:
        layout = read_layout({k: tuple(v.shape) for k, v in state.items()}, "checkpoint")
    except ValueError:
        return None
    if layout.num_classes == config.num_classes:
        return None
    return (
        f"The checkpoint predicts {layout.num_classes} classes ({layout.num_classes - 1} + background) but the "
        f"config has {config.num_classes}: export it with --class-names naming {layout.num_classes - 1} classes "
        "(or build the config with yolact_batch.core.configs.with_classes)."
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


def infer_config(state: Mapping[str, torch.Tensor], *, origin: str = "checkpoint") -> ModelConfig:
    """The config of a state dict: what its tensors' names and shapes determine, official defaults
    for the rest (``config_from_weights.resolve_config``; a custom config is named after ``origin``).

    Raises:
        ValueError: not YOLACT, or the defaults do not fit (e.g. a custom class count: the
            message says to name the classes); messages start with ``origin``.
    """
    try:
        return _resolve_state(drop_legacy_keys(state), origin, Path(origin).stem).config
    except NotYolactError:
        raise
    except ValueError as exc:  # what only export's options can say: point there
        raise ValueError(
            f"{exc}. Running a .pth directly uses the official defaults; for a custom checkpoint, run "
            "`yolact-batch export --checkpoint ... --class-names ... [--overrides ...]` (ONNX), or pass --sidecar"
        ) from None
