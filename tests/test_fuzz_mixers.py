"""Property-based tests of the four mixers over random shapes, dtypes, grids, patch counts and label forms.

Images are built so each one's pixel values lie in its own band ((i + 0.05 .. i + 0.95) / B), which makes
the source of every output pixel identifiable even in bfloat16. Invariants: shape/dtype/device kept; every
output pixel is the image's own or its one partner's (MixUp: a convex combination of the two; Cutout: own
or fill); lam, the weight moved to the partner's label, equals the replaced pixel fraction; targets are a
probability distribution; inputs are unchanged; randomness comes only from the given generator.
RandomCells, the control, is held to Attentive CutMix's invariants plus uniform cells; the Beta sampler
behind CutMix's and MixUp's lam is compared with numpy's.
"""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from attentive_cutmix import AttentiveCutMix, CutMix, Cutout, MixUp, RandomCells
from attentive_cutmix.mixers.base import beta_sample

DTYPES = [torch.float32, torch.float64, torch.float16, torch.bfloat16]
FUZZ = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@st.composite
def batches(draw):
    b, c = draw(st.integers(1, 9)), draw(st.integers(1, 4))
    h, w = draw(st.integers(4, 40)), draw(st.integers(4, 40))
    k = draw(st.integers(2, 12))
    g = torch.Generator().manual_seed(draw(st.integers(0, 2**31 - 1)))
    band = torch.arange(b, dtype=torch.float64).view(b, 1, 1, 1)
    noise = torch.rand(b, c, h, w, generator=g, dtype=torch.float64)
    images = ((band + 0.05 + 0.9 * noise) / b).to(draw(st.sampled_from(DTYPES)))
    if draw(st.booleans()):
        labels = torch.randint(0, k, (b,), generator=g)
    else:
        p = torch.rand(b, k, generator=g) + 0.01
        labels = p / p.sum(1, keepdim=True)
    return dict(images=images, labels=labels, num_classes=k, smoothing=draw(st.sampled_from([0.0, 0.1])),
                prob=draw(st.sampled_from([1.0, 1.0, 0.5])), seed=draw(st.integers(0, 2**31 - 1)))


def _base_targets(labels, k, smoothing):
    t = F.one_hot(labels, k).double() if labels.ndim == 1 else labels.double()
    return t * (1 - smoothing) + smoothing / k


def _run(mixer, case, attention=None):
    x, y = case["images"], case["labels"]
    copies = (x.clone(), y.clone(), None if attention is None else attention.clone())
    gen = torch.Generator().manual_seed(case["seed"])
    rng_before = torch.get_rng_state()
    out, targets = mixer(x, y, attention, generator=gen)
    assert torch.equal(torch.get_rng_state(), rng_before)  # the global RNG is never drawn from
    assert torch.equal(x, copies[0]) and torch.equal(y, copies[1])
    assert attention is None or torch.equal(attention, copies[2])
    assert out.shape == x.shape and out.dtype == x.dtype and out.device == x.device
    b, k = x.shape[0], case["num_classes"]
    assert targets.shape == (b, k) and targets.dtype == torch.float32 and targets.device == x.device
    assert bool((targets >= 0).all()) and torch.allclose(targets.sum(1), torch.ones(b), atol=1e-5)
    return out, targets.double()


def _partner_pixels(out, x):
    """Per sample: (partner index or None, (H, W) mask of pixels taken from it); asserts nothing else appears."""
    b = x.shape[0]
    own = (out == x).all(1)
    result = []
    for i in range(b):
        replaced = ~own[i]
        if not replaced.any():
            result.append((None, replaced))
            continue
        sources = [j for j in range(b) if j != i and torch.equal(out[i][:, replaced], x[j][:, replaced])]
        assert len(sources) == 1, f"sample {i}: replaced pixels do not all come from one partner ({sources})"
        result.append((sources[0], replaced))
    return result


def _check_lam(targets, case, i, j, lam, atol=1e-5):
    t = _base_targets(case["labels"], case["num_classes"], case["smoothing"])
    expected = t[i] if j is None else (1 - lam) * t[i] + lam * t[j]
    assert torch.allclose(targets[i], expected, atol=atol), (targets[i], expected, lam)


def _rectangle(mask):
    rows, cols = mask.any(1).nonzero(), mask.any(0).nonzero()
    return int(mask.sum()) == (rows.max() - rows.min() + 1) * (cols.max() - cols.min() + 1)


def _bounds(size, g):
    return [int((k * size) / g + 0.5) for k in range(g + 1)]  # cells of round(k * size / g), 1 px apart at most


