import numpy as np
import pytest

from tests.conftest import golden_case
from yolact_batch.core.configs import OFFICIAL_CONFIGS, PriorConfig, feature_map_sizes, get_config
from yolact_batch.core.priors import make_priors


@pytest.mark.parametrize("name", sorted(OFFICIAL_CONFIGS))
def test_prior_count_and_range(name):
    cfg = get_config(name)
    priors = make_priors(cfg.priors)
    assert priors.shape == (cfg.priors.num_priors, 4) and priors.dtype == np.float32
    assert np.all((priors[:, :2] > 0) & (priors[:, :2] < 1))
    if cfg.priors.square:
        np.testing.assert_array_equal(priors[:, 2], priors[:, 3])  # the reference's square anchors
    else:  # YOLACT++: h = scale / sqrt(ar), so w / h is the aspect ratio
        ratios = np.tile(np.array(cfg.priors.aspect_ratios), cfg.priors.num_priors // len(cfg.priors.aspect_ratios))
        np.testing.assert_allclose(priors[:, 2] / priors[:, 3], ratios, rtol=1e-5)


def test_feature_map_sizes():
    assert feature_map_sizes(550) == (69, 35, 18, 9, 5)
    assert feature_map_sizes(400) == (50, 25, 13, 7, 4)
    assert feature_map_sizes(700) == (88, 44, 22, 11, 6)


def test_prior_order_level_row_col_ratio():
    priors = make_priors(PriorConfig(input_size=100, conv_sizes=(2,), scales=(10,)))
    # first three priors share the (0, 0) cell, ratios 1, 1/2, 2 -> widths scale * sqrt(ar) / size
    np.testing.assert_allclose(priors[:3, :2], 0.25)
    np.testing.assert_allclose(priors[:3, 2], [0.1, 0.1 * np.sqrt(0.5), 0.1 * np.sqrt(2)], rtol=1e-6)
    np.testing.assert_allclose(priors[3, :2], [0.75, 0.25])  # then x moves before y


def test_unknown_config_lists_names():
    with pytest.raises(ValueError, match="yolact_base"):
        get_config("yolact_plus_base_typo")


def test_priors_equal_golden():
    arrays, _ = golden_case("yolact_resnet50", 184324)
    np.testing.assert_array_equal(make_priors(get_config("yolact_resnet50").priors), arrays["priors"])
