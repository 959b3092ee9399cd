"""ResNet-18 image encoder with GroupNorm, in plain torch.

Both models need one global feature vector per image (the track model: ``z0`` for I0, ``zg`` for
the goal; the residual policy: the current image and the goal).
GroupNorm replaces BatchNorm because training batches are small and the same encoder runs with
batch size 1 at inference, where BatchNorm's running statistics are a common source of
train/test mismatch (the same choice as diffusion_policy's vision encoders).

``width`` scales every stage: 64 is the standard ResNet-18 (512-d feature, 11.2 M parameters),
32 halves the channels (256-d feature, about a quarter of the parameters and compute).
"""

from __future__ import annotations

import torch
from torch import nn


def group_norm(channels: int) -> nn.GroupNorm:
    """GroupNorm with 16 channels per group (at least one group), as in diffusion_policy."""
    return nn.GroupNorm(max(1, channels // 16), channels)


class BasicBlock(nn.Module):
    """Two 3x3 convolutions with a residual connection (ResNet-18/34 block)."""

    def __init__(self, in_channels: int, out_channels: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, stride, 1, bias=False)
        self.norm1 = group_norm(out_channels)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, 1, 1, bias=False)
        self.norm2 = group_norm(out_channels)
        self.act = nn.ReLU(inplace=True)
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or in_channels != out_channels:
            self.shortcut = nn.Sequential(
                nn.Conv2d(in_channels, out_channels, 1, stride, bias=False),
                group_norm(out_channels),
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.act(self.norm1(self.conv1(x)))  # (B, C_out, H', W')
        h = self.norm2(self.conv2(h))  # (B, C_out, H', W')
        return self.act(h + self.shortcut(x))  # (B, C_out, H', W')


class ResNet18GN(nn.Module):
    """ResNet-18 (GroupNorm) mapping ``(B, 3, S, S)`` normalised images to ``(B, 8 * width)``.

    Args:
        width: channels of the first stage; the four stages have width, 2, 4 and 8 times that.
    """

    def __init__(self, width: int = 64) -> None:
        super().__init__()
        if width < 1:
            raise ValueError(f"ResNet width must be >= 1, got {width}")
        self.width = width
        self.out_dim = 8 * width
        self.stem = nn.Sequential(
            nn.Conv2d(3, width, 7, 2, 3, bias=False),
            group_norm(width),
            nn.ReLU(inplace=True),
            nn.MaxPool2d(3, 2, 1),
        )
        stages = []
        in_ch = width
        for i, out_ch in enumerate((width, 2 * width, 4 * width, 8 * width)):
            stride = 1 if i == 0 else 2
            stages.append(
                nn.Sequential(BasicBlock(in_ch, out_ch, stride), BasicBlock(out_ch, out_ch))
            )
            in_ch = out_ch
        self.stages = nn.Sequential(*stages)
        self.initialize_weights()

    def initialize_weights(self) -> None:
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.GroupNorm):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
        # Zero the last norm of each residual branch so every block starts as the identity
        # (Goyal et al. 2017): training from scratch is then stable without warm-up tricks.
        for m in self.modules():
            if isinstance(m, BasicBlock):
                nn.init.zeros_(m.norm2.weight)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(x)  # (B, w, S/4, S/4)
        x = self.stages(x)  # (B, 8w, S/32, S/32)
        return x.mean(dim=(2, 3))  # (B, 8w)