@FUZZ
@given(case=batches(), data=st.data())
def test_attentive_cutmix_pastes_the_partners_top_cells(case, data):
    b, _, h, w = case["images"].shape
    g = data.draw(st.integers(1, min(h, w, 10)), label="grid")
    n = data.draw(st.integers(0, g * g), label="num_patches")
    scores = torch.stack([torch.randperm(g * g, generator=torch.Generator().manual_seed(case["seed"] + i))
                          for i in range(b)])
    attention = scores.view(b, g, g).float()  # distinct scores: the top cells are unambiguous
    mixer = AttentiveCutMix(case["num_classes"], num_patches=n, grid_size=g, prob=case["prob"],
                            label_smoothing=case["smoothing"])
    out, targets = _run(mixer, case, attention)
    ys, xs = _bounds(h, g), _bounds(w, g)
    for i, (j, replaced) in enumerate(_partner_pixels(out, case["images"])):
        lam = float(replaced.sum()) / (h * w)
        _check_lam(targets, case, i, j, lam)
        if j is not None:
            expected = torch.zeros(h, w, dtype=torch.bool)
            for cell in scores[j].argsort(descending=True)[:n].tolist():  # the partner's own attention decides
                r, c = divmod(cell, g)
                expected[ys[r]:ys[r + 1], xs[c]:xs[c + 1]] = True
            assert torch.equal(replaced, expected)
        elif b > 1 and case["prob"] == 1.0 and n > 0:
            raise AssertionError(f"sample {i} was not mixed although prob=1 and num_patches={n}")


@FUZZ
@given(case=batches(), alpha=st.sampled_from([0.2, 1.0, 5.0]))
def test_cutmix_pastes_one_partner_box_and_lam_is_its_area(case, alpha):
    h, w = case["images"].shape[-2:]
    mixer = CutMix(case["num_classes"], alpha=alpha, prob=case["prob"], label_smoothing=case["smoothing"])
    out, targets = _run(mixer, case)
    for i, (j, replaced) in enumerate(_partner_pixels(out, case["images"])):
        _check_lam(targets, case, i, j, float(replaced.sum()) / (h * w))
        if j is not None:
            assert _rectangle(replaced)


@FUZZ
@given(case=batches(), alpha=st.sampled_from([0.2, 1.0, 5.0]))
def test_mixup_is_a_convex_combination_weighted_like_the_targets(case, alpha):
    x = case["images"]
    b = x.shape[0]
    mixer = MixUp(case["num_classes"], alpha=alpha, prob=case["prob"], label_smoothing=case["smoothing"])
    out, targets = _run(mixer, case)
    low = x.dtype in (torch.float16, torch.bfloat16)
    xd, od = x.double().flatten(1), out.double().flatten(1)
    tol = 2e-2 if low else 1e-6
    for i in range(b):
        if torch.equal(out[i], x[i]):
            # lam = 0, or a batch of one (its own partner): the target may still be a mix of two equal images
            if b > 1:
                _check_lam(targets, case, i, None, 0.0, atol=tol)
            continue
        fits = []
        for j in range(b):
            if j == i:
                continue
            d = xd[j] - xd[i]
            lam = float((od[i] - xd[i]) @ d / (d @ d))
            err = float((od[i] - (xd[i] + lam * d)).abs().max())
            fits.append((err, j, lam))
        err, j, lam = min(fits)
        assert err <= (0.02 if low else 1e-5) and -tol <= lam <= 1 + tol, (err, lam)
        lo, hi = torch.minimum(xd[i], xd[j]), torch.maximum(xd[i], xd[j])
        assert bool((od[i] >= lo - tol).all() and (od[i] <= hi + tol).all())
        _check_lam(targets, case, i, j, lam, atol=tol)


@FUZZ
@given(case=batches(), size=st.integers(1, 20), fill=st.sampled_from([0.0, -1.0]))
def test_cutout_sets_one_square_to_fill_and_keeps_the_labels(case, size, fill):
    x = case["images"]
    mixer = Cutout(case["num_classes"], size=size, fill=fill, prob=case["prob"], label_smoothing=case["smoothing"])
    out, targets = _run(mixer, case)
    filled = (out == fill).all(1)
    # Everything else is the image's own pixels.
    assert torch.equal(out.masked_fill(filled.unsqueeze(1), 0), x.masked_fill(filled.unsqueeze(1), 0))
    for i in range(x.shape[0]):
        _check_lam(targets, case, i, None, 0.0)
        if filled[i].any():
            assert _rectangle(filled[i]) and filled[i].any(1).sum() <= size and filled[i].any(0).sum() <= size


# That only the given generator matters is checked for every registered method by check_mixer.


# ------------------------------------------------------------------------------------ random cells
def _cells_of(replaced, g):
    """The set of grid cells a (H, W) replaced-pixel mask covers; asserts every cell is all or nothing."""
    h, w = replaced.shape
    ys, xs = _bounds(h, g), _bounds(w, g)
    cells = set()
    for r in range(g):
        for c in range(g):
            part = replaced[ys[r]:ys[r + 1], xs[c]:xs[c + 1]]
            assert bool(part.all()) or not bool(part.any()), f"cell ({r}, {c}) is partly pasted"
            if part.all():
                cells.add(r * g + c)
    return cells


