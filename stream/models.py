"""The models a stream runs: one bundle, or the members of an ensemble bundle.

An ensemble bundle (``"members": [{"bundle": "members/<name>", "weight": w}, ...]``, empty
``stages``) holds complete bundles in sub-folders; they share the window's span and
each samples its own RGB and pose frames over it (``core.sampling``). The answer is
``sum_i w_i softmax(logits_i)``; a plain bundle is the ensemble of itself with weight 1.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from microgesture.core.bundle import read_manifest
from microgesture.core.errors import MicrogestureError
from microgesture.core.manifest_schema import require_window
from microgesture.stream.segments import pose_stages
from microgesture.stream.stages import StagePlan
from microgesture.stream.startup import open_stages


@dataclass
class StreamModel:
    """One model's stages and window."""

    name: str
    manifest: dict[str, Any]
    sessions: dict[str, Any]
    plan: StagePlan
    weight: float

    @property
    def window(self) -> dict[str, Any]:
        return self.manifest["window"]

    @property
    def rgb_frames(self) -> int:
        return int(self.window.get("rgb_frames", 0))

    @property
    def pose_frames(self) -> int:
        return int(self.window.get("pose_frames", 0))

    @property
    def mean(self):
        return self.manifest["preprocessing"].get("mean")

    @property
    def std(self):
        return self.manifest["preprocessing"].get("std")

    def close(self) -> None:
        for s in self.sessions.values():
            s.close()


def member_bundles(manifest: dict[str, Any], bundle: Any) -> list[tuple[Path, float]]:
    """An ensemble's member folders and weights, from a manifest ``read_manifest`` checked
    (``core.manifest_schema``: members inside the bundle, weights >= 0 summing to 1).
    Members of weight 0 (the weight search may give one nothing) are left out: they would
    not change the answer, so they are not run."""
    root = Path(manifest.get("root", str(bundle)))
    return [(root / m["bundle"], float(m["weight"])) for m in manifest["members"] if m["weight"] > 0]


def open_models(manifest: dict[str, Any], bundle: Any, precision: str, segment_cache: bool = True,
                **options) -> list[StreamModel]:
    """The bundle's models with their stages open (nothing stays open when this raises)."""
    if not manifest.get("members"):
        require_window(manifest, bundle)
        sessions = open_stages(manifest, pose_stages(manifest, segment_cache), bundle,
                               precision=precision, **options)
        return [_model(manifest["model"]["name"], manifest, sessions, 1.0)]
    require_window(manifest, bundle)
    models: list[StreamModel] = []
    try:
        for path, weight in member_bundles(manifest, bundle):
            member = read_manifest(path)
            if list(member["labels"]) != list(manifest["labels"]):
                raise MicrogestureError(f"ensemble member {path} has other labels than the ensemble; "
                                        "re-export it")
            require_window(member, path)
            have = {p for s in member["stages"].values() for p in s.get("files", {})}
            sessions = open_stages(member, pose_stages(member, segment_cache), path,
                                   precision=precision if precision in have else "fp32", **options)
            models.append(_model(member["model"]["name"], member, sessions, weight))
    except BaseException:
        for m in models:
            m.close()
        raise
    layouts = {m.window["layout"] for m in models if reads_pose(m)}
    if len(layouts) > 1:
        for m in models:
            m.close()
        raise MicrogestureError(f"the ensemble's members use different layouts ({', '.join(sorted(layouts))}); "
                                "a stream estimates one pose for all of them")
    return models


def reads_pose(model: StreamModel) -> bool:
    """Whether the model reads pose (heatmaps or joints) in its layout; a model that only
    reads RGB crops (the video CLIP student) takes any layout's keypoints for its box."""
    plan = model.plan
    return bool(plan.per_segment) or "heatmaps" in plan.window_inputs or "joints" in plan.window_inputs


def pose_layout(models: list[StreamModel]) -> str:
    """The layout the stream estimates pose in: the pose-reading models' (one, checked by
    :func:`open_models`), else the first model's."""
    return next((m.window["layout"] for m in models if reads_pose(m)), models[0].window["layout"])


def _model(name: str, manifest: dict[str, Any], sessions: dict[str, Any], weight: float) -> StreamModel:
    try:
        plan = StagePlan(manifest, sessions)
    except BaseException:
        for s in sessions.values():
            s.close()
        raise
    return StreamModel(name, manifest, sessions, plan, weight)
