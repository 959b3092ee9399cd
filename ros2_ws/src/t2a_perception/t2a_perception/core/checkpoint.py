"""Track model checkpoints, in the format of ``t2a_common.core.checkpoint``.

``config.json`` is the flat :class:`TrackModelConfig`, ``stats.json`` the :class:`TrackStats` of
the training data, ``model.safetensors`` the weights.
"""

from __future__ import annotations

from pathlib import Path

import torch

from t2a_common.core.checkpoint import (
    CHECKPOINT_FILES,  # noqa: F401  (re-exported: the track model's file names)
    CONFIG_NAME,  # noqa: F401
    STATS_NAME,  # noqa: F401
    WEIGHTS_NAME,  # noqa: F401
    load_model,
    save_checkpoint,  # noqa: F401  (re-exported: saving is the same for every model)
)
from t2a_perception.core.model import TrackDiT, TrackModelConfig, TrackStats


def load_checkpoint(directory: str | Path, device: str | torch.device = "cpu") -> TrackDiT:
    """The track model saved by ``save_checkpoint``, in eval mode on ``device``; raises what
    :func:`t2a_common.core.checkpoint.load_model` raises for a missing, malformed or mismatched
    file."""
    return load_model(directory, TrackDiT, TrackModelConfig, TrackStats, _architecture, device)


def _architecture(config: TrackModelConfig) -> str:
    depth, hidden, heads = config.arch
    return (
        f"model_size={config.model_size!r}, depth={depth}, hidden_size={hidden}, "
        f"num_heads={heads}, encoder_width={config.encoder_width}, horizon={config.horizon}"
    )
