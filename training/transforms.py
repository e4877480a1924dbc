"""Model inputs for training and evaluation: a torch Dataset over a dataset index.

:class:`ClipDataset` item ``i`` is the window of clip ``i`` as its model family
asks (``core.family.WindowSpec``), assembled torch-free by
``core.windowing.WindowReader`` (sampling, the crop, frames, heatmaps, joints; its
docstring says how), as tensors: ``frames`` (R, 3, S, S), ``heatmaps`` (C, P, H, W),
``joints`` (R, V, 3) as the window has them, and ``label``, ``index`` int64 (the
record's position in the index).

Randomness comes from ``numpy.random.default_rng([seed, epoch, index])``: an item
is the same in every process and worker for a given (seed, epoch, index), and
different items get different crops. Call :meth:`ClipDataset.set_epoch` (or
:func:`set_epoch` on the loader) before each epoch; the epoch lives in shared
memory, so persistent workers see it.
"""

from __future__ import annotations

import logging

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from microgesture.core.dataset_index import DatasetIndex
from microgesture.core.errors import MicrogestureError
from microgesture.core.family import family_of
from microgesture.core.preprocess import _cv2
# where they were before they moved to core.windowing (old imports keep working)
from microgesture.core.windowing import (Track, VideoClip, WindowReader, challenge_frames,  # noqa: F401
                                         challenge_track, imigue_row_offsets, jsonl_track, read_imigue_rows)

log = logging.getLogger(__name__)


# ----------------------------------------------------------------------------- dataset

class ClipDataset(Dataset):
    """Model inputs for the clips of a :class:`DatasetIndex` (module docstring).

    ``config``: a model config (any registered family: its window says what an item
    holds). ``train``: random sampling, box jitter and flips.
    ``skip_bad``: a clip whose files cannot be read is logged with its path,
    counted in ``self.bad`` (per process) and replaced by the next good clip;
    otherwise it raises. Test-time views (evaluation only): view ``clip`` of
    ``num_clips`` samples each segment at ``(clip + 0.5) / num_clips`` (PoseC3D's
    multi-clip testing, evenly spread instead of random), and ``flip=True``
    mirrors the view (frames, heatmaps and joints) for flip-averaging. ``cache_size``: parsed skeleton files (and row offsets of long iMiGUE
    CSVs, whose clips are read row range by row range) kept per worker.
    """

    def __init__(self, index: DatasetIndex, config, train: bool, seed: int = 0, flip_prob: float = 0.5,
                 crop_scale: tuple[float, float] = (0.75, 1.0), skip_bad: bool = True, cache_size: int = 128,
                 clip: int = 0, num_clips: int = 1, flip: bool = False):
        if not (hasattr(config, "arch") and hasattr(config, "num_classes")):
            raise MicrogestureError(f"ClipDataset needs a model config (get_config('clip-mg-tiny'), ...), "
                                    f"got {type(config).__name__}.")
        spec = family_of(config).window(config)
        self.reader = WindowReader(spec, flip_prob, crop_scale, cache_size)
        if not 0 <= clip < num_clips:
            raise MicrogestureError(f"clip must lie in [0, num_clips), got clip={clip}, num_clips={num_clips}.")
        if train and (num_clips != 1 or flip):
            raise MicrogestureError("num_clips and flip are test-time views; for training use flip_prob.")
        if len(index) == 0:
            raise MicrogestureError(f"{index.root}: the dataset index has no clips.")
        top = max(r.label for r in index.records)
        if top >= config.num_classes:
            raise MicrogestureError(f"{index.root} has labels up to {top} ({len(index.classes)} classes) but the "
                                    f"model config {config.name!r} has {config.num_classes}; build the model with "
                                    "labels=index.classes.")
        self.needs_video = self.reader.needs_video
        if self.needs_video:
            missing = [r for r in index.records if r.video is None]
            if missing:
                raise MicrogestureError(
                    f"{len(missing)} of {len(index)} clips of {index.root} have no video (e.g. "
                    f"{missing[0].clip_id!r}), but the model {config.name!r} needs RGB frames. "
                    "Add the videos, or train a model without RGB input (CLIP-MG: modality='pose').")
        self.index, self.config, self.spec, self.train, self.seed = index, config, spec, bool(train), int(seed)
        self.skip_bad = skip_bad
        self.offset, self.flip = (clip + 0.5) / num_clips, bool(flip)
        self.decode_frames = True
        """False: items carry no ``frames`` (the token cache has them); every random draw
        (sampling, crop, flip) stays the same, so heatmaps and joints match the cached view."""
        self._epoch = torch.zeros(1, dtype=torch.int64).share_memory_()
        self.bad = 0
        self._bad_indices: set[int] = set()

    def __len__(self) -> int:
        return len(self.index)

    @property
    def epoch(self) -> int:
        return int(self._epoch[0])

    def set_epoch(self, epoch: int) -> None:
        """The epoch for the random crops and flips; seen by all workers (shared memory)."""
        self._epoch[0] = int(epoch)

    # ------------------------------------------------------------ items
    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        n = len(self.index)
        if not -n <= i < n:
            raise IndexError(f"clip {i} out of range for a dataset of {n} clips")
        i %= n
        for attempt in range(n):
            j = (i + attempt) % n
            if j in self._bad_indices:
                continue
            record = self.index.records[j]
            try:
                return self.item(j)
            except (MicrogestureError, OSError, ValueError) as e:
                where = record.video or record.skeleton
                if not self.skip_bad:
                    raise MicrogestureError(f"clip {record.clip_id!r} ({where}): {e} "
                                            "(skip_bad=True skips such clips.)") from e
                self._bad_indices.add(j)
                self.bad += 1
                log.warning("skipping clip %r (%s): %s [%d bad clip(s) so far in this process]",
                            record.clip_id, where, e, self.bad)
        raise MicrogestureError(f"{self.index.root}: none of the {n} clips could be loaded; see the warnings "
                                "above for each clip's path and reason.")

    def rng(self, i: int) -> np.random.Generator:
        """The random generator of item ``i`` in the current epoch."""
        return np.random.default_rng([self.seed, self.epoch, int(i)])

    def item(self, i: int) -> dict[str, torch.Tensor]:
        """Item ``i``, raising on a bad clip (``__getitem__`` adds the skipping)."""
        record = self.index.records[i]
        window = self.reader.read(record, self.train, self.rng(i) if self.train else None, self.offset,
                                  self.flip, self.decode_frames)
        out = {k: torch.from_numpy(v) for k, v in window.items()}
        out["label"] = torch.tensor(record.label, dtype=torch.int64)
        out["index"] = torch.tensor(i, dtype=torch.int64)
        return out


