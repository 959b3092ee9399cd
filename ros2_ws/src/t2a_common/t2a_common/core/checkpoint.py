"""Model checkpoints: a directory with ``config.json``, ``model.safetensors``, ``stats.json``.

``config.json`` is the flat config dataclass of the model (every field spelled out, so a later
change of a default cannot silently change what an old checkpoint means), ``stats.json`` the stats
dataclass of its training data, ``model.safetensors`` the weights. Loading checks all three
against each other and says exactly what does not match. Both the track model
(``t2a_perception.core.checkpoint``) and the residual policy (``t2a_control.core.policy``) are
stored this way; each adds only how to build its model and describe its architecture.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import torch
from safetensors.torch import load_file, save_file
from torch import nn

from t2a_common.core.config import fields, from_dict, to_dict

C = TypeVar("C")
M = TypeVar("M", bound=nn.Module)

CONFIG_NAME = "config.json"
WEIGHTS_NAME = "model.safetensors"
STATS_NAME = "stats.json"
CHECKPOINT_FILES = (CONFIG_NAME, WEIGHTS_NAME, STATS_NAME)

# How many offending tensor names an error lists before summarising the rest.
_MAX_LISTED = 8


def save_checkpoint(model: nn.Module, directory: str | Path) -> Path:
    """Write ``model`` (its ``config``, ``stats`` and weights) into ``directory``, creating it if
    needed; returns the directory."""
    return save_model_files(directory, model.config, model.stats, model.state_dict())


def load_model(
    directory: str | Path,
    build: Callable[[Any, Any], M],
    config_cls: type,
    stats_cls: type,
    architecture: Callable[[Any], str],
    device: str | torch.device = "cpu",
) -> M:
    """``build(config, stats)`` from a checkpoint directory with its weights loaded, in eval mode
    on ``device``. ``architecture(config)`` describes the config for the error when the weights
    do not fit it (``"depth=6, hidden_size=192"``).

    Raises:
        FileNotFoundError: the directory or one of its three files is missing.
        ValueError: a file is malformed, the config has unknown or missing keys or bad values,
            or the weights do not fit the architecture the config describes.
    """
    config = load_dataclass(directory, CONFIG_NAME, config_cls)
    model = build(config, load_dataclass(directory, STATS_NAME, stats_cls))
    load_weights(model, directory, architecture(config))
    return model.to(device).eval()


def save_model_files(
    directory: str | Path, config: Any, stats: Any, state_dict: dict[str, torch.Tensor]
) -> Path:
    """Write ``config`` and ``stats`` (config dataclasses, flattened to JSON) and ``state_dict``
    (safetensors) into ``directory``, creating it if needed; returns the directory."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    _write_json(directory / CONFIG_NAME, to_dict(config))
    _write_json(directory / STATS_NAME, to_dict(stats))
    state = {name: t.detach().cpu().contiguous() for name, t in state_dict.items()}
    save_file(state, str(directory / WEIGHTS_NAME), metadata={"format": "pt"})
    return directory


def load_dataclass(directory: str | Path, filename: str, cls: type[C]) -> C:
    """The validated ``cls`` stored as ``directory/filename``.

    Raises:
        FileNotFoundError: the file is missing (the message lists a checkpoint's files).
        ValueError: not a JSON object, unknown or missing keys (every field must be present), or
            a value ``cls`` rejects; the message names the file.
    """
    path = _require(Path(directory), filename)
    try:
        data = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise ValueError(f"{path} is not valid JSON: {exc}") from exc
    if not isinstance(data, dict):
        raise ValueError(f"{path} must hold a JSON object, got {type(data).__name__}")
    known = {spec.name for spec in fields(cls)}
    unknown = sorted(set(data) - known)
    missing = sorted(known - set(data))
    if unknown or missing:
        raise ValueError(
            f"{path} does not match {cls.__name__}: unknown keys {unknown}, missing keys "
            f"{missing}; every field must be present (known: {sorted(known)})"
        )
    try:
        return from_dict(cls, data)
    except ValueError as exc:
        raise ValueError(f"{path}: {exc}") from exc


def load_weights(model: nn.Module, directory: str | Path, architecture: str) -> None:
    """Load ``directory/model.safetensors`` into ``model`` (strictly).

    ``architecture`` describes the model's config (``"depth=6, hidden_size=192"``) for the
    error when the weights do not fit it.

    Raises:
        FileNotFoundError: the weights file is missing.
        ValueError: the file is not readable safetensors, or it has missing, unexpected or
            differently shaped tensors (listed, with ``architecture``).
    """
    path = _require(Path(directory), WEIGHTS_NAME)
    try:
        state = load_file(str(path))
    except Exception as exc:  # safetensors raises its own error types for corrupt files
        raise ValueError(f"{path} is not a readable safetensors file: {exc}") from exc
    _check_state(model, state, path, architecture)
    model.load_state_dict(state, strict=True)


def _check_state(
    model: nn.Module, state: dict[str, torch.Tensor], path: Path, architecture: str
) -> None:
    expected = model.state_dict()
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    mismatched = [
        f"{name}: checkpoint {tuple(state[name].shape)} vs config {tuple(expected[name].shape)}"
        for name in sorted(set(expected) & set(state))
        if state[name].shape != expected[name].shape
    ]
    problems = []
    if missing:
        problems.append(f"missing tensors {_listed(missing)}")
    if unexpected:
        problems.append(f"unexpected tensors {_listed(unexpected)}")
    if mismatched:
        problems.append(f"shape mismatch {_listed(mismatched)}")
    if problems:
        raise ValueError(
            f"{path} does not fit the architecture in {CONFIG_NAME} ({architecture}): "
            + "; ".join(problems)
        )


def _listed(items: list[str]) -> str:
    shown = ", ".join(items[:_MAX_LISTED])
    more = len(items) - _MAX_LISTED
    return f"[{shown}{f', ... and {more} more' if more > 0 else ''}]"


def _require(directory: Path, filename: str) -> Path:
    path = directory / filename
    if not path.is_file():
        raise FileNotFoundError(
            f"no {filename} in checkpoint directory {directory} "
            f"(a checkpoint holds {', '.join(CHECKPOINT_FILES)})"
        )
    return path


def _write_json(path: Path, data: dict[str, Any]) -> None:
    path.write_text(json.dumps(data, indent=2) + "\n")
