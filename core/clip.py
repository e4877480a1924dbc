"""CLIP towers from open_clip, with the weight sources microgesture supports.

Weights come from an open_clip pretrained tag (downloads, for users online), a
local checkpoint file (``--clip-weights PATH``: an open_clip or OpenAI CLIP
file), or nowhere (random initialisation, for tests and for loading our own
checkpoints, which carry the CLIP weights themselves).
"""

from __future__ import annotations

import logging
from pathlib import Path

import torch

from microgesture.core.config import ClipConfig
from microgesture.core.errors import MicrogestureError

_CONFIG_DIR = Path(__file__).with_name("clip_configs")
_registered = False


def _open_clip():
    global _registered
    try:
        import open_clip
    except ImportError as exc:  # pragma: no cover - depends on the install
        raise MicrogestureError(
            "open_clip is not installed: install the training extra, "
            "pip install 'microgesture[train]'") from exc
    if not _registered:
        open_clip.add_model_config(_CONFIG_DIR)
        _registered = True
    return open_clip


class _DropRandomInitWarning(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return "No pretrained weights loaded" not in record.getMessage()


def create_clip(cfg: ClipConfig, weights: str | None = None) -> torch.nn.Module:
    """The whole open_clip model (image and text towers) for ``cfg``.

    ``weights``: None for random weights; ``"pretrained"`` for the config's own
    tag; any other open_clip tag; or a path to a local checkpoint file.
    """
    open_clip = _open_clip()
    if cfg.arch not in open_clip.list_models():
        from microgesture.core.errors import UnknownNameError

        raise UnknownNameError("CLIP architecture", cfg.arch, open_clip.list_models())
    tag = cfg.pretrained if weights == "pretrained" else weights
    if weights == "pretrained" and not tag:
        raise MicrogestureError(
            f"CLIP architecture {cfg.arch} has no pretrained tag; pass --clip-weights PATH "
            "or use random weights")
    if tag and Path(tag).suffix and not Path(tag).is_file():
        raise MicrogestureError(f"CLIP weights file {tag} does not exist")
    root = logging.getLogger()
    quiet = _DropRandomInitWarning()
    root.addFilter(quiet)  # random weights are what we asked for: no warning about them
    try:
        model = open_clip.create_model(cfg.arch, pretrained=tag or None,
                                       force_image_size=cfg.image_size)
    except RuntimeError as exc:
        if tag and not Path(tag).is_file():
            known = open_clip.list_pretrained_tags_by_model(cfg.arch)
            raise MicrogestureError(
                f"could not get CLIP weights {tag!r} for {cfg.arch}: {exc}. Known tags: "
                f"{', '.join(known) or 'none'}. Offline? Download the weights on a machine "
                "with internet and pass the file with --clip-weights PATH") from exc
        raise MicrogestureError(f"could not load CLIP weights from {tag}: {exc}") from exc
    finally:
        root.removeFilter(quiet)
    if tag:
        logging.getLogger(__name__).info("CLIP %s weights from %s", cfg.arch, tag)
    return model


def clip_visual(cfg: ClipConfig, weights: str | None = None) -> torch.nn.Module:
    """The image tower of :func:`create_clip`, returning its patch tokens too."""
    visual = create_clip(cfg, weights).visual
    visual.output_tokens = True
    lock_visual(visual, cfg.trainable_blocks)
    return visual


def lock_visual(visual: torch.nn.Module, trainable_blocks: int) -> None:
    """Freeze the tower but its last ``trainable_blocks`` blocks (and final norm
    and projection); -1 leaves everything trainable."""
    if trainable_blocks < 0:
        return
    for p in visual.parameters():
        p.requires_grad = False
    if trainable_blocks == 0:
        return
    for block in visual.transformer.resblocks[-trainable_blocks:]:
        block.requires_grad_(True)
    visual.ln_post.requires_grad_(True)
    visual.proj.requires_grad = True


def clip_tokenizer(cfg: ClipConfig):
    """open_clip's tokenizer for ``cfg.arch``: a callable from a list of strings to token ids
    (N, context length). Ships with open_clip: nothing is downloaded for CLIP's BPE."""
    return _open_clip().get_tokenizer(cfg.arch)
