"""Network blocks both models are built from: the adaLN-Zero transformer block, its output layer and
the image normalisation of the ResNet encoders (``t2a_common.core.resnet``).

The track model (``t2a_perception.core.model``) and the residual policy
(``t2a_control.core.policy``) are DiTs (Peebles & Xie 2023) over tokens; the blocks here are
DiT's, with an optional key padding mask. Module and parameter names are part of the shipped
checkpoints' format: renaming one breaks loading them.
"""

from __future__ import annotations

from collections.abc import Iterable

import torch
from torch import nn
from torch.nn import functional as F

# ImageNet statistics: arbitrary for a network trained from scratch, but they keep the door open
# to initialising the encoder from an ImageNet ResNet-18 without changing the preprocessing.
IMAGE_MEAN = (0.485, 0.456, 0.406)
IMAGE_STD = (0.229, 0.224, 0.225)


def modulate(x: torch.Tensor, shift: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """adaLN: per-example affine transform of token features ``(B, N, D)``."""
    return x * (1 + scale.unsqueeze(1)) + shift.unsqueeze(1)


class Attention(nn.Module):
    """Multi-head self-attention over tokens, with an optional key padding mask."""

    def __init__(self, hidden_size: int, num_heads: int) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.qkv = nn.Linear(hidden_size, 3 * hidden_size)
        self.proj = nn.Linear(hidden_size, hidden_size)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        B, N, D = x.shape
        qkv = self.qkv(x).reshape(B, N, 3, self.num_heads, D // self.num_heads)  # (B, N, 3, h, d)
        q, k, v = qkv.permute(2, 0, 3, 1, 4).unbind(0)  # 3 x (B, h, N, d)
        attn_mask = None if mask is None else mask[:, None, None, :]  # (B, 1, 1, N)
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask)  # (B, h, N, d)
        return self.proj(out.transpose(1, 2).reshape(B, N, D))  # (B, N, D)


class T2ABlock(nn.Module):
    """Transformer block with adaLN-Zero conditioning (DiT's best-performing variant)."""

    def __init__(self, hidden_size: int, num_heads: int, mlp_ratio: float = 4.0) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(hidden_size, elementwise_affine=False, eps=1e-6)
        self.attn = Attention(hidden_size, num_heads)
        self.norm2 = nn.LayerNorm(hidden_size, elementwise_affine=False, eps=1e-6)
        mlp_hidden = int(hidden_size * mlp_ratio)
        self.mlp = nn.Sequential(
            nn.Linear(hidden_size, mlp_hidden),
            nn.GELU(approximate="tanh"),
            nn.Linear(mlp_hidden, hidden_size),
        )
        self.adaLN_modulation = nn.Sequential(nn.SiLU(), nn.Linear(hidden_size, 6 * hidden_size))

    def forward(
        self, x: torch.Tensor, c: torch.Tensor, mask: torch.Tensor | None = None
    ) -> torch.Tensor:
        mod = self.adaLN_modulation(c).chunk(6, dim=1)  # 6 x (B, D)
        shift_msa, scale_msa, gate_msa, shift_mlp, scale_mlp, gate_mlp = mod
        h = modulate(self.norm1(x), shift_msa, scale_msa)  # (B, N, D)
        x = x + gate_msa.unsqueeze(1) * self.attn(h, mask)  # (B, N, D)
        h = modulate(self.norm2(x), shift_mlp, scale_mlp)  # (B, N, D)
        return x + gate_mlp.unsqueeze(1) * self.mlp(h)  # (B, N, D)


class FinalLayer(nn.Module):
    """adaLN-modulated projection of each token to its output (a track ``H x 2``, an action)."""

    def __init__(self, hidden_size: int, out_size: int) -> None:
        super().__init__()
        self.norm_final = nn.LayerNorm(hidden_size, elementwise_affine=False, eps=1e-6)
        self.linear = nn.Linear(hidden_size, out_size)
        self.adaLN_modulation = nn.Sequential(nn.SiLU(), nn.Linear(hidden_size, 2 * hidden_size))

    def forward(self, x: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        shift, scale = self.adaLN_modulation(c).chunk(2, dim=1)  # 2 x (B, D)
        return self.linear(modulate(self.norm_final(x), shift, scale))  # (B, N, 2H)


def zero_init_adaln(blocks: Iterable[T2ABlock], final_layer: FinalLayer) -> None:
    """adaLN-Zero: every block starts as the identity and the output as zero, which the DiT paper
    found matters more than any other conditioning choice."""
    for block in blocks:
        nn.init.zeros_(block.adaLN_modulation[-1].weight)
        nn.init.zeros_(block.adaLN_modulation[-1].bias)
    nn.init.zeros_(final_layer.adaLN_modulation[-1].weight)
    nn.init.zeros_(final_layer.adaLN_modulation[-1].bias)
    nn.init.zeros_(final_layer.linear.weight)
    nn.init.zeros_(final_layer.linear.bias)


def basic_init(module: nn.Module) -> None:
    """DiT's default initialisation, for ``model.apply``: Xavier-uniform linear weights, zero
    biases, N(0, 0.02) embeddings. The ResNet encoders have no Linear layers and keep their own."""
    if isinstance(module, nn.Linear):
        nn.init.xavier_uniform_(module.weight)
        if module.bias is not None:
            nn.init.zeros_(module.bias)
    elif isinstance(module, nn.Embedding):
        nn.init.normal_(module.weight, std=0.02)
