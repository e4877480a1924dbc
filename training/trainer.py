"""Training: the model's recipe, checkpoints that survive kill -9, exact resume, DDP.

A run directory holds:

- ``run.json``: the options, the model config, the classes and the subject split,
  written once when the run starts (``--resume`` reads everything from it);
- ``last.pt``: the full training state after the last complete epoch (model,
  optimizer, scheduler, grad scaler, random states, best score), written
  atomically; it holds tensors and plain containers only and is loaded with
  ``torch.load(weights_only=True)``;
- ``best.safetensors``: the self-describing checkpoint of the best epoch (highest
  validation top-1; on a tie, the lower validation loss), which ``eval`` and
  ``export`` use; with ``keep="last"`` (``--keep last``) ``last.safetensors``, the
  last epoch's, instead;
- ``metrics.jsonl``: one line per epoch (and TensorBoard events in ``tb/`` when
  tensorboard is installed).

Several GPUs or machines: start the same command under ``torchrun``; each
process trains on its share of the clips (DistributedSampler) and rank 0 writes
the run directory.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import random
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from microgesture.core.checkpoint import (KEEP_FILES, RUN_FILE, STATE_FILE, atomic_write,
                                          save_checkpoint)
from microgesture.core.clip import load_torch_file, training_weights
from microgesture.core.config import ModelConfig, config_from_dict, get_config
from microgesture.core.errors import MicrogestureError
from microgesture.core.family import family_of
from microgesture.core.models import create_model
from microgesture.training import splits, token_cache
from microgesture.training.datasets import open_dataset
from microgesture.training.transforms import ClipDataset, make_loader

BEST_FILE = KEEP_FILES["best"]
METRICS_FILE = "metrics.jsonl"


@dataclass(frozen=True)
class TrainOptions:
    """What ``microgesture train`` was asked; None means "the model's recipe"."""

    model: str
    data: str
    out: str
    epochs: int | None = None
    batch_size: int | None = None
    lr: float | None = None
    optimizer: str | None = None
    accumulate: int = 1
    device: str = "auto"
    workers: int = 2
    seed: int = 0
    clip_weights: str | None = None
    amp: bool = True
    """Mixed precision on CUDA (bf16 where supported, else fp16 with a grad scaler)."""
    test_subjects: tuple[str, ...] | None = None
    test_fraction: float = 0.3
    strict: bool = False
    overrides: dict[str, Any] = field(default_factory=dict)
    keep: str = "best"
    """Which epoch's weights the run keeps for eval and export: ``best`` or ``last``."""
    token_cache: int = 0
    """Views per clip of the frozen CLIP blocks' tokens to cache (0: no cache), see
    ``training.token_cache``."""

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


