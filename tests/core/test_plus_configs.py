"""YOLACT++ configs: which blocks are deformable, per-level anchor scales, priors equal to the reference's."""

from __future__ import annotations

import numpy as np
import pytest

from tests.conftest import GOLDEN, PLUS, require
from yolact_batch.core.configs import ModelConfig, PriorConfig, get_config
from yolact_batch.core.priors import make_priors


def _deformable(config: ModelConfig, blocks: tuple[int, ...]) -> dict[int, list[int]]:
    return {s: [b for b in range(n) if config.uses_dcn(s, b, n)] for s, n in enumerate(blocks)}


def test_plus_resnet50_has_dcn_in_every_block_of_stages_2_to_4():
    assert _deformable(get_config("yolact_plus_resnet50"), (3, 4, 6, 3)) == {
        0: [],
        1: [0, 1, 2, 3],
        2: [0, 1, 2, 3, 4, 5],
        3: [0, 1, 2],
    }


def test_plus_base_has_dcn_every_third_block():
    """The reference's resnet101_dcn_inter3_backbone: dcn_layers (0, 4, 23, 3), dcn_interval 3."""
    assert _deformable(get_config("yolact_plus_base"), (3, 4, 23, 3)) == {
        0: [],
        1: [0, 3],
        2: list(range(0, 23, 3)),
        3: [0],
    }


@pytest.mark.parametrize(("dcn_layers", "interval", "expected"), [
    ((0, 2, 0, 0), 1, [2, 3]),      # the last two of four
    ((0, 3, 0, 0), 2, [2]),         # blocks 1..3 qualify, only even indices
    ((0, 4, 0, 0), 2, [0, 2]),      # block 0 whenever dcn_layers >= blocks, whatever the interval
    ((0, 9, 0, 0), 5, [0]),
    ((0, 0, 0, 0), 1, []),
])  # fmt: skip
def test_dcn_block_rule_table(dcn_layers, interval, expected):
    config = ModelConfig(name="t", backbone="resnet50", priors=get_config("yolact_resnet50").priors,
                         dcn_layers=dcn_layers, dcn_interval=interval)  # fmt: skip
    assert _deformable(config, (3, 4, 6, 3))[1] == expected


@pytest.mark.parametrize("kwargs", [dict(dcn_layers=(0, 1, 2)), dict(dcn_layers=(0, -1, 0, 0)), dict(dcn_interval=0)])
def test_bad_dcn_settings_are_refused(kwargs):
    with pytest.raises(ValueError, match="dcn"):
        ModelConfig(name="t", backbone="resnet50", priors=get_config("yolact_resnet50").priors, **kwargs)


def test_dcn_needs_a_resnet():
    with pytest.raises(ValueError, match="ResNet"):
        ModelConfig(
            name="t", backbone="darknet53", priors=get_config("yolact_resnet50").priors, dcn_layers=(0, 1, 1, 1)
        )


def test_plus_configs():
    for name in ("yolact_plus_resnet50", "yolact_plus_base"):
        config = get_config(name)
        assert config.mask_rescoring and config.is_plus and not config.priors.square
        assert config.priors.anchors_per_location == 9 and config.priors.num_priors == 57744
        assert config.priors.scales[0] == pytest.approx((24.0, 30.238105197476955, 38.097625247236785), abs=0)
    assert not get_config("yolact_resnet50").is_plus


def test_flat_scales_are_one_scale_per_level():
    """Older metadata (the bundled demo model, earlier ONNX files) stores one int per level."""
    old = PriorConfig(input_size=64, conv_sizes=(8, 4), scales=(16, 32))
    new = PriorConfig(input_size=64, conv_sizes=(8, 4), scales=((16.0,), (32.0,)))
    assert old == new and old.scales == ((16.0,), (32.0,)) and old.anchors_per_location == 3
    np.testing.assert_array_equal(make_priors(old), make_priors(new))


@pytest.mark.parametrize("scales", [((16.0, 20.0), (32.0,)), ((16.0,),), ((), ())])
def test_bad_scales_are_refused(scales):
    with pytest.raises(ValueError, match="scales"):
        PriorConfig(input_size=64, conv_sizes=(8, 4), scales=scales)


def test_prior_order_is_level_y_x_scale_ratio():
    config = PriorConfig(
        input_size=100, conv_sizes=(2,), scales=((10.0, 20.0),), aspect_ratios=(1.0, 4.0), square=False
    )
    priors = make_priors(config)
    assert priors.shape == (2 * 2 * 4, 4)
    first_cell = priors[:4]  # y = 0, x = 0: (s10, r1), (s10, r4), (s20, r1), (s20, r4)
    np.testing.assert_allclose(first_cell[:, 2], [0.1, 0.2, 0.2, 0.4], rtol=1e-6)
    np.testing.assert_allclose(first_cell[:, 3], [0.1, 0.05, 0.2, 0.1], rtol=1e-6)
    np.testing.assert_allclose(priors[4, :2], [0.75, 0.25])  # then x = 1 on row y = 0


def test_plus_priors_equal_the_reference_bit_for_bit():
    golden = np.load(require(GOLDEN / PLUS / "184324.npz"))["priors"]
    np.testing.assert_array_equal(make_priors(get_config(PLUS).priors), golden)