@st.composite
def cell_batches(draw):
    """A batch with a grid that fits it and a number of cells for that grid."""
    case = draw(batches())
    g = draw(st.integers(1, min(*case["images"].shape[-2:], 10)))
    return case, g, draw(st.integers(0, g * g))


@FUZZ
@given(drawn=cell_batches())
def test_random_cells_pastes_exactly_n_partner_cells_in_place(drawn):
    case, g, n = drawn
    b, _, h, w = case["images"].shape
    mixer = RandomCells(case["num_classes"], num_patches=n, grid_size=g, prob=case["prob"],
                        label_smoothing=case["smoothing"])
    out, targets = _run(mixer, case, torch.rand(b, g, g))  # attention is accepted and ignored
    for i, (j, replaced) in enumerate(_partner_pixels(out, case["images"])):  # own or one partner's, same place
        _check_lam(targets, case, i, j, float(replaced.sum()) / (h * w))
        if j is not None:
            assert len(_cells_of(replaced, g)) == n
        elif b > 1 and case["prob"] == 1.0 and n > 0:
            raise AssertionError(f"sample {i} was not mixed although prob=1 and num_patches={n}")


@settings(max_examples=10, deadline=None)
@given(seed=st.integers(0, 2**31 - 1))
def test_random_cells_ignores_attention_and_depends_on_the_generator_only(seed):
    x = torch.rand(6, 3, 8, 8, generator=torch.Generator().manual_seed(seed))
    y = torch.arange(6) % 3
    mixer = RandomCells(3, num_patches=3, grid_size=4)
    a = mixer(x, y, torch.rand(6, 4, 4), generator=torch.Generator().manual_seed(seed))
    b = mixer(x, y, None, generator=torch.Generator().manual_seed(seed))
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])


@pytest.mark.parametrize("size, g, n", [(8, 4, 5), (64, 4, 3), (10, 3, 2)])  # (64, 4): the segment-gather path
def test_random_cells_chooses_every_cell_equally_often(size, g, n):
    b = 1200
    x = torch.arange(b, dtype=torch.float32).view(b, 1, 1, 1).expand(b, 1, size, size).contiguous()
    out, _ = RandomCells(2, num_patches=n, grid_size=g)(x, torch.zeros(b, dtype=torch.long),
                                                        generator=torch.Generator().manual_seed(size))
    replaced = out != x
    ys, xs = _bounds(size, g), _bounds(size, g)
    chosen = torch.stack([replaced[:, 0, ys[r], xs[c]] for r in range(g) for c in range(g)], 1)  # (B, g*g)
    assert torch.equal(chosen.sum(1), torch.full((b,), n))
    p = n / g ** 2
    counts = chosen.sum(0).double()
    # Each cell: binomial(B, N/g^2); 4.5 sd leaves ~1e-4 for all cells together.
    assert bool(((counts - b * p).abs() < 4.5 * math.sqrt(b * p * (1 - p))).all()), counts.tolist()


# ------------------------------------------------------------------------------------ the Beta sampler
def _ks_statistic(a: np.ndarray, b: np.ndarray) -> float:
    a, b = np.sort(a), np.sort(b)
    pooled = np.concatenate([a, b])
    return float(np.abs(np.searchsorted(a, pooled, side="right") / len(a)
                        - np.searchsorted(b, pooled, side="right") / len(b)).max())


@pytest.mark.parametrize("alpha", [1e-3, 1e-2, 0.1, 0.5, 1.0, 2.0, 10.0])
def test_beta_sampler_matches_numpy(alpha):
    n = 20000
    ours = beta_sample(alpha, n, torch.Generator().manual_seed(7)).numpy()
    # The sampler returns float32: compare with numpy's draws rounded alike (1e-300 and 0.0 are one value then).
    reference = np.random.default_rng(7).beta(alpha, alpha, n).astype(np.float32)
    assert ours.dtype == np.float32 and ((ours >= 0) & (ours <= 1)).all()
    # Two-sample KS bound at the 1e-4 level: sqrt(-ln(1e-4 / 2) / 2) * sqrt(2 / n).
    bound = math.sqrt(-math.log(1e-4 / 2) / 2) * math.sqrt(2 / n)
    assert _ks_statistic(ours, reference) < bound
    assert float((ours == 0.5).mean()) < 1e-3  # the old sampler gave 24.5% exact 0.5 at alpha=1e-3 (0/0)
    assert abs(float(ours.mean()) - 0.5) < 4.5 * math.sqrt(1 / (4 * (2 * alpha + 1)) / n)  # symmetric about 1/2
