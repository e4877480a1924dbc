"""CLIP towers from open_clip, and the CLIP weights microgesture starts from.

``--clip-weights`` (``weights`` below) is one of:

- ``random``: random initialisation (tests, ablations from scratch; our own
  checkpoints carry the CLIP weights themselves);
- ``pretrained``: the config's open_clip tag (``ClipConfig.pretrained``,
  ``openai`` for the paper-sized models), downloaded by open_clip;
- another open_clip tag (``laion2b_s34b_b88k``, ...), downloaded;
- a local file: an open_clip checkpoint (a state dict saved with ``torch.save``,
  optionally under ``state_dict``, or ``.safetensors``), or OpenAI's original
  ``ViT-B-16.pt`` (a TorchScript archive, as OpenAI distributes it).

Weights must match the architecture's activation: OpenAI's (and MetaCLIP's, DFN's)
were trained with QuickGELU (``ViT-B-16-quickgelu``), LAION's and DataComp's with
GELU (``ViT-B-16``). A known mismatch is refused with the architecture to use; a
state-dict file that does not say where it came from is loaded with the
architecture's activation and a warning saying so. Files are read with
``torch.load(weights_only=True)``: a damaged or malicious file is refused with a
one-line error, never unpickled.

:func:`training_weights` decides what ``train`` starts from (pretrained when the
config has a tag, unless the user says ``random``) and how the run records it
(``ClipConfig.weights_source``, kept in run.json, checkpoints and bundles).
"""

from __future__ import annotations

import hashlib
import logging
import warnings
import zipfile
from pathlib import Path

import torch

from microgesture.core.config import ClipConfig
from microgesture.core.errors import MicrogestureError

_CONFIG_DIR = Path(__file__).with_name("clip_configs")
_registered = False
_OPENAI_META_KEYS = ("input_resolution", "context_length", "vocab_size")
log = logging.getLogger(__name__)


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


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__


def _quick_gelu(arch: str) -> bool:
    return bool((_open_clip().get_model_config(arch) or {}).get("quick_gelu", False))


def _activation(quick: bool) -> str:
    return "QuickGELU" if quick else "GELU"


def _check_activation(arch: str, weights_quick: bool, source: str) -> None:
    if weights_quick != _quick_gelu(arch):
        base = arch[: -len("-quickgelu")] if arch.endswith("-quickgelu") else f"{arch}-quickgelu"
        raise MicrogestureError(
            f"CLIP weights {source} were trained with {_activation(weights_quick)} but the architecture "
            f"{arch} uses {_activation(not weights_quick)}: use --set clip.arch={base}, or weights trained "
            f"with {_activation(not weights_quick)}")


def _is_torchscript(path: Path) -> bool:
    if not zipfile.is_zipfile(path):
        return False
    with zipfile.ZipFile(path) as z:
        return any(n.endswith("constants.pkl") or "/code/" in n for n in z.namelist())


def load_torch_file(path, what: str, fix: str):
    """``torch.load(weights_only=True)`` of a file, with a one-line error for a missing,
    damaged or unsafe (code-carrying) file. ``what`` names the file's role, ``fix`` the way out."""
    path = Path(path)
    if not path.is_file():
        raise MicrogestureError(f"{what} {path} does not exist; {fix}")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # pickle.UnpicklingError, RuntimeError (bad zip), EOFError, ...
        raise MicrogestureError(f"{what} {path} cannot be read safely ({_first_line(exc)}): it is damaged, not "
                                f"a PyTorch file, or holds more than tensors; {fix}") from None


def read_weights_file(path) -> tuple[dict[str, torch.Tensor], str]:
    """(state dict in open_clip's names, format) of a local CLIP weights file; format is
    ``openai-torchscript``, ``openai`` (a state dict with OpenAI's metadata keys),
    ``safetensors`` or ``open_clip``."""
    path = Path(path)
    fix = "pass an open_clip checkpoint, OpenAI's ViT-B-16.pt, a pretrained tag, or random"
    if not path.is_file():
        raise MicrogestureError(f"CLIP weights file {path} does not exist; {fix}")
    if _is_torchscript(path):
        try:
            with warnings.catch_warnings():  # torch.jit is deprecated, OpenAI's files are TorchScript
                warnings.simplefilter("ignore", FutureWarning)
                state = torch.jit.load(str(path), map_location="cpu").state_dict()
        except Exception as exc:
            raise MicrogestureError(f"CLIP weights file {path} looks like a TorchScript archive but cannot be "
                                    f"loaded ({_first_line(exc)}); {fix}") from None
        kind = "openai-torchscript"
    elif path.suffix == ".safetensors":
        from safetensors.torch import load_file

        try:
            state = load_file(str(path))
        except Exception as exc:
            raise MicrogestureError(f"CLIP weights file {path} is not a readable safetensors file "
                                    f"({_first_line(exc)}); {fix}") from None
        kind = "safetensors"
    else:
        state = load_torch_file(path, "CLIP weights file", fix)
        if isinstance(state, dict) and isinstance(state.get("state_dict"), dict):
            state = state["state_dict"]
        kind = "open_clip"
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise MicrogestureError(f"CLIP weights file {path} holds a {type(state).__name__}, not a state dict of "
                                f"tensors; {fix}")
    if kind == "open_clip" and any(k in state for k in _OPENAI_META_KEYS):
        kind = "openai"
    state = {(k[len("module."):] if k.startswith("module.") else k): v.float() for k, v in state.items()
             if k not in _OPENAI_META_KEYS}
    return state, kind


