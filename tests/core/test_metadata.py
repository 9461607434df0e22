import pytest

from yolact_batch.core.configs import get_config, with_classes
from yolact_batch.core.metadata import ModelMetadata, load_sidecar
from yolact_batch.core.settings import DetectSettings


def test_round_trip_through_onnx_props():
    meta = ModelMetadata(get_config("yolact_im400"), "graph", DetectSettings(top_k=50), 0.3, True, "x.pth")
    assert ModelMetadata.from_onnx_props(meta.to_onnx_props(), origin="m.onnx") == meta


def test_custom_classes_round_trip():
    cfg = with_classes(get_config("yolact_resnet50"), ("disc", "star"), name="shapes")
    meta = ModelMetadata(cfg, "raw")
    back = ModelMetadata.from_onnx_props(meta.to_onnx_props(), origin="m.onnx")
    assert back.config.class_names == ("disc", "star") and back.config.category_ids == (1, 2)


def test_no_metadata_is_none():
    assert ModelMetadata.from_onnx_props({}, origin="m.onnx") is None


def test_sidecar_json_and_toml():
    assert load_sidecar('{"config": "yolact_base"}', origin="s.json").contract == "raw"
    meta = load_sidecar('config = "yolact_im700"\ncontract = "raw"\n[detect]\ntop_k = 100\n', origin="s.toml")
    assert meta.config.input_size == 700 and meta.detect.top_k == 100


@pytest.mark.parametrize(
    "text,match",
    [
        ('{"config": "yolact_nope"}', "unknown YOLACT config"),
        ('{"config": "yolact_base", "contract": "boxes"}', "contract must be"),
        ("{not json", "not valid JSON"),
        ('{"config": "yolact_base", "format_version": 99}', "newer than"),
    ],
)
def test_sidecar_errors_name_the_file(text, match):
    with pytest.raises(ValueError, match=match) as info:
        load_sidecar(text, origin="side.json")
    assert "side.json" in str(info.value)


def test_plus_config_round_trips():
    meta = ModelMetadata(get_config("yolact_plus_base"), "graph")
    back = ModelMetadata.from_onnx_props(meta.to_onnx_props(), origin="m.onnx")
    assert back == meta and back.config.dcn_layers == (0, 4, 23, 3) and back.config.dcn_interval == 3
    assert back.config.mask_rescoring and back.config.priors.scales == meta.config.priors.scales


def test_bundled_model_metadata_of_the_older_format_still_reads():
    """The demo model stores flat per-level scales and no YOLACT++ fields."""
    from pathlib import Path

    onnx = pytest.importorskip("onnx")
    path = Path(__file__).resolve().parents[2] / "yolact_batch" / "models" / "yolact_shapes.onnx"
    props = {p.key: p.value for p in onnx.load(str(path), load_external_data=False).metadata_props}
    assert '"scales": [11, 22, 44, 89, 178]' in props["yolact_batch"]
    meta = ModelMetadata.from_onnx_props(props, origin=str(path))
    assert meta.config.priors.scales == ((11.0,), (22.0,), (44.0,), (89.0,), (178.0,))
    assert meta.config.dcn_layers == (0, 0, 0, 0) and not meta.config.mask_rescoring
