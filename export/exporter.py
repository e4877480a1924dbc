"""``microgesture export``: a trained model -> a verified, self-describing bundle.

:func:`export_bundle` takes a run folder (its ``best.safetensors``; ``run.json``
names the training data, whose held-out clips verify the export) or a
checkpoint file, and writes a bundle (``core/bundle.py``) with the formats asked
for. :data:`FORMATS` is the one table of formats; every format's requirements
are checked BEFORE any work starts, and an unknown name gets the nearest one
suggested.

Steps: fp32 ONNX per stage (``export.onnx_export``), verified against PyTorch
(``export.verify``); then each further format, each verified at its own
tolerance where this machine can run it; the manifest last. Everything is
written into a temporary sibling folder that is renamed onto ``out`` only when
all of it succeeded, so a failed or interrupted export never leaves a half
bundle (an existing bundle at ``out`` is replaced only then; any other
non-empty folder is refused).

Real clips (verification and int8 calibration) are read from a dataset folder
(``core.dataset_index`` and ``core.windowing``, by ``export.verify.load_clips``);
without one, synthetic windows stand in and the manifest says so.
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import sys
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from microgesture.core.bundle import FORMAT as BUNDLE_FORMAT
from microgesture.core.bundle import MANIFEST, read_manifest, sha256_file, write_manifest
from microgesture.core.errors import MicrogestureError, UnknownNameError

CHECKPOINT = "best.safetensors"
RUN_FILE = "run.json"
DEFAULT_FPS = 30.0
VERIFY_CLIPS = 8
DEFAULT_SPAN_S = 2.67
"""The window span of a bundle made without a dataset (``--span`` overrides it): our
synthetic set's median clip (80 frames at 30 fps); iMiGUE's clips average 2.55 s. A
window is sampled over a whole gesture, never a silent ``pose_frames / fps``."""


# ----------------------------------------------------------------------------- formats

def _missing_modules(*names: str) -> list[str]:
    out = []
    for name in names:
        try:
            found = importlib.util.find_spec(name) is not None
        except (ImportError, ValueError):
            found = False
        if not found:
            out.append(name)
    return out


def _cuda_gpu() -> bool:
    try:
        import torch
        return bool(torch.cuda.is_available())
    except Exception:  # a broken CUDA install counts as no GPU
        return False


def _needs_onnx() -> list[str]:
    return _missing_modules("onnx", "onnxruntime")


def _needs_int8() -> list[str]:
    return _missing_modules("onnxruntime.quantization")


def _needs_fp16() -> list[str]:
    return _missing_modules("microgesture.export.tensorrt")


def _needs_engine() -> list[str]:
    missing = _missing_modules("microgesture.export.tensorrt", "tensorrt")
    if not _cuda_gpu():
        missing.append("an NVIDIA GPU with CUDA (none is visible)")
    return missing


def _needs_triton() -> list[str]:
    return _missing_modules("microgesture.export.triton")


@dataclass(frozen=True)
class ExportFormat:
    """One export format: what it writes and what it needs."""

    name: str
    writes: str
    description: str
    needs: Callable[[], list[str]]
    """Missing requirements on this machine (empty: usable)."""
    fix: str
    """How to get what is missing."""


FORMATS: dict[str, ExportFormat] = {f.name: f for f in (
    ExportFormat("onnx", "<stage>.onnx", "fp32 ONNX graphs, one per stage (always written)",
                 _needs_onnx, "pip install onnx onnxruntime (the 'train' extra)"),
    ExportFormat("int8", "<stage>.int8.onnx",
                 "int8 for CPUs: dynamic (visual, head), static QDQ calibrated on clips (pose)",
                 _needs_int8, "pip install onnxruntime"),
    ExportFormat("fp16", "<stage>.fp16.onnx", "fp16 ONNX with LayerNorm/Softmax kept fp32 (GPUs)",
                 _needs_fp16, "update microgesture (export.tensorrt provides the fp16 conversion)"),
    ExportFormat("engine", "<stage>.fp16.engine", "TensorRT engines (fp16, strongly typed)",
                 _needs_engine, "pip install tensorrt (from NVIDIA's index) on a machine with an "
                 "NVIDIA GPU, and export there"),
    ExportFormat("triton", "triton/, triton-cpu/",
                 "Triton Inference Server model repositories (GPU and CPU flavours)",
                 _needs_triton, "update microgesture (export.triton writes the repository)"),
)}
"""The export formats (ultralytics style): checked before any work starts."""

ALIASES = {"tensorrt": "engine", "trt": "engine", "onnx-int8": "int8", "onnx-fp16": "fp16"}


def describe_formats() -> str:
    """The format table as text (for ``--help``), with what this machine lacks."""
    rows = []
    for f in FORMATS.values():
        missing = f.needs()
        rows.append(f"{f.name:<7} {f.writes:<20} {f.description}"
                    + (f"  [needs {', '.join(missing)}]" if missing else ""))
    return "\n".join(rows)


def parse_formats(formats: str | Iterable[str]) -> tuple[str, ...]:
    """Format names from ``"onnx,int8"`` or a sequence, checked and ordered as
    :data:`FORMATS`; ``onnx`` is always included (every other format starts from it)."""
    if isinstance(formats, str):
        formats = formats.split(",")
    names = set()
    for raw in formats:
        name = str(raw).strip().lower()
        if not name:
            continue
        name = ALIASES.get(name, name)
        if name not in FORMATS:
            raise UnknownNameError("export format", name, FORMATS)
        names.add(name)
    names.add("onnx")
    return tuple(n for n in FORMATS if n in names)


def check_formats(formats: Iterable[str]) -> None:
    """Raise, naming everything missing, when a format cannot be made here."""
    problems = []
    for name in formats:
        missing = FORMATS[name].needs()
        if missing:
            problems.append(f"the {name} format needs {', '.join(missing)}: {FORMATS[name].fix}")
    if problems:
        raise MicrogestureError("; ".join(problems) + ". Nothing was exported")


# ----------------------------------------------------------------------------- inputs

def resolve_source(run_or_checkpoint: str | os.PathLike) -> tuple[Path, dict[str, Any] | None]:
    """``(checkpoint, run_info)`` for a run folder (its kept checkpoint, see
    ``core.checkpoint.run_checkpoint``, and ``run.json``) or a checkpoint file
    (``.safetensors``, or the trainer's ``last.pt``) (``run_info`` None, or the run.json beside it)."""
    from microgesture.core.checkpoint import run_checkpoint

    path = Path(os.fspath(run_or_checkpoint))
    if path.is_dir():
        if not (path / RUN_FILE).is_file() and not (path / CHECKPOINT).is_file():
            raise MicrogestureError(f"{path} is a folder without {CHECKPOINT}: give a training run "
                                    "folder (microgesture train --out RUN) or a checkpoint file")
        checkpoint = run_checkpoint(path)
    elif path.is_file():
        checkpoint = path
    else:
        raise MicrogestureError(f"{path} does not exist: give a training run folder or a "
                                ".safetensors checkpoint")
    run_info = None
    run_file = checkpoint.parent / RUN_FILE
    if run_file.is_file():
        try:
            run_info = json.loads(run_file.read_text())
        except (OSError, json.JSONDecodeError):
            run_info = None
    return checkpoint, run_info


def data_fps(data: str | os.PathLike | None) -> tuple[float, str]:
    """The frame rate of a dataset folder's clips and where it came from: a synthetic
    set's ``synth.json``, else the first video's own rate, else 30 (``default``)."""
    if data is None:
        return DEFAULT_FPS, "default"
    root = Path(os.fspath(data))
    synth = root / "synth.json"
    if synth.is_file():
        try:
            fps = float(json.loads(synth.read_text())["params"]["fps"])
            if fps > 0:
                return fps, "synth.json"
        except (OSError, ValueError, KeyError, TypeError):
            pass
    for folder in (root / "videos", root):
        for ext in (".mp4", ".avi", ".mkv", ".mov"):
            for video in sorted(folder.glob(f"*{ext}"))[:1]:
                from microgesture.core.video import probe_video

                info = probe_video(video)
                if info is not None and info.fps:
                    return info.fps, f"video {video.name}"
    return DEFAULT_FPS, "default"


def _is_bundle(path: Path) -> bool:
    try:
        return json.loads((path / MANIFEST).read_text()).get("format") == BUNDLE_FORMAT
    except (OSError, ValueError, AttributeError):
        return False


def check_out(out: Path) -> None:
    """Refuse an ``out`` that is a file or a non-empty folder that is not a bundle."""
    if out.exists() and not out.is_dir():
        raise MicrogestureError(f"--out {out} is a file; give a folder for the bundle")
    if out.is_dir() and any(out.iterdir()) and not _is_bundle(out):
        raise MicrogestureError(f"--out {out} is a non-empty folder that is not a microgesture "
                                "bundle; refusing to overwrite it: choose a new or empty folder")


def _versions(stages: dict[str, Any], opset: int) -> dict[str, Any]:
    from importlib.metadata import PackageNotFoundError, version

    out: dict[str, Any] = {}
    for pkg in ("microgesture", "torch", "onnx", "onnxruntime", "onnxscript", "open_clip_torch",
                "numpy"):
        try:
            out[pkg] = version(pkg)
        except PackageNotFoundError:
            pass
    out["opset"] = opset
    used = sorted({s.get("exporter", "dynamo") for s in stages.values()})
    out["exporter"] = used[0] if len(used) == 1 else "+".join(used)
    return out


class _Progress:
    def __init__(self, on: bool):
        self.on, self.t0 = on, time.monotonic()

    def __call__(self, message: str) -> None:
        if self.on:
            print(f"export [{time.monotonic() - self.t0:6.1f}s] {message}", file=sys.stderr, flush=True)


def _merge_files(stages: dict[str, dict[str, Any]], entries: dict[str, dict[str, str]]) -> None:
    for stage, files in entries.items():
        stages[stage]["files"].update(files)


def _window_summary(report: dict[str, Any]) -> str:
    w = report["window"].get("real", {})
    return (f"window top-1 agreement {w.get('top1_agreement', float('nan')):.3f}, logits max abs "
            f"{w.get('max_abs', float('nan')):.2g}, cosine {w.get('cosine', float('nan')):.5f}")


# ----------------------------------------------------------------------------- the command

def export_bundle(run_or_checkpoint, out, formats=("onnx",), verify=True, data=None,
                  calibration_clips=16, opset=18, progress=True,
                  span_s: float | None = None) -> dict[str, Any]:
    """Export a run folder or checkpoint to the bundle folder ``out``; returns a summary.

    ``formats``: names of :data:`FORMATS` (a sequence or ``"onnx,int8"``).
    ``verify``: check every written precision against PyTorch (``export.verify``)
    and fail when it is outside tolerance. ``data``: a dataset folder for real
    verification and calibration clips (default: the run's training data, if it
    still exists). ``calibration_clips``: int8 calibration windows.
    ``progress``: progress lines on stderr. ``span_s``: the seconds a streamed window
    covers (default: the training clips' median length, else :data:`DEFAULT_SPAN_S`).
    """
    # ---- everything that can be checked before work starts
    wanted = parse_formats(formats)
    check_formats(wanted)
    if not isinstance(opset, int) or not 13 <= opset <= 23:
        raise MicrogestureError(f"--opset must be an integer from 13 to 23, got {opset!r}")
    if not isinstance(calibration_clips, int) or calibration_clips < 1:
        raise MicrogestureError(f"calibration_clips must be a positive integer, got {calibration_clips!r}")
    if span_s is not None and not (isinstance(span_s, (int, float)) and 0.1 <= span_s <= 60):
        raise MicrogestureError(f"--span must be the seconds a window covers, from 0.1 to 60, "
                                f"got {span_s!r}")
    checkpoint, run_info = resolve_source(run_or_checkpoint)
    if data is not None:
        data = Path(os.fspath(data))
        if not data.is_dir():
            raise MicrogestureError(f"--data {data} is not a folder; give the dataset folder the "
                                    "model was trained on, or leave --data out")
    say = _Progress(progress)
    if data is None and run_info:
        run_data = Path(str(run_info.get("options", {}).get("data", "")))
        if str(run_data) and run_data.is_dir():
            data = run_data
        elif str(run_data):
            say(f"the run's data folder {run_data} is gone: verifying on synthetic windows "
                "(give --data DIR for real clips)")
    out = Path(os.fspath(out)).absolute()
    check_out(out)

    from microgesture.core.checkpoint import describe, load_checkpoint, preprocessing

    model, meta = load_checkpoint(checkpoint)
    say(f"exporting {describe(checkpoint, meta)}")
    cfg = model.config
    fps, fps_source = data_fps(data)
    test_subjects = (run_info or {}).get("split", {}).get("test_subjects") if data else None

    out.parent.mkdir(parents=True, exist_ok=True)
    _remove_stale(out)
    tmp = out.parent / f".{out.name}.partial-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        summary = _build(model, meta, checkpoint, run_info, tmp, wanted, verify, data, test_subjects,
                         calibration_clips, opset, fps, fps_source, say, preprocessing(cfg), span_s)
        _replace(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    summary["bundle"] = str(out)
    summary["checkpoint"] = describe(checkpoint, meta)
    say(f"wrote {out} ({summary['bytes'] / 1e6:.1f} MB)")
    return summary


def _build(model, meta, checkpoint, run_info, tmp, wanted, verify, data, test_subjects,
           calibration_clips, opset, fps, fps_source, say, prep, span_s=None) -> dict[str, Any]:
    from microgesture.export.onnx_export import export_onnx
    from microgesture.export.verify import VerificationError, load_clips, synthetic_windows, verify_bundle

    cfg = model.config
    t0 = time.monotonic()
    stages = export_onnx(model, tmp, opset=opset, log=say)

    real, calibration, clips_info = None, None, {"data": None}
    if data is not None and (verify or "int8" in wanted):
        say(f"reading verification and calibration clips from {data}")
        real, calibration, clips_info = load_clips(data, cfg, verify_clips=VERIFY_CLIPS,
                                                   calibration_clips=calibration_clips,
                                                   test_subjects=test_subjects)

    verification: dict[str, Any] = {}
    reference: dict = {}  # PyTorch outputs on the verification inputs, computed once

    def check(precision: str) -> None:
        if not verify:
            verification[precision] = {"passed": None, "skipped": "exported without verification"}
            return
        say(f"verifying {precision} against PyTorch")
        try:
            report = verify_bundle(model, tmp, stages, precision, real, cache=reference)
        except VerificationError as exc:
            raise VerificationError(f"{exc}; nothing was written (export with --no-verify to keep "
                                    "an unverified bundle)", exc.report) from exc
        if clips_info["data"]:
            report["inputs"]["real"]["clips"] = clips_info
        verification[precision] = report
        say(f"{precision} passed: {_window_summary(report)}")

    check("fp32")
    if "int8" in wanted:
        if calibration is not None:
            calib_source = str(data)
        else:
            calibration, calib_source = synthetic_windows(cfg, windows=calibration_clips, seed=1), "synthetic"
        heatmaps = calibration["heatmaps"].numpy() if "heatmaps" in calibration else None
        from microgesture.export.quantize import quantize_stages

        quantize_stages(tmp, stages, heatmaps, log=say)
        for stage in stages.values():
            if stage["quantization"]["int8"]["method"] == "static-qdq":
                stage["quantization"]["int8"]["calibration_source"] = calib_source
        check("int8")
        if verify:
            report = verification["int8"]
            acc = report.get("accuracy")
            if acc:
                say(f"int8 accuracy on {acc['clips']} clips: top-1 {acc['top1_onnx_int8']:.3f} "
                    f"(PyTorch fp32 {acc['top1_pytorch_fp32']:.3f})")
    if "fp16" in wanted:
        from microgesture.export.tensorrt import write_fp16_onnx

        say("converting the stages to fp16 ONNX")
        _merge_files(stages, write_fp16_onnx(tmp, stages))
        check("fp16")
    if "engine" in wanted:
        from microgesture.export.tensorrt import build_engines

        say("building TensorRT engines")
        _merge_files(stages, build_engines(tmp, stages))
        verification["engine"] = {"passed": None,
                                  "skipped": "TensorRT engines are checked by the runtime on the GPU"}

    source: dict[str, Any] = {"checkpoint": str(checkpoint.absolute()),
                              "sha256": sha256_file(checkpoint), "extra": meta.get("extra", {})}
    if run_info is not None:
        source["run"] = str(checkpoint.parent.absolute())
    # A window is sampled over a whole training clip, so it spans a typical clip
    if span_s is not None:
        span, span_source = float(span_s), "given (--span)"
    elif clips_info.get("median_clip_frames"):
        span, span_source = clips_info["median_clip_frames"] / fps, "median training clip"
    else:
        span, span_source = DEFAULT_SPAN_S, "default: the synthetic set's median clip (no clip lengths known)"
    manifest = {
        "model": {"name": cfg.name, "arch": cfg.arch, "config": cfg.to_dict()},
        "labels": list(cfg.labels),
        "prompts": None,
        "preprocessing": prep,
        "window": window_section(cfg, span, span_source, fps, fps_source),
        "stages": stages,
        "verification": verification,
        "versions": _versions(stages, opset),
        "source": source,
    }
    write_manifest(tmp, manifest)
    if "triton" in wanted:
        from microgesture.export.triton import write_repository

        say("writing the Triton model repositories (gpu: triton/, cpu: triton-cpu/)")
        write_repository(tmp, tmp / "triton")
        write_repository(tmp, tmp / "triton-cpu", flavour="cpu",
                         precision="int8" if "int8" in wanted else "fp32")
    read_manifest(tmp)  # what a runtime will check, checked now
    files = {p.name: p.stat().st_size for p in tmp.iterdir() if p.is_file()}
    return {"formats": list(wanted), "stages": {n: dict(s["files"]) for n, s in stages.items()},
            "verification": {p: r.get("passed") for p, r in verification.items()},
            "int8_agreement": (verification.get("int8", {}).get("window", {}).get("real", {})
                               .get("top1_agreement")),
            "accuracy": {p: r["accuracy"] for p, r in verification.items()
                         if isinstance(r, dict) and "accuracy" in r},
            "exporter": manifest["versions"]["exporter"], "files": files,
            "bytes": sum(p.stat().st_size for p in tmp.rglob("*") if p.is_file()),
            "seconds": round(time.monotonic() - t0, 2)}


def window_section(cfg, span: float, span_source: str, fps: float,
                   fps_source: str) -> dict[str, Any]:
    """The bundle's ``window`` section (notes/MANIFEST.md): the sampling (rgb and pose
    frames over ``span`` seconds at ``fps``), the preprocessing from the family's
    window (``core.family.WindowSpec``; its ``spec`` in full) and the family's own
    fields (``ModelFamily.window_manifest``)."""
    from microgesture.core.family import family_of

    family = family_of(cfg)
    spec = family.window(cfg)
    window: dict[str, Any] = {"rgb_frames": cfg.rgb_frames, "pose_frames": cfg.pose_frames,
                              "span_s": round(span, 4), "span_source": span_source,
                              "fps": fps, "fps_source": fps_source, "layout": spec.layout}
    if spec.heatmaps is not None:
        window.update(heatmap_size=spec.heatmaps.size, sigma=spec.heatmaps.sigma)
    if spec.rgb_frames:
        window["image_size"] = spec.image_size
    window.update(family.window_manifest(cfg))
    if spec.heatmaps is not None:
        window.update(heatmap_kind=spec.heatmaps.kind, heatmap_crop=spec.heatmaps.crop)
        if spec.heatmaps.kind == "limbs":
            window["limbs"] = spec.heatmaps.limbs
    window["joints"] = bool(spec.joints)
    if spec.segments:
        window["segments"] = spec.segments
    window["spec"] = spec.to_dict()
    return window


def _remove_stale(out: Path) -> None:
    """Remove the temporary folders (``.NAME.partial-PID``, ``.NAME.old-PID``) of
    exports of ``out`` whose process died without cleaning up (killed, crashed)."""
    for path in out.parent.glob(f".{out.name}.*-*"):
        kind, _, pid = path.name[len(out.name) + 2:].rpartition("-")
        if kind not in ("partial", "old") or not pid.isdigit():
            continue
        try:
            os.kill(int(pid), 0)
        except ProcessLookupError:
            if kind == "old" and not out.exists():  # died between the two renames: restore
                os.replace(path, out)
            else:
                shutil.rmtree(path, ignore_errors=True)
        except PermissionError:  # alive, someone else's
            pass


def _replace(tmp: Path, out: Path) -> None:
    """Move the finished bundle ``tmp`` onto ``out`` (an old bundle there is replaced
    only now, an empty folder removed)."""
    old = None
    if out.is_dir():
        if any(out.iterdir()):
            old = out.parent / f".{out.name}.old-{os.getpid()}"
            shutil.rmtree(old, ignore_errors=True)
            os.replace(out, old)
        else:
            out.rmdir()
    os.replace(tmp, out)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)
