"""TrainConfig's flat API on a frozen config (issue 30 item 5): ``replace`` and flat reads answer a method's option
the config cannot take, or read, with a message that names it and what to do, never a raw dataclass error."""
from __future__ import annotations

import pytest

from attentive_cutmix.training.config import ConfigError, make_config, validate


def test_replace_refuses_an_option_of_another_method_by_name():
    cutmix = make_config({"method": "cutmix"})
    # The options the config holds (CutMix's) have no num_patches: a raw TypeError from their dataclass before.
    with pytest.raises(ConfigError, match="--num-patches does not apply to --method cutmix"):
        cutmix.replace(num_patches=4)
    # Naming another method starts from that method's options: the held ones are CutMix's.
    switched = cutmix.replace(method="random-cells", num_patches=4)
    assert validate(switched).mixing.options.num_patches == 4 and validate(switched).mixing.options.grid_size == 7
    assert validate(cutmix.replace(method="mixup")).mixing.options.alpha == 1.0  # mixup's default, not carried
    with pytest.raises(ConfigError, match="--num-patches does not apply to --method mixup"):
        validate(cutmix.replace(method="mixup", num_patches=4))
    # An option the held options have is changed, and the result checks as always.
    assert validate(cutmix.replace(alpha=0.5)).mixing.options.alpha == 0.5


def test_a_flat_read_of_a_method_option_says_where_it_is():
    cfg = make_config({"method": "cutmix", "alpha": 0.5})
    # It said "TrainConfig has no option 'alpha'": alpha is an option, held by the mixing section.
    with pytest.raises(AttributeError, match=r"cfg\.mixing\.options\.alpha"):
        cfg.alpha  # noqa: B018
    with pytest.raises(AttributeError, match="has no option 'lrr'"):
        cfg.lrr  # noqa: B018
    assert not hasattr(cfg, "num_patches") and cfg.mixing.options.alpha == 0.5