# ---------------------------------------------------------------------- set-up
def _distributed() -> tuple[int, int, int]:
    """(rank, local_rank, world_size), initialising torch.distributed under torchrun."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return 0, 0, 1
    import torch.distributed as dist

    if not dist.is_initialized():
        dist.init_process_group("nccl" if torch.cuda.is_available() else "gloo")
    return dist.get_rank(), int(os.environ.get("LOCAL_RANK", "0")), world


def _device(name: str, local_rank: int) -> torch.device:
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cuda":
        if not torch.cuda.is_available():
            raise MicrogestureError("--device cuda was asked but no CUDA GPU is available; "
                                    "use --device cpu")
        return torch.device("cuda", local_rank)
    if name != "cpu":
        raise MicrogestureError(f"--device must be cpu, cuda or auto, got {name!r}")
    return torch.device("cpu")


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def _rng_state() -> dict[str, Any]:
    np_state = np.random.get_state()
    return {
        "python": list(random.getstate()[1]), "python_pos": random.getstate()[2],
        "numpy": torch.from_numpy(np_state[1].astype(np.int64)), "numpy_pos": int(np_state[2]),
        "torch": torch.get_rng_state(),
    }


def _set_rng_state(state: dict[str, Any]) -> None:
    random.setstate((3, tuple(state["python"]), state["python_pos"]))
    np.random.set_state(("MT19937", state["numpy"].numpy().astype(np.uint32), state["numpy_pos"],
                         0, 0.0))
    torch.set_rng_state(state["torch"])


def build_optimizer(model: nn.Module, config: ModelConfig, lr: float, name: str):
    """AdamW or SGD; the pretrained weights (the family's ``backbone_prefixes``, CLIP-MG's
    CLIP blocks) at ``backbone_lr_scale`` x lr; no weight decay on biases, norms and embeddings."""
    recipe = config.train
    prefixes = tuple(family_of(config).backbone_prefixes)
    groups: dict[tuple[bool, bool], list[nn.Parameter]] = {}
    for pname, p in model.named_parameters():
        if not p.requires_grad:
            continue
        backbone = bool(prefixes) and pname.startswith(prefixes)
        decay = p.ndim >= 2 and "embedding" not in pname
        groups.setdefault((backbone, decay), []).append(p)
    params = [{"params": ps, "lr": lr * (recipe.backbone_lr_scale if backbone else 1.0),
               "weight_decay": recipe.weight_decay if decay else 0.0}
              for (backbone, decay), ps in sorted(groups.items())]
    if name == "sgd":
        return torch.optim.SGD(params, lr=lr, momentum=recipe.momentum, nesterov=True)
    return torch.optim.AdamW(params, lr=lr)


def warmup_cosine(optimizer, warmup_steps: int, total_steps: int):
    """Linear warm-up, then cosine decay to zero, stepped once per optimizer step."""

    def factor(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / warmup_steps
        progress = (step - warmup_steps) / max(1, total_steps - warmup_steps)
        return 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


class _Log:
    """metrics.jsonl (and TensorBoard when installed); rank 0 only."""

    def __init__(self, run: Path, enabled: bool):
        self.enabled = enabled
        self.path = run / METRICS_FILE
        self.tb = None
        if enabled:
            try:
                from torch.utils.tensorboard import SummaryWriter

                self.tb = SummaryWriter(str(run / "tb"))
            except ImportError:  # tensorboard is optional
                self.tb = None

    def write(self, record: dict[str, Any]) -> None:
        if not self.enabled:
            return
        with open(self.path, "a") as f:
            f.write(json.dumps(record) + "\n")
        if self.tb is not None:
            for k, v in record.items():
                if isinstance(v, (int, float)) and k != "epoch":
                    self.tb.add_scalar(k, v, record["epoch"])
            self.tb.flush()


# ---------------------------------------------------------------------- the run
def _prepare(options: TrainOptions, run_info: dict | None):
    """Dataset splits and model config, fresh or from ``run.json``."""
    index = open_dataset(options.data, strict=options.strict)
    if run_info is None:
        train_index, val_index, split_info = splits.choose(index, options.test_subjects,
                                                           options.test_fraction, options.seed)
        overrides = dict(options.overrides)
        if options.epochs is not None:
            overrides["train.epochs"] = options.epochs
        if options.batch_size is not None:
            overrides["train.batch_size"] = options.batch_size
        if options.lr is not None:
            overrides["train.lr"] = options.lr
        if options.optimizer is not None:
            overrides["train.optimizer"] = options.optimizer
        config = get_config(options.model, overrides, labels=tuple(index.classes))
    else:
        config = config_from_dict(run_info["config"])
        if tuple(index.classes) != config.labels:
            raise MicrogestureError(
                f"the dataset at {options.data} has {len(index.classes)} classes "
                f"({', '.join(index.classes[:3])}, ...) but the run was started with "
                f"{config.num_classes} ({', '.join(config.labels[:3])}, ...): resume on the same data")
        split_info = run_info["split"]
        train_index, val_index = splits.from_run(index, split_info)
    if not train_index.records:
        raise MicrogestureError(
            f"the training split of {options.data} is empty: every subject is held out for "
            f"testing ({', '.join(sorted(val_index.subjects()))}); hold out fewer with "
            "--test-subjects or --test-fraction")
    return config, train_index, val_index, split_info


def train(options: TrainOptions, resume: bool = False, progress: bool = True,
          stop_after: int | None = None) -> dict[str, Any]:
    """Train (or resume) a run; returns the final summary (best score, paths).

    ``stop_after``: stop once this many epochs are complete (for time-boxed jobs);
    ``resume`` later continues exactly where it stopped."""
    rank, local_rank, world = _distributed()
    run = Path(options.out)
    run_info = None
    if resume:
        if not (run / RUN_FILE).is_file():
            raise MicrogestureError(f"{run} is not a training run (no {RUN_FILE}); "
                                    "start one with microgesture train --model ... --out RUN")
        run_info = json.loads((run / RUN_FILE).read_text())
        options = TrainOptions(**{**run_info["options"],
                                  "test_subjects": tuple(run_info["split"]["test_subjects"])})
    elif (run / STATE_FILE).exists():
        raise MicrogestureError(f"{run} already holds a run: continue it with --resume {run}, "
                                "or choose another --out")
    if options.keep not in KEEP_FILES:
        raise MicrogestureError(f"keep must be one of {', '.join(KEEP_FILES)}, got {options.keep!r}")
    device = _device(options.device, local_rank)
    config, train_index, val_index, split_info = _prepare(options, run_info)
    family = family_of(config)
    clip_weights = None
    if run_info is None and family.uses_clip_weights(config):
        clip_weights, source = training_weights(family.clip_tower(config), options.clip_weights)
        config = family.with_clip_source(config, source)
        if rank == 0:
            print(f"{run}: CLIP weights: {source}", file=sys.stderr)
    if rank == 0:
        print(f"{run}: {splits.describe(split_info, train_index, val_index)}", file=sys.stderr)
    if rank == 0 and run_info is None:
        run.mkdir(parents=True, exist_ok=True)
        run_info = {"options": options.to_dict(), "config": config.to_dict(),
                    "classes": list(config.labels), "split": split_info}
        atomic_write(run / RUN_FILE, lambda tmp: tmp.write_text(json.dumps(run_info, indent=2)))
    recipe = config.train

    seed_everything(options.seed + rank)
    model = create_model(config, clip_weights=clip_weights,
                         seed=options.seed).to(device)
    train_set = ClipDataset(train_index, config, train=True, seed=options.seed)
    val_set = ClipDataset(val_index, config, train=False, seed=options.seed)
    loader = make_loader(train_set, recipe.batch_size, train=True, workers=options.workers,
                         distributed=world > 1)
    val_loader = make_loader(val_set, recipe.batch_size, train=False, workers=options.workers,
                             distributed=False)
    if len(loader) == 0:
        raise MicrogestureError(f"the training split of {options.data} is empty or smaller than "
                                f"one batch ({recipe.batch_size}); lower --batch-size or add clips")
    steps_per_epoch = max(1, len(loader) // options.accumulate)
    optimizer = build_optimizer(model, config, recipe.lr, recipe.optimizer)
    scheduler = warmup_cosine(optimizer, int(recipe.warmup_epochs * steps_per_epoch),
                              recipe.epochs * steps_per_epoch)
    amp_dtype = None
    if options.amp and device.type == "cuda":
        amp_dtype = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    scaler = torch.amp.GradScaler("cuda", enabled=amp_dtype == torch.float16)

    start_epoch, best = 0, {"top1": -1.0, "epoch": -1}
    if resume and (run / STATE_FILE).is_file():
        state = load_torch_file(run / STATE_FILE, "the training state",
                                f"delete it to restart {run} from its start, or start a new run with --out")
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        scaler.load_state_dict(state["scaler"])
        _set_rng_state(state["rng"])
        start_epoch, best = state["epoch"] + 1, state["best"]
    if options.token_cache:   # after the weights are final: the frozen blocks' tokens
        if world > 1:
            raise MicrogestureError("--token-cache trains in one process; drop it under torchrun")
        folder = run / token_cache.CACHE_DIR
        train_set = token_cache.build(model, train_set, folder, "train", options.token_cache,
                                      recipe.batch_size, options.workers, device, progress)
        val_set = token_cache.build(model, val_set, folder, "val", 1, recipe.batch_size,
                                    options.workers, device, progress)
        loader = make_loader(train_set, recipe.batch_size, train=True, workers=options.workers)
        val_loader = make_loader(val_set, recipe.batch_size, train=False, workers=options.workers)
    if start_epoch >= recipe.epochs and rank == 0:
        print(f"{run}: all {recipe.epochs} epochs are done already", file=sys.stderr)

    net: nn.Module = _Losses(model, family)
    if world > 1:  # the losses are the wrapped forward: DDP synchronises every term's gradients
        net = nn.parallel.DistributedDataParallel(
            net, device_ids=[local_rank] if device.type == "cuda" else None,
            find_unused_parameters=True)
    log = _Log(run, enabled=rank == 0)
    criterion = nn.CrossEntropyLoss(label_smoothing=recipe.label_smoothing)

    last_epoch = recipe.epochs if stop_after is None else min(recipe.epochs, stop_after)
    for epoch in range(start_epoch, last_epoch):
        train_set.set_epoch(epoch)
        if hasattr(loader.sampler, "set_epoch"):
            loader.sampler.set_epoch(epoch)
        net.train()
        t0, seen, loss_sum, term_sums = time.monotonic(), 0, 0.0, {}
        bar = _progress(loader, f"epoch {epoch + 1}/{recipe.epochs}", progress and rank == 0)
        optimizer.zero_grad(set_to_none=True)
        for step, batch in enumerate(bar):
            batch = {k: v.to(device, non_blocking=True) for k, v in batch.items()}
            with torch.autocast(device.type, dtype=amp_dtype or torch.float32,
                                enabled=amp_dtype is not None):
                if "hidden" in batch:  # cached tokens: the family's default loss on their logits
                    terms = {"loss_ce": criterion(token_cache.forward(model, batch).float(), batch["label"])}
                else:
                    terms = net(batch)
                loss = sum(terms.values())
            if not torch.isfinite(loss):
                raise MicrogestureError(
                    f"the loss became {loss.item()} at epoch {epoch + 1}, step {step}: lower --lr "
                    f"(now {recipe.lr}); the last good checkpoint is kept in {run}")
            scaler.scale(loss / options.accumulate).backward()
            if (step + 1) % options.accumulate == 0 or step + 1 == len(loader):
                if recipe.grad_clip > 0:
                    scaler.unscale_(optimizer)
                    nn.utils.clip_grad_norm_(model.parameters(), recipe.grad_clip)
                scaler.step(optimizer)
                scaler.update()
                optimizer.zero_grad(set_to_none=True)
                scheduler.step()
            seen += len(batch["label"]) * world
            loss_sum += loss.item() * len(batch["label"])
            for k, v in terms.items():
                term_sums[k] = term_sums.get(k, 0.0) + float(v.detach()) * len(batch["label"])
            if hasattr(bar, "set_postfix"):
                bar.set_postfix(loss=f"{loss.item():.3f}", lr=f"{scheduler.get_last_lr()[-1]:.2e}",
                                clips_s=f"{seen / (time.monotonic() - t0):.1f}", refresh=False)
        train_time = time.monotonic() - t0
        if rank != 0:
            continue
        val = validate(model, val_loader, device, criterion)
        terms_mean = {k: v / max(1, seen // world) for k, v in term_sums.items()}
        record = {"epoch": epoch + 1, "train_loss": loss_sum / max(1, seen // world), **terms_mean,
                  "lr": scheduler.get_last_lr()[-1], "clips_per_s": seen / train_time,
                  "epoch_seconds": train_time, **val}
        extra = {"epoch": epoch + 1, "epochs": recipe.epochs, **val, "run": str(run)}
        if is_better(val, best):
            best = {"top1": val["val_top1"], "loss": val["val_loss"], "epoch": epoch + 1}
            if options.keep == "best":
                save_checkpoint(model, run / KEEP_FILES["best"], extra={**extra, "kept": "best"})
        if options.keep == "last":
            save_checkpoint(model, run / KEEP_FILES["last"], extra={**extra, "kept": "last"})
        record["best_top1"] = best["top1"]
        state = {"model": model.state_dict(), "optimizer": optimizer.state_dict(),
                 "scheduler": scheduler.state_dict(), "scaler": scaler.state_dict(),
                 "rng": _rng_state(), "epoch": epoch, "best": best}
        atomic_write(run / STATE_FILE, lambda tmp: torch.save(state, tmp))
        log.write(record)
        if progress:
            parts = "".join(f" {k} {v:.3f}" for k, v in terms_mean.items()) if len(terms_mean) > 1 else ""
            print(f"epoch {epoch + 1}: loss {record['train_loss']:.3f}{parts}  val top1 "
                  f"{val['val_top1']:.3f}  best {best['top1']:.3f}  "
                  f"{record['clips_per_s']:.1f} clips/s", file=sys.stderr)
    if world > 1:
        torch.distributed.destroy_process_group()
    return {"run": str(run), "checkpoint": str(run / KEEP_FILES[options.keep]),
            "best_top1": best["top1"], "best_epoch": best["epoch"],
            "epochs_done": max(start_epoch, last_epoch), "epochs": recipe.epochs, "train_clips": len(train_set), "val_clips": len(val_set)}


class _Losses(nn.Module):
    """The family's named loss terms as a module's forward: under torchrun the
    DistributedDataParallel wrapper runs it, so the gradients of every term are
    synchronised, also of terms that never call the model's own ``forward``
    (distillation, text alignment)."""

    def __init__(self, model: nn.Module, family):
        super().__init__()
        self.model, self.family = model, family

    def forward(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        return self.family.loss(self.model, batch)


def is_better(val: dict[str, float], best: dict[str, Any]) -> bool:
    """The best-epoch rule, for small validation sets too: higher validation top-1;
    on a tie, lower validation loss (runs from before the rule have no loss: a tie
    keeps the earlier epoch)."""
    if val["val_top1"] != best["top1"]:
        return val["val_top1"] > best["top1"]
    return val["val_loss"] < best.get("loss", -math.inf)


@torch.no_grad()
def validate(model: nn.Module, loader, device: torch.device, criterion) -> dict[str, float]:
    """Top-1 and loss on a loader (one clip per item, no augmentation): the family's
    evaluation forward (or the token cache's, for cached items) and cross-entropy."""
    model.eval()
    family = family_of(model)
    correct = total = 0
    loss_sum = 0.0
    for batch in loader:
        batch = {k: v.to(device) for k, v in batch.items()}
        logits = (token_cache.forward(model, batch) if "hidden" in batch else
                  family.predict(model, batch)).float()
        loss_sum += criterion(logits, batch["label"]).item() * len(batch["label"])
        correct += int((logits.argmax(1) == batch["label"]).sum())
        total += len(batch["label"])
    return {"val_top1": correct / max(1, total), "val_loss": loss_sum / max(1, total)}


def _progress(iterable, desc: str, enabled: bool):
    if not enabled:
        return iterable
    try:
        from tqdm import tqdm
    except ImportError:  # pragma: no cover - tqdm comes with open_clip
        return iterable
    return tqdm(iterable, desc=desc, leave=False, dynamic_ncols=True,
                mininterval=0.5 if sys.stderr.isatty() else 10.0, file=sys.stderr)
