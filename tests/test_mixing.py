"""Behaviour of the four batch mixers on hand-made inputs."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from attentive_cutmix import AttentiveCutMix, CutMix, Cutout, MixUp
from attentive_cutmix.mixers.base import pair_permutation
from attentive_cutmix.mixers.cell_scores import top_cell_indices, top_cells
from attentive_cutmix.mixers.geometry import _paste_segments, cell_bounds, cells_to_pixel_mask, paste


def _gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _distinct_images(b: int, c: int = 3, h: int = 32, w: int = 32) -> torch.Tensor:
    # Every image is a constant, distinct value: a pixel's value tells which image it came from.
    return (torch.arange(b, dtype=torch.float32) + 1).view(b, 1, 1, 1).expand(b, c, h, w).contiguous() / (b + 1)


def _source_index(mixed: torch.Tensor, b: int) -> torch.Tensor:
    return (mixed[:, 0] * (b + 1)).round().long() - 1  # (B, H, W) index of the source image


def _find_perm(mixed: torch.Tensor, images: torch.Tensor) -> torch.Tensor:
    b = images.shape[0]
    src = _source_index(mixed, b)
    own = torch.arange(b).view(b, 1, 1)
    foreign = torch.where(src != own, src, torch.full_like(src, -1)).flatten(1).max(1).values
    return foreign  # -1 where nothing was pasted


def test_pairing_is_a_permutation_without_fixed_points():
    for b in (2, 3, 7, 64):
        for seed in range(20):
            p = pair_permutation(b, _gen(seed))
            assert sorted(p.tolist()) == list(range(b))
            assert (p != torch.arange(b)).all()
    assert pair_permutation(1, _gen(0)).tolist() == [0]
    assert not torch.equal(pair_permutation(16, _gen(0)), pair_permutation(16, _gen(1)))


class TestCells:
    def test_bounds_on_32px_with_7x7_grid_are_even(self):
        b = cell_bounds(32, 7)
        assert b.tolist() == [0, 5, 9, 14, 18, 23, 27, 32]
        sizes = b.diff()
        assert sizes.min() >= 4 and sizes.max() <= 5

    def test_bounds_exact_on_224(self):
        assert cell_bounds(224, 7).diff().tolist() == [32] * 7

    def test_top_cells_picks_largest_with_row_col_layout(self):
        scores = torch.zeros(1, 7, 7)
        scores[0, 2, 5] = 3.0  # row 2, col 5: flat index 19, a classic flat->(row, col) trap
        scores[0, 6, 0] = 2.0
        scores[0, 0, 6] = 1.0
        cells = top_cells(scores, 2)
        assert cells.sum() == 2
        assert cells[0, 2, 5] and cells[0, 6, 0] and not cells[0, 0, 6]

    def test_ties_break_to_lower_index_deterministically(self):
        scores = torch.ones(3, 4, 4)
        cells = top_cells(scores, 3)
        expected = torch.zeros(16, dtype=torch.bool)
        expected[:3] = True
        for i in range(3):
            assert torch.equal(cells[i].flatten(), expected)

    def test_pixel_mask_follows_bounds(self):
        cells = torch.zeros(1, 7, 7, dtype=torch.bool)
        cells[0, 1, 3] = True
        mask = cells_to_pixel_mask(cells, 32, 32)
        ys, xs = torch.nonzero(mask[0], as_tuple=True)
        assert (ys.min().item(), ys.max().item()) == (5, 8)
        assert (xs.min().item(), xs.max().item()) == (14, 17)


    @pytest.mark.parametrize("size", list(range(1, 70)) + [223, 224, 225, 299, 384])
    def test_integer_bounds_equal_round_half_up(self, size):
        # round(k*size/g) with halves going up, computed exactly with fractions
        from fractions import Fraction
        for g in range(1, min(size, 16) + 1):
            expected = [int(Fraction(k * size, g) + Fraction(1, 2)) for k in range(g + 1)]
            assert cell_bounds(size, g).tolist() == expected, (size, g)

    def test_top_cells_equal_the_stable_sort_including_ties_and_signed_zeros(self):
        gen = _gen(3)
        for trial in range(30):
            # few distinct values, so ties at the num_patches-th place are common; negatives and -0.0 too
            scores = (torch.randint(-2, 3, (16, 5, 5), generator=gen).float() * (0.5 + trial))
            scores[:, 0, :2] = -0.0
            stable = torch.sort(scores.flatten(1), dim=1, descending=True, stable=True).indices
            for n in (0, 1, 6, 12, 24, 25):
                assert torch.equal(top_cell_indices(scores, n), stable[:, :n]), n


class TestPastePaths:
    """The segment gather (grids that divide the image, wide cells) must equal the dense masked select."""

    @pytest.mark.parametrize("dtype,c,h,w,g", [(torch.float32, 3, 224, 224, 7), (torch.float32, 1, 64, 96, 4),
                                               (torch.float16, 3, 64, 64, 2), (torch.float64, 2, 48, 16, 2),
                                               (torch.float32, 5, 30, 30, 1)])
    def test_segment_gather_equals_masked_select(self, dtype, c, h, w, g):
        b, n = 5, min(3, g * g)
        gen = _gen(1)
        images = torch.randn(b, c, h, w, generator=gen).to(dtype)
        images[0, 0, 0, :3] = torch.tensor([float("nan"), float("inf"), -0.0])  # copied bit for bit
        perm = pair_permutation(b, gen)
        cells = top_cell_indices(torch.rand(b, g, g, generator=gen), n)
        mask = torch.zeros(b, g * g, dtype=torch.bool).scatter_(1, cells, True).view(b, g, g)
        dense = paste(images, perm, cells_to_pixel_mask(mask, h, w))
        segments = _paste_segments(images, perm, cells, g)
        assert torch.equal(segments.view(-1).view(torch.uint8), dense.view(-1).view(torch.uint8))
        assert not torch.equal(segments, images)

    def test_mixer_takes_the_segment_path_on_even_wide_grids_and_matches_the_reference(self, monkeypatch):
        from attentive_cutmix.mixers import geometry as cells_module
        calls = []
        monkeypatch.setattr(cells_module, "_paste_segments", lambda *a: calls.append(1) or _paste_segments(*a))
        b, g = 6, 7
        images = _distinct_images(b, h=224, w=224)
        att = torch.rand(b, g, g, generator=_gen(5))
        mixed, _ = AttentiveCutMix(num_classes=3, num_patches=6, grid_size=g)(images, torch.zeros(b, dtype=torch.long),
                                                                              att, generator=_gen(2))
        assert calls == [1]
        perm = _find_perm(mixed, images)
        expected = torch.where(cells_to_pixel_mask(top_cells(att, 6)[perm], 224, 224).unsqueeze(1), images[perm],
                               images)
        assert torch.equal(mixed, expected)
        # a non-contiguous batch (channels_last) takes the dense path and gives the same result
        mixed_cl, _ = AttentiveCutMix(num_classes=3, num_patches=6, grid_size=g)(
            images.to(memory_format=torch.channels_last), torch.zeros(b, dtype=torch.long), att, generator=_gen(2))
        assert calls == [1] and torch.equal(mixed_cl, expected)


class TestAttentiveCutMix:
    def test_pastes_exactly_the_partners_top_cells_at_same_location(self):
        b, g, n = 6, 7, 5
        images = torch.rand(b, 3, 32, 32)
        attention = torch.rand(b, g, g)
        mixer = AttentiveCutMix(num_classes=10, num_patches=n, grid_size=g)
        mixed, _ = mixer(images, torch.arange(b) % 10, attention=attention, generator=_gen(1))
        perm = pair_permutation(b, _gen(1))  # the mixer draws exactly this pairing first
        bounds = cell_bounds(32, g)
        for i in range(b):
            j = perm[i].item()
            flat = attention[j].flatten()
            top = set(torch.argsort(flat, descending=True)[:n].tolist())
            for cell in range(g * g):
                r, c = divmod(cell, g)
                ys, xs = slice(bounds[r], bounds[r + 1]), slice(bounds[c], bounds[c + 1])
                expected = images[j] if cell in top else images[i]
                assert torch.equal(mixed[i, :, ys, xs], expected[:, ys, xs]), (i, cell)

    def test_channel_aggregate_not_single_channel(self):
        # Channel 0 alone points at cell 0, but the channel mean points at cell 48.
        att = torch.zeros(2, 4, 7, 7)
        att[:, 0, 0, 0] = 1.0
        att[:, 1:, 6, 6] = 1.0
        mask = AttentiveCutMix(num_classes=2, num_patches=1).pixel_mask(att, 32, 32)
        assert mask[:, -1, -1].all() and not mask[:, 0, 0].any()

    @pytest.mark.parametrize("h,w,g", [(32, 32, 7), (224, 224, 7), (40, 24, 7), (33, 17, 5)])
    def test_lambda_equals_replaced_fraction_per_sample(self, h, w, g):
        b = 7  # odd batch
        images = _distinct_images(b, h=h, w=w)
        labels = torch.arange(b)
        n = 6
        mixed, targets = AttentiveCutMix(num_classes=b, num_patches=n, grid_size=g)(
            images, labels, attention=torch.rand(b, g, g), generator=_gen(3))
        src = _source_index(mixed, b)
        own = torch.arange(b).view(b, 1, 1)
        replaced = (src != own).flatten(1).float().mean(1)
        assert torch.allclose(targets[torch.arange(b), labels], 1 - replaced, atol=1e-6)
        assert torch.allclose(targets.sum(1), torch.ones(b))
        if (h, w, g) == (224, 224, 7):  # even grid: exactly n/g^2
            assert torch.allclose(replaced[replaced > 0], torch.full_like(replaced[replaced > 0], n / 49))

    def test_lambda_not_shared_across_batch(self):
        # Uneven cells (32 px, 7x7): different partners' top cells cover different areas.
        b = 8
        att = torch.zeros(b, 7, 7)
        att[torch.arange(b), torch.arange(b) % 7, torch.arange(b) % 7] = 1.0
        _, targets = AttentiveCutMix(num_classes=b, num_patches=1)(_distinct_images(b), torch.arange(b), attention=att,
                                                                   generator=_gen(0))
        own = targets[torch.arange(b), torch.arange(b)]
        assert own.unique().numel() > 1

    def test_num_patches_zero_changes_nothing_and_full_replaces_all(self):
        images, labels = torch.rand(4, 3, 32, 32), torch.tensor([0, 1, 2, 3])
        att = torch.rand(4, 7, 7)
        mixed, targets = AttentiveCutMix(num_classes=4, num_patches=0)(images, labels, attention=att)
        assert torch.equal(mixed, images) and torch.equal(targets, F.one_hot(labels, 4).float())
        mixed, targets = AttentiveCutMix(num_classes=4, num_patches=49)(images, labels, attention=att,
                                                                        generator=_gen(5))
        perm = pair_permutation(4, _gen(5))
        assert torch.equal(mixed, images[perm])
        assert torch.allclose(targets, F.one_hot(labels[perm], 4).float())

    def test_attention_of_other_resolution_is_pooled(self):
        att = torch.zeros(1, 14, 14)
        att[0, 12:, 0:2] = 1.0  # bottom-left 2x2 block -> grid cell (6, 0)
        mask = AttentiveCutMix(num_classes=2, num_patches=1).pixel_mask(att, 224, 224)
        assert mask[0, 200, 10] and mask.sum() == 32 * 32

    @pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float64])
    def test_dtype_preserved_and_targets_float32(self, dtype):
        images = torch.rand(5, 3, 32, 32).to(dtype)
        mixed, targets = AttentiveCutMix(num_classes=3)(images, torch.tensor([0, 1, 2, 0, 1]),
                                                        attention=torch.rand(5, 8, 8).to(dtype))
        assert mixed.dtype == dtype and targets.dtype == torch.float32
        assert mixed.shape == images.shape

    def test_does_not_modify_inputs(self):
        images = torch.rand(4, 3, 16, 16)
        before = images.clone()
        AttentiveCutMix(num_classes=4, grid_size=4)(images, torch.arange(4), attention=torch.rand(4, 4, 4))
        assert torch.equal(images, before)

    def test_probability_labels_and_smoothing(self):
        b, k = 4, 5
        probs = torch.softmax(torch.randn(b, k), 1)
        _, targets = AttentiveCutMix(num_classes=k, label_smoothing=0.1)(torch.rand(b, 3, 32, 32), probs,
                                                                         attention=torch.rand(b, 7, 7))
        assert torch.allclose(targets.sum(1), torch.ones(b), atol=1e-6)
        assert targets.min() >= 0.1 / k - 1e-6

    def test_generator_reproducible_and_prob(self):
        images, labels, att = torch.rand(6, 3, 32, 32), torch.arange(6), torch.rand(6, 7, 7)
        mixer = AttentiveCutMix(num_classes=6)
        a = mixer(images, labels, attention=att, generator=_gen(7))
        b = mixer(images, labels, attention=att, generator=_gen(7))
        assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
        never = AttentiveCutMix(num_classes=6, prob=0.0)(images, labels, attention=att, generator=_gen(7))
        assert torch.equal(never[0], images)

    def test_extractor_is_used_when_no_attention(self):
        calls = []

        def extractor(x):
            calls.append(x.shape)
            att = torch.zeros(x.shape[0], 2, 7, 7)
            att[:, :, 3, 3] = 1.0
            return att

        images = _distinct_images(4)
        mixed, _ = AttentiveCutMix(num_classes=4, extractor=extractor, num_patches=1)(images, torch.arange(4),
                                                                                      generator=_gen(2))
        assert calls == [images.shape]
        changed = (mixed != images).any(1)
        assert changed[:, 14:18, 14:18].any() and not changed[:, :14].any()


class TestCutMixMixUpCutout:
    def test_cutmix_box_is_a_rectangle_and_lambda_exact(self):
        b = 9
        images = _distinct_images(b)
        mixed, targets = CutMix(num_classes=b, alpha=1.0)(images, torch.arange(b), generator=_gen(4))
        src = _source_index(mixed, b)
        own = torch.arange(b).view(b, 1, 1)
        pasted = src != own
        for i in range(b):
            ys, xs = torch.nonzero(pasted[i], as_tuple=True)
            if ys.numel():
                box = pasted[i, ys.min():ys.max() + 1, xs.min():xs.max() + 1]
                assert box.all(), "pasted region is not a solid rectangle"
        assert torch.allclose(targets[torch.arange(b), torch.arange(b)], 1 - pasted.flatten(1).float().mean(1),
                              atol=1e-6)

    def test_mixup_interpolates_with_per_sample_weight(self):
        b = 6
        images = _distinct_images(b)
        mixed, targets = MixUp(num_classes=b, alpha=0.4)(images, torch.arange(b), generator=_gen(8))
        p = pair_permutation(b, _gen(8))
        lam = targets[torch.arange(b), p]  # weight on the partner's label
        lam = torch.where(p == torch.arange(b), torch.ones_like(lam), lam)
        expected = images * (1 - lam.view(b, 1, 1, 1)) + images[p] * lam.view(b, 1, 1, 1)
        mask = p != torch.arange(b)
        assert torch.allclose(mixed[mask], expected[mask], atol=1e-6)

    def test_cutout_zeroes_square_and_keeps_labels(self):
        images = torch.ones(4, 3, 32, 32)
        labels = torch.tensor([1, 2, 3, 0])
        mixed, targets = Cutout(num_classes=4, size=8)(images, labels, generator=_gen(0))
        assert torch.equal(targets, F.one_hot(labels, 4).float())
        zeros = (mixed == 0).all(1)
        assert zeros.flatten(1).sum(1).max() <= 64 and zeros.flatten(1).sum(1).min() > 0

    @pytest.mark.parametrize("mixer", [CutMix(num_classes=3), MixUp(num_classes=3), Cutout(num_classes=3, size=4),
                                       AttentiveCutMix(num_classes=3, grid_size=2, num_patches=1)])
    def test_batch_of_one_and_odd_batches(self, mixer):
        for b in (1, 3):
            images = torch.rand(b, 3, 8, 8)
            att = torch.rand(b, 2, 2)
            mixed, targets = mixer(images, torch.zeros(b, dtype=torch.long), attention=att, generator=_gen(0))
            assert mixed.shape == images.shape and torch.allclose(targets.sum(1), torch.ones(b))


class TestBadInput:
    def test_constructor_values_named(self):
        with pytest.raises(ValueError, match="num_patches.*50"):
            AttentiveCutMix(num_classes=10, num_patches=50)
        with pytest.raises(ValueError, match="num_patches"):
            AttentiveCutMix(num_classes=10, num_patches=-1)
        with pytest.raises(ValueError, match="grid_size"):
            AttentiveCutMix(num_classes=10, grid_size=0)
        with pytest.raises(ValueError, match="prob"):
            CutMix(num_classes=10, prob=1.5)
        with pytest.raises(ValueError, match="alpha"):
            MixUp(num_classes=10, alpha=0)
        with pytest.raises(ValueError, match="num_classes"):
            Cutout(num_classes=0)
        with pytest.raises(TypeError, match="num_patch"):
            AttentiveCutMix(num_classes=10, num_patch=6)  # typo: unknown keyword

    def test_call_inputs_named(self):
        m = AttentiveCutMix(num_classes=10)
        x, y, a = torch.rand(4, 3, 32, 32), torch.arange(4), torch.rand(4, 7, 7)
        with pytest.raises(ValueError, match="shape"):
            m(x[0], y, attention=a)
        with pytest.raises(TypeError, match="floating"):
            m((x * 255).to(torch.uint8), y, attention=a)
        with pytest.raises(ValueError, match=r"labels.*\[0, 10\).*\[0, 12\]"):
            m(x, torch.tensor([0, 1, 2, 12]), attention=a)
        with pytest.raises(ValueError, match="batch size"):
            m(x, torch.arange(3), attention=a)
        with pytest.raises(ValueError, match="attention has batch size 3"):
            m(x, y, attention=a[:3])
        with pytest.raises(ValueError, match=r"\(4, 10\)"):
            m(x, torch.rand(4, 9), attention=a)
        with pytest.raises(ValueError, match="NaN"):
            m(x, y, attention=torch.full((4, 7, 7), float("nan")))
        with pytest.raises(ValueError, match="needs attention"):
            m(x, y)
        with pytest.raises(ValueError, match="empty"):
            m(x[:0], y[:0], attention=a[:0])
        with pytest.raises(ValueError, match="grid_size=7 does not fit"):
            m(torch.rand(4, 3, 5, 5), y, attention=a)
        with pytest.raises(TypeError, match="generatr"):
            m(x, y, attention=a, generatr=None)

    def test_extractor_without_spatial_map(self):
        m = AttentiveCutMix(num_classes=10, extractor=lambda x: torch.rand(x.shape[0], 10))
        with pytest.raises(ValueError, match=r"spatial feature map.*\(4, 10\)"):
            m(torch.rand(4, 3, 32, 32), torch.arange(4))


def test_channels_last_input_gives_same_result():
    images, labels, att = torch.rand(4, 3, 16, 16), torch.arange(4), torch.rand(4, 4, 4)
    mixer = AttentiveCutMix(num_classes=4, grid_size=4, num_patches=5)
    a, ta = mixer(images, labels, attention=att, generator=_gen(0))
    b, tb = mixer(images.to(memory_format=torch.channels_last), labels, attention=att, generator=_gen(0))
    assert torch.equal(a, b) and torch.equal(ta, tb)
