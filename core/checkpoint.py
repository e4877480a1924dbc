"""Self-describing checkpoints.

A checkpoint is one safetensors file: the weights, and in its metadata the
model config (with labels), the preprocessing a runtime needs, the package
versions that wrote it, and any extra fields (epoch, metrics). safetensors
holds tensors only, so loading a checkpoint never runs pickled code. Files are
written atomically (temporary file, then rename): a crash never leaves a
half-written checkpoint behind.
"""

from __future__ import annotations

import json
import platform
from pathlib import Path
from typing import Any

from torch import nn

from microgesture.core.config import ModelConfig, config_from_dict
from microgesture.core.errors import MicrogestureError
from microgesture.core.family import family_of
from microgesture.core.paths import atomic_write

FORMAT = "microgesture-checkpoint"
FORMAT_VERSION = 1

# What the trainer writes into a run folder (training.trainer uses these names).
RUN_FILE = "run.json"
STATE_FILE = "last.pt"
"""The full training state (``torch.save`` of tensors and plain containers)."""
KEEP_FILES = {"best": "best.safetensors", "last": "last.safetensors"}
"""``train --keep``: the self-describing checkpoint a run keeps for eval and export."""


def preprocessing(config: ModelConfig) -> dict[str, Any]:
    """What a runtime needs to turn video and skeletons into the model's inputs (from
    the family's window, ``core.family.WindowSpec``)."""
    family = family_of(config)
    spec = family.window(config)
    out: dict[str, Any] = {"rgb_frames": config.rgb_frames, "pose_frames": config.pose_frames,
                           "image_size": spec.image_size, "mean": list(spec.mean),
                           "std": list(spec.std), "layout": spec.layout}
    if spec.heatmaps is not None:
        out.update(heatmap_size=spec.heatmaps.size, sigma=spec.heatmaps.sigma)
        if spec.heatmaps.kind != "joints":
            out.update(heatmap_kind=spec.heatmaps.kind, limbs=spec.heatmaps.limbs)
    out.update(family.window_manifest(config))
    return out


def versions() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    out = {"python": platform.python_version()}
    for pkg in ("microgesture", "torch", "open_clip_torch", "numpy"):
        try:
            out[pkg] = version(pkg)
        except PackageNotFoundError:
            pass
    return out


def save_checkpoint(model: nn.Module, path: str | Path, extra: dict[str, Any] | None = None) -> Path:
    """Write ``model`` (which must carry its ``config``) to ``path`` atomically."""
    from safetensors.torch import save_file

    config: ModelConfig = model.config
    meta = {
        "format": FORMAT,
        "format_version": str(FORMAT_VERSION),
        "config": config.to_json(),
        "preprocessing": json.dumps(preprocessing(config)),
        "versions": json.dumps(versions()),
        "extra": json.dumps(extra or {}),
    }
    state = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
    return atomic_write(path, lambda tmp: save_file(state, str(tmp), metadata=meta))


def read_metadata(path: str | Path) -> dict[str, Any]:
    """The decoded metadata of a checkpoint, checked; raises a clear error for
    anything that is not a microgesture checkpoint of a known version."""
    from safetensors import SafetensorError, safe_open

    path = Path(path)
    if not path.is_file():
        raise MicrogestureError(f"checkpoint {path} does not exist")
    try:
        with safe_open(str(path), framework="pt") as f:
            raw = f.metadata() or {}
    except (SafetensorError, OSError, ValueError) as exc:
        raise MicrogestureError(f"{path} is not a readable safetensors checkpoint ({exc}); pass a "
                                f"run folder, its {KEEP_FILES['best']} or its {STATE_FILE}") from exc
    if raw.get("format") != FORMAT:
        raise MicrogestureError(f"{path} is not a microgesture checkpoint (no '{FORMAT}' metadata)")
    if int(raw.get("format_version", 0)) > FORMAT_VERSION:
        raise MicrogestureError(
            f"{path} has checkpoint format {raw['format_version']}; this microgesture reads up to "
            f"{FORMAT_VERSION}: upgrade microgesture")
    meta = {k: json.loads(raw[k]) for k in ("config", "preprocessing", "versions", "extra")}
    meta["config"] = config_from_dict(meta["config"])
    return meta