# ----------------------------------------------------------------------------- loading

class EpochShuffle(Sampler):
    """A random order of ``length`` items that depends only on (seed, epoch)."""

    def __init__(self, length: int, seed: int = 0):
        self.length, self.seed, self.epoch = length, seed, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def __iter__(self):
        return iter(np.random.default_rng([self.seed, self.epoch]).permutation(self.length).tolist())

    def __len__(self) -> int:
        return self.length


def _worker_init(worker_id: int) -> None:
    _cv2().setNumThreads(1)  # workers decode in parallel already
    torch.set_num_threads(1)


def make_loader(dataset: ClipDataset, batch_size: int, train: bool, workers: int = 0, distributed: bool = False,
                *, num_replicas: int | None = None, rank: int | None = None, drop_last: bool = False) -> DataLoader:
    """A DataLoader over ``dataset``: decoding in ``workers`` processes (persistent), a
    shuffled order per epoch when ``train``, a ``DistributedSampler`` when ``distributed``
    (``num_replicas``/``rank`` default to the initialised process group). Call
    :func:`set_epoch` before each epoch."""
    if batch_size < 1 or workers < 0:
        raise MicrogestureError(f"batch_size must be >= 1 and workers >= 0, got {batch_size} and {workers}.")
    seed = getattr(dataset, "seed", 0)
    if distributed:
        from torch.utils.data.distributed import DistributedSampler

        try:
            sampler = DistributedSampler(dataset, num_replicas=num_replicas, rank=rank, shuffle=train, seed=seed,
                                         drop_last=drop_last)
        except (RuntimeError, ValueError) as e:
            raise MicrogestureError(f"distributed loading needs torch.distributed.init_process_group() first "
                                    f"(or num_replicas and rank): {e}") from None
    elif train:
        sampler = EpochShuffle(len(dataset), seed)
    else:
        sampler = None
    # Workers come from a fork server, not from a fork of this process: a fork copies the
    # locks of this process's other threads (OpenCV's and OpenMP's pools, a stream or video
    # writer thread) as they are at that instant, and a worker that found one held hung in
    # its first cv2/torch call (seen in the test suite: the loader waited forever).
    return DataLoader(dataset, batch_size=batch_size, sampler=sampler, num_workers=workers,
                      persistent_workers=workers > 0, worker_init_fn=_worker_init if workers else None,
                      multiprocessing_context="forkserver" if workers else None, drop_last=drop_last)


def set_epoch(loader: DataLoader, epoch: int) -> None:
    """Set the epoch of a loader's dataset (crops, flips) and sampler (order)."""
    for part in (loader.dataset, loader.sampler):
        if hasattr(part, "set_epoch"):
            part.set_epoch(epoch)
