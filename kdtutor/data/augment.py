"""Augmentation that runs on a batch tensor on the device, inside the training loop (no DataLoader workers)."""

from __future__ import annotations

import torch

__all__ = ["RandomShiftFlip"]


class RandomShiftFlip:
    """On-device batch augmentation: shift each image by up to ``max_shift`` pixels and flip half horizontally.

    Works on a batch tensor ``B x C x H x W`` on any device (zero padding, then a random crop per image), so it
    runs inside :func:`~kdtutor.training.fit` without DataLoader workers. Randomness comes from torch's global RNG,
    which ``fit(seed=...)`` seeds.
    """

    def __init__(self, max_shift: int = 2, flip: bool = True):
        if max_shift < 0:
            raise ValueError(f"max_shift: expected >= 0, got {max_shift}")
        self.max_shift, self.flip = max_shift, flip

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        b, _, h, w = x.shape
        s = self.max_shift
        if s:
            padded = torch.nn.functional.pad(x, (s, s, s, s))
            dy = torch.randint(0, 2 * s + 1, (b, 1, 1), device=x.device)
            dx = torch.randint(0, 2 * s + 1, (b, 1, 1), device=x.device)
            rows = (torch.arange(h, device=x.device).view(1, h, 1) + dy).expand(b, h, w)
            cols = (torch.arange(w, device=x.device).view(1, 1, w) + dx).expand(b, h, w)
            batch = torch.arange(b, device=x.device).view(b, 1, 1).expand(b, h, w)
            x = padded.permute(0, 2, 3, 1)[batch, rows, cols].permute(0, 3, 1, 2)
        if self.flip:
            mask = torch.rand(b, device=x.device) < 0.5
            x = torch.where(mask.view(b, 1, 1, 1), x.flip(-1), x)
        return x

    def __repr__(self) -> str:
        return f"RandomShiftFlip(max_shift={self.max_shift}, flip={self.flip})"