def _load_file_into(model, path: Path, arch: str) -> str:
    state, kind = read_weights_file(path)
    if kind.startswith("openai"):
        _check_activation(arch, True, f"{path.name} (OpenAI's)")
    else:
        log.warning("CLIP weights %s do not say which activation they were trained with; using %s's %s "
                    "(OpenAI weights need a -quickgelu architecture, LAION/DataComp ones GELU)",
                    path, arch, _activation(_quick_gelu(arch)))
    from open_clip.factory import resize_pos_embed

    resize_pos_embed(state, model)
    missing, unexpected = model.load_state_dict(state, strict=False)
    if missing or unexpected:
        raise MicrogestureError(
            f"CLIP weights file {path} does not fit the architecture {arch}: missing {sorted(missing)[:3]}, "
            f"unexpected {sorted(unexpected)[:3]}; pass weights for {arch} (or choose its architecture with "
            "--set clip.arch=...)")
    return kind


def create_clip(cfg: ClipConfig, weights: str | None = None) -> torch.nn.Module:
    """The whole open_clip model (image and text towers) for ``cfg``.

    ``weights``: None or ``"random"`` for random weights; ``"pretrained"`` for the
    config's own tag; any other open_clip tag; or a path to a local file (module docstring).
    """
    open_clip = _open_clip()
    if cfg.arch not in open_clip.list_models():
        from microgesture.core.errors import UnknownNameError

        raise UnknownNameError("CLIP architecture", cfg.arch, open_clip.list_models())
    weights = None if weights == "random" else weights
    tag = cfg.pretrained if weights == "pretrained" else weights
    if weights == "pretrained" and not tag:
        raise MicrogestureError(
            f"CLIP architecture {cfg.arch} has no pretrained tag; pass --clip-weights PATH "
            "or --clip-weights random")
    is_file = bool(tag) and (Path(tag).is_file() or bool(Path(tag).suffix) or "/" in tag)
    if tag and not is_file:
        known = open_clip.list_pretrained_tags_by_model(cfg.arch)
        if tag not in known:
            raise MicrogestureError(f"{tag!r} is neither a file nor an open_clip tag for {cfg.arch}; known tags: "
                                    f"{', '.join(known) or 'none'}")
        pcfg = open_clip.get_pretrained_cfg(cfg.arch, tag)
        _check_activation(cfg.arch, bool(pcfg.get("quick_gelu", False)), f"'{tag}'")
    root = logging.getLogger()
    quiet = _DropRandomInitWarning()
    root.addFilter(quiet)  # random weights are what we asked for: no warning about them
    try:
        model = open_clip.create_model(cfg.arch, pretrained=None if is_file else (tag or None),
                                       force_image_size=cfg.image_size)
    except Exception as exc:
        if tag and not is_file:
            raise MicrogestureError(
                f"could not get the CLIP weights '{tag}' for {cfg.arch} ({_first_line(exc)}); offline? Pass a "
                "local file with --clip-weights PATH (an open_clip checkpoint, or OpenAI's ViT-B-16.pt), or "
                "train from scratch with --clip-weights random") from None
        raise
    finally:
        root.removeFilter(quiet)
    if is_file:
        _load_file_into(model, Path(tag), cfg.arch)
    if tag:
        log.info("CLIP %s weights from %s", cfg.arch, tag)
    return model


def training_weights(cfg: ClipConfig, asked: str | None) -> tuple[str | None, str]:
    """(what to pass as ``weights``, how the run records it) for ``train``.

    ``asked`` None means the default: the config's pretrained tag when it has one
    (the paper-sized models), else random weights."""
    if asked is None:
        asked = "pretrained" if cfg.pretrained else "random"
    if asked == "random":
        return None, "random"
    tag = cfg.pretrained if asked == "pretrained" else asked
    path = Path(tag) if tag else None
    if path is not None and path.is_file():
        digest = hashlib.sha256()
        with open(path, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                digest.update(block)
        kind = "openai-torchscript" if _is_torchscript(path) else "file"
        return str(path), f"file:{path.name} sha256:{digest.hexdigest()} ({kind})"
    return asked, f"open_clip:{tag}"


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