def run_checkpoint(run: str | Path) -> Path:
    """The checkpoint a run folder keeps for eval and export: the file its ``train
    --keep`` names (best by default), else any self-describing one, else the
    training state; a clear error when the run has finished no epoch yet."""
    run = Path(run)
    keep = "best"
    try:
        keep = json.loads((run / RUN_FILE).read_text())["options"].get("keep") or "best"
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        pass
    order = [KEEP_FILES.get(keep, KEEP_FILES["best"])] + list(KEEP_FILES.values()) + [STATE_FILE]
    for name in order:
        if (run / name).is_file():
            return run / name
    raise MicrogestureError(f"{run} holds no checkpoint ({', '.join(dict.fromkeys(order))}): has "
                            f"the run finished an epoch? (microgesture train --resume {run} "
                            "continues it)")


def describe(path: str | Path, meta: dict[str, Any]) -> str:
    """One line saying which weights a command uses: the file, the epoch and its scores."""
    extra = meta.get("extra") or {}
    text = f"{path}"
    if extra.get("epoch") is not None:
        text += f": epoch {extra['epoch']}"
        if extra.get("epochs"):
            text += f" of {extra['epochs']}"
    scores = [f"{name} {extra[key]:.3f}" for key, name in
              (("val_top1", "validation top-1"), ("val_loss", "loss")) if
              isinstance(extra.get(key), (int, float))]
    if scores:
        text += f" ({', '.join(scores)})"
    if extra.get("kept"):
        text += f", kept as the {extra['kept']} epoch"
    return text


def _load_state(path: Path, map_location: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """A training state file (``last.pt``) with the ``run.json`` beside it, as
    ``(state_dict, metadata)`` like a checkpoint's."""
    import torch

    run_file = path.parent / RUN_FILE
    if not run_file.is_file():
        raise MicrogestureError(f"{path} is not a readable safetensors checkpoint, nor a training "
                                f"state with its {RUN_FILE} beside it; pass the run folder or its "
                                f"{KEEP_FILES['best']}")
    try:
        info = json.loads(run_file.read_text())
        state = torch.load(path, map_location=map_location, weights_only=True)
        weights, epoch = state["model"], int(state["epoch"]) + 1
    except Exception as exc:  # any unreadable state: one line naming the file to pass
        raise MicrogestureError(f"{path} is not a readable training state ({type(exc).__name__}); "
                                f"pass the run folder or its {KEEP_FILES['best']}") from None
    config = config_from_dict(info["config"])
    extra = {"epoch": epoch, "epochs": config.train.epochs, "kept": "last", "run": str(path.parent)}
    meta = {"config": config, "preprocessing": preprocessing(config), "versions": {}, "extra": extra}
    return weights, meta


def load_checkpoint(path: str | Path, map_location: str = "cpu") -> tuple[nn.Module, dict[str, Any]]:
    """Rebuild the model a checkpoint describes and load its weights.

    ``path``: a self-describing ``.safetensors`` checkpoint, or the trainer's
    training state (``last.pt``, read with its run folder's ``run.json``).
    Returns ``(model, metadata)``; the model is in eval mode. No download: the
    CLIP weights are part of the checkpoint.
    """
    from safetensors.torch import load_file

    from microgesture.core.family import family_of

    path = Path(path)
    if path.suffix == ".pt" and path.is_file():
        state, meta = _load_state(path, map_location)
    else:
        meta = read_metadata(path)
        state = load_file(str(path), device=map_location)
    model = family_of(meta["config"]).build_for_inference(meta["config"])  # no teacher, no --text-from
    missing, unexpected = model.load_state_dict(state, strict=False)
    if missing or unexpected:
        raise MicrogestureError(
            f"checkpoint {path} does not match its own config {meta['config'].name}: "
            f"missing {sorted(missing)[:5]}, unexpected {sorted(unexpected)[:5]}")
    return model.eval(), meta
