"""Model metadata: what an ONNX file must carry (or a sidecar must state) to be run.

Our exporter writes it into ONNX ``metadata_props``: a ``yolact_batch`` key holding the
JSON form below, plus a few flat keys (``yolact_batch.config``, ``yolact_batch.contract``)
for people looking at the model in Netron. A third-party raw-head ONNX without it runs
with a sidecar JSON or TOML file of the same form (see ``load_sidecar``).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from typing import Any, Literal

from yolact_batch.core.configs import ModelConfig, PriorConfig, get_config
from yolact_batch.core.settings import DetectSettings, InferenceRequest, InferenceSettings

FORMAT_VERSION = 1
METADATA_KEY = "yolact_batch"
Contract = Literal["raw", "graph"]


@dataclass(frozen=True)
class ModelMetadata:
    """How to run one exported model.

    Attributes:
        config: model configuration (input size, normalisation, priors, classes).
        contract: ``"raw"`` (heads out, NMS on the host) or ``"graph"`` (NMS in the model).
        detect: for ``graph``, the NMS settings baked into the model; for ``raw``, the
            defaults the host uses unless told otherwise.
        score_threshold: for ``graph``, the score threshold baked into the model (valid
            detections score strictly above it); 0 for ``raw``.
        crop_masks: for ``graph``, whether the model crops masks to their boxes.
        source: free text naming the checkpoint the model came from.
    """

    config: ModelConfig
    contract: Contract = "graph"
    detect: DetectSettings = DetectSettings()
    score_threshold: float = 0.0
    crop_masks: bool = True
    source: str = ""

    @property
    def graph(self) -> bool:
        return self.contract == "graph"

    def resolve(self, request: InferenceRequest) -> InferenceSettings:
        """The settings to run this model with for ``request`` (see ``InferenceRequest.resolve``)."""
        return request.resolve(
            self.detect,
            class_names=self.config.class_names,
            category_ids=self.config.category_ids,
            graph=self.graph,
            baked_score_threshold=self.score_threshold,
            crop_masks=self.crop_masks,
        )

    def __post_init__(self) -> None:
        if self.contract not in ("raw", "graph"):
            raise ValueError(f"contract must be 'raw' or 'graph', got {self.contract!r}")

    def to_dict(self) -> dict[str, Any]:
        return {"format_version": FORMAT_VERSION, **asdict(self)}

    def to_onnx_props(self) -> dict[str, str]:
        """The ``metadata_props`` entries for an ONNX model."""
        return {
            METADATA_KEY: json.dumps(self.to_dict(), sort_keys=True),
            f"{METADATA_KEY}.config": self.config.name,
            f"{METADATA_KEY}.contract": self.contract,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any], *, origin: str = "metadata") -> "ModelMetadata":
        """Parse the JSON form. A sidecar may name an official config instead of spelling it out."""
        data = dict(data)
        version = data.pop("format_version", FORMAT_VERSION)
        if version > FORMAT_VERSION:
            raise ValueError(
                f"{origin}: metadata format_version {version} is newer than this yolact_batch "
                f"understands ({FORMAT_VERSION}); upgrade yolact_batch"
            )
        try:
            config = _config_from(data.pop("config"))
            detect = DetectSettings(**_renamed(data.pop("detect", {})))
            return cls(config=config, detect=detect, **data)
        except (KeyError, TypeError, ValueError) as exc:
            raise ValueError(f"{origin}: invalid yolact_batch metadata: {exc}") from exc

    @classmethod
    def from_onnx_props(cls, props: dict[str, str], *, origin: str) -> "ModelMetadata | None":
        """Read our metadata from ONNX ``metadata_props``; None when the model has none."""
        if METADATA_KEY not in props:
            return None
        try:
            data = json.loads(props[METADATA_KEY])
        except json.JSONDecodeError as exc:
            raise ValueError(f"{origin}: metadata key {METADATA_KEY!r} is not valid JSON: {exc}") from exc
        return cls.from_dict(data, origin=origin)


# Detect setting names of format_version 1 files written before the names were unified.
_LEGACY_DETECT_NAMES = {"cross_class": "cross_class_nms", "method": "nms"}


def _renamed(detect: dict[str, Any]) -> dict[str, Any]:
    return {_LEGACY_DETECT_NAMES.get(k, k): v for k, v in detect.items()}


def _config_from(value: Any) -> ModelConfig:
    if isinstance(value, str):
        return get_config(value)
    value = dict(value)
    base = get_config(value["name"]) if set(value) == {"name"} else None
    if base is not None:
        return base
    priors = dict(value.pop("priors"))
    for key in ("conv_sizes", "scales", "aspect_ratios"):
        priors[key] = tuple(priors[key])
    for key in ("class_names", "category_ids", "mean_bgr", "std_bgr"):
        if key in value:
            value[key] = tuple(value[key])
    return ModelConfig(priors=PriorConfig(**priors), **value)


def load_sidecar(text: str, *, origin: str) -> ModelMetadata:
    """Parse a sidecar file's text (JSON, or TOML when it does not start with ``{``).

    The smallest useful sidecar for an official raw-head export is
    ``{"config": "yolact_base", "contract": "raw"}``.
    """
    data = parse_json_or_toml(text, origin=f"{origin} (sidecar)")
    data.setdefault("contract", "raw")
    return ModelMetadata.from_dict(data, origin=origin)


def parse_json_or_toml(text: str, *, origin: str, toml: bool | None = None) -> Any:
    """The data of a small settings file: JSON, or TOML (``toml=None``: TOML unless the text
    starts with ``{``). Errors name ``origin``."""
    if toml is None:
        toml = not text.lstrip().startswith("{")
    if toml:
        try:
            import tomllib
        except ModuleNotFoundError:  # Python 3.10: the same parser as the tomli package
            import tomli as tomllib

        try:
            return tomllib.loads(text)
        except tomllib.TOMLDecodeError as exc:
            raise ValueError(f"{origin} is neither JSON nor valid TOML: {exc}") from exc
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise ValueError(f"{origin} is not valid JSON: {exc}") from exc
