"""A bundle's stages as streaming runs them, composed with ``core.family.run_stages``.

The manifest's ``stages`` (in run order) become :class:`~microgesture.core.family.StageSpec`
(``replaces``: the field, or for bundles made before it, ``pose_segment`` replaces
``pose``). Of the stages a stream opened:

- ``per-frame`` stages (CLIP-MG's ``visual``) run once per sampled RGB frame as it arrives
  (the encoder thread); their outputs are cached per frame and stacked into the window;
- a ``per-segment`` stage (the streaming 3D CNN) runs once per pose segment
  (``stream.segments``);
- ``per-window`` and ``whole-window`` stages run on each window, batched across streams.
  Those that do not need per-frame outputs run first, while the encoder may still finish
  the window's last frames.

The window inputs a frame thread assembles (:attr:`StagePlan.window_inputs`) are the
inputs of the window stages that no opened stage produces: ``frames`` (1, R, 3, S, S)
normalised, ``heatmaps`` (1, C, P, H, W), ``joints`` (1, R, V, 3).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

import numpy as np

from microgesture.core.errors import MicrogestureError
from microgesture.core.family import StageSpec, run_stages
from microgesture.core.preprocess import normalize_frames

WINDOW_INPUTS = ("frames", "heatmaps", "joints")
_LEGACY_ROLES = {"visual": "per-frame", "pose_segment": "per-segment"}  # manifests without roles


def stage_specs(manifest: dict[str, Any]) -> list[StageSpec]:
    """The manifest's stages, in run order, as StageSpecs (no modules)."""
    out = []
    for name, stage in manifest["stages"].items():
        replaces = stage.get("replaces")
        if replaces is None:
            replaces = ["pose"] if name == "pose_segment" else []
        role = stage.get("role") or _LEGACY_ROLES.get(name, "per-window")
        out.append(StageSpec(name, role, tuple(stage.get("inputs", ())),
                             tuple(stage.get("outputs", ())), replaces=tuple(replaces)))
    return out


class StagePlan:
    """Which opened stage runs where, and the composition of a batch of windows."""

    def __init__(self, manifest: dict[str, Any], sessions: dict[str, Any]):
        self.sessions = sessions
        specs = [s for s in stage_specs(manifest) if s.name in sessions]
        replaced = {r for s in specs if s.role == "per-segment" for r in s.replaces}
        self.specs = [s for s in specs if s.name not in replaced]
        self.per_frame = [s for s in self.specs if s.role == "per-frame"]
        self.per_segment = [s for s in self.specs if s.role == "per-segment"]
        if len(self.per_segment) > 1:
            raise MicrogestureError("a bundle with more than one per-segment stage cannot stream yet")
        self.window_stages = [s for s in self.specs if s.role in ("per-window", "whole-window")]
        self.frame_outputs = tuple(o for s in self.per_frame for o in s.outputs)
        produced = {o for s in self.specs for o in s.outputs}
        needed = {i for s in self.window_stages for i in s.inputs} - produced
        needed |= {i for s in self.per_frame for i in s.inputs if i != "frames"} - produced
        unknown = needed - set(WINDOW_INPUTS)
        if unknown:
            raise MicrogestureError(f"the bundle's stages need {', '.join(sorted(unknown))}, which a "
                                    f"stream cannot produce (it gives {', '.join(WINDOW_INPUTS)})")
        self.window_inputs = tuple(k for k in WINDOW_INPUTS if k in needed)
        self.segment_input = self.per_segment[0].inputs[0] if self.per_segment else None
        # window stages that need per-frame outputs (directly or through another stage)
        late = set(self.frame_outputs)
        self.late: list[str] = []
        for s in self.window_stages:
            if late & set(s.inputs):
                self.late.append(s.name)
                late |= set(s.outputs)
        self.early = [s.name for s in self.window_stages if s.name not in self.late]
        if "logits" not in produced:
            raise MicrogestureError("no stage of the bundle outputs 'logits'; re-export the bundle")

    def _run(self, name: str, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        return self.sessions[name].run(feeds)

    def per_frame_outputs(self, crops: np.ndarray, mean, std) -> dict[str, np.ndarray]:
        """RGB crops (N, S, S, 3) uint8 -> every per-frame output, (N, ...) each."""
        frames = normalize_frames(crops, mean, std)[None]
        values = run_stages(self.per_frame, {"frames": frames}, self._run)
        return {o: values[o][0] for o in self.frame_outputs}

    def run_windows(self, parts: Sequence[Any]) -> tuple[np.ndarray, float, list[float]]:
        """The logits (B, C) of a batch of windows (``stream.recognizer.WindowPart``), the
        seconds spent waiting for the encoder thread, and each window's last encode ms."""
        from microgesture.stream.segments import segment_pose

        values: dict[str, np.ndarray] = {}
        for key in self.window_inputs:
            values[key] = np.concatenate([p.feeds[key] for p in parts]).astype(np.float32, copy=False)
        if self.per_segment:
            stage = self.per_segment[0]
            values[stage.outputs[0]] = segment_pose(self.sessions[stage.name], parts,
                                                    stage.inputs[0], stage.outputs[0])
        segments = self.segments_per_window(parts)
        values = run_stages(self.specs, values, self._run, segments, use=self.early)
        wait = time.perf_counter()
        encode_ms = [p.resolve() for p in parts]
        waited = time.perf_counter() - wait
        for key in self.frame_outputs:
            values[key] = np.concatenate([p.feeds[key] for p in parts])
        values = run_stages(self.specs, values, self._run, segments, use=self.late)
        return values["logits"], waited, encode_ms

    @staticmethod
    def segments_per_window(jobs: Sequence[Any]) -> int:
        seg = getattr(jobs[0], "segments", None)
        return len(seg.segments) if seg is not None else 0
