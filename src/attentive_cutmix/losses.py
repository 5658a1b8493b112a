"""``mixed_cross_entropy``: the loss of a mixer's targets, dense or as index pairs.

A mixer built with ``target_format="pair"`` returns ``(labels_a, labels_b, lam)`` per sample instead of (B, K) soft
targets: ``(1 - lam) * CE(logits, labels_a) + lam * CE(logits, labels_b)`` is the soft-target loss exactly (cross
entropy is linear in its target), without forming the (B, K) targets, which for large label spaces is measurably
faster (BENCHMARKS.md; PyTorch issue 141177).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

__all__ = ["mixed_cross_entropy", "TargetPairs"]

TargetPairs = tuple[torch.Tensor, torch.Tensor, torch.Tensor]


def mixed_cross_entropy(logits: torch.Tensor, targets: torch.Tensor | TargetPairs, *, label_smoothing: float = 0.0,
                        reduction: str = "mean") -> torch.Tensor:
    """Cross-entropy of ``logits`` (B, K) against a mixer's targets.

    ``targets``: dense (B, K) probabilities or (B,) class indices (plain ``F.cross_entropy``), or the
    ``(labels_a, labels_b, lam)`` of ``target_format="pair"``. ``label_smoothing`` smooths each label as
    ``F.cross_entropy`` does, so pairs with smoothing equal dense targets built with the same smoothing.
    """
    if isinstance(targets, torch.Tensor):
        return F.cross_entropy(logits, targets, label_smoothing=label_smoothing, reduction=reduction)
    if not isinstance(targets, (tuple, list)) or len(targets) != 3:
        raise TypeError("targets must be a tensor or the (labels_a, labels_b, lam) of a mixer with "
                        f"target_format='pair', got {type(targets).__name__}")
    if reduction not in ("mean", "sum", "none"):
        raise ValueError(f"reduction must be 'mean', 'sum' or 'none', got reduction={reduction!r}")
    labels_a, labels_b, lam = targets
    # One log-softmax, two gathers: the (B, K) target is never formed.
    logp = F.log_softmax(logits.float(), dim=1)
    lam = lam.to(logp.device, torch.float32)
    picked = torch.lerp(logp.gather(1, labels_a.view(-1, 1)), logp.gather(1, labels_b.view(-1, 1)), lam.view(-1, 1))
    loss = -picked.squeeze(1)
    if label_smoothing > 0:  # every class gets label_smoothing / K of each label's mass, as F.cross_entropy does
        loss = (1.0 - label_smoothing) * loss - label_smoothing * logp.mean(1)
    return loss.mean() if reduction == "mean" else loss.sum() if reduction == "sum" else loss
