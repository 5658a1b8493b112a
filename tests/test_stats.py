"""Paired differences over seeds with a Student-t interval, and the report's paired table."""
from __future__ import annotations

import math

import pytest

from attentive_cutmix.experiments.report import paired_markdown
from attentive_cutmix.experiments.stats import paired_difference, t_quantile


@pytest.mark.parametrize("df,expected", [(1, 12.7062), (2, 4.3027), (4, 2.7764), (10, 2.2281), (30, 2.0423)])
def test_t_quantile_matches_the_published_table(df, expected):
    assert t_quantile(0.975, df) == pytest.approx(expected, abs=2e-4)


def test_paired_difference_uses_only_common_seeds_and_the_t_interval():
    a, b = {0: 80.0, 1: 82.0, 2: 81.0, 7: 99.0}, {0: 79.0, 1: 80.0, 2: 81.5}
    diff = paired_difference(a, b)
    diffs = [1.0, 2.0, -0.5]
    half = 4.3027 * math.sqrt(sum((d - 0.8333333) ** 2 for d in diffs) / 2) / math.sqrt(3)
    assert diff.n == 3 and diff.mean == pytest.approx(0.833333, abs=1e-5)
    assert diff.low == pytest.approx(0.833333 - half, abs=1e-3)
    assert diff.high == pytest.approx(0.833333 + half, abs=1e-3)
    assert paired_difference({0: 1.0}, {1: 1.0}) is None
    single = paired_difference({0: 3.0}, {0: 1.0})
    assert (single.mean, single.low, single.n) == (2.0, None, 1)


def test_paired_difference_gives_the_std_of_the_differences_and_a_verdict():
    d = paired_difference({0: 60.0, 1: 62.0, 2: 64.0}, {0: 50.0, 1: 51.0, 2: 52.0})  # differences 10, 11, 12
    assert (d.mean, d.std, d.n, d.verdict) == (11.0, 1.0, 3, "better")
    assert paired_difference({0: 50.0, 1: 58.0, 2: 52.0}, {0: 52.0, 1: 50.0, 2: 53.0}).verdict == "tie"
    assert paired_difference({0: 40.0, 1: 41.0, 2: 43.0}, {0: 50.0, 1: 50.0, 2: 51.0}).verdict == "worse"
    assert paired_difference({0: 3.0}, {0: 1.0}).verdict == "tie"  # one pair: no interval, no verdict


def _run(method, seed, top1, train):
    curve = [{"epoch": e, "top1": top1 - (10 - e), "train_top1": train, "eval_loss": 1.0 + seed / 10 + (10 - e) / 100}
             for e in range(1, 11)]
    return {"status": "finished", "labels": {"dataset": "d", "model": "m", "method": method, "seed": seed},
            "top1": top1, "curve": curve}


def test_paired_table_splits_attentive_minus_cutmix_into_area_and_attention():
    runs = [_run("none", s, 70 + s, 95) for s in range(3)] + [_run("cutmix", s, 72 + s, 85) for s in range(3)]
    runs += [_run("random-cells", s, 73 + s, 88) for s in range(3)] + [_run("attentive-cutmix", s, 75 + s, 89)
                                                                       for s in range(3)]
    text = paired_markdown(runs)
    assert "| area part: random cells vs CutMix | +1.00 [+1.00, +1.00] (n=3) |" in text
    assert "| attention part: Attentive CutMix vs random cells | +2.00 [+2.00, +2.00] (n=3) |" in text
    assert "| Attentive CutMix vs CutMix | +3.00 [+3.00, +3.00] (n=3) |" in text
    # gap = train - held-out per seed (25, 24, 23); final losses 1.0, 1.1, 1.2; the tail is the seed-mean curve
    # over epochs 9-10 (70, 71)
    assert ("| Baseline (no mixing) | 71.00 ± 1.00 (n=3) | 95.00 ± 0.00 (n=3) | 24.00 ± 1.00 (n=3) | "
            "1.10 ± 0.10 (n=3) | 70.00–71.00 (epochs 9–10) |") in text


def test_a_variant_is_compared_with_its_own_method_and_the_cell_controls_only_where_it_pastes_cells():
    def arm(label, method, seed, top1):
        return {**_run(label, seed, top1, 90), "config": {"method": method}}

    runs = [arm(m, m, s, top1 + s) for m, top1 in (("none", 70), ("cutmix", 72), ("saliencymix", 73),
                                                    ("random-cells", 74), ("attentive-cutmix", 71)) for s in range(3)]
    runs += [arm("saliencymix-shuffled", "saliencymix", s, 74 + s) for s in range(3)]
    runs += [arm("attentive-cutmix-shuffled", "attentive-cutmix", s, 73 + s) for s in range(3)]
    text = paired_markdown(runs)
    # the shuffled-guidance control against its own method (shuffled minus own), and the method's declared control
    assert "| saliencymix-shuffled vs SaliencyMix | +1.00 [+1.00, +1.00] (n=3) |" in text
    assert "| saliencymix-shuffled vs CutMix | +2.00 [+2.00, +2.00] (n=3) |" in text
    # a box method's variant is not compared with the cell controls; a cell method's is
    assert "saliencymix-shuffled vs Random cells" not in text and "saliencymix-shuffled vs Attentive" not in text
    assert "| attentive-cutmix-shuffled vs Attentive CutMix | +2.00 [+2.00, +2.00] (n=3) |" in text
    assert "| attentive-cutmix-shuffled vs Random cells | -1.00 [-1.00, -1.00] (n=3) |" in text
    assert "| attentive-cutmix-shuffled vs CutMix | +1.00 [+1.00, +1.00] (n=3) |" in text
