"""A Triton Inference Server model repository from a bundle.

::

    OUT/
      visual/config.pbtxt   visual/1/model.onnx     per-frame stage
      pose/config.pbtxt     pose/1/model.onnx       per-window stages ...
      head/config.pbtxt     head/1/model.onnx  head/labels.txt
      window/config.pbtxt   window/1/               ensemble: pose -> head

Two flavours from one bundle (``flavour=``):

- ``gpu`` (NVIDIA's Triton containers): one model per stage, platform
  ``onnxruntime_onnx`` or ``tensorrt_plan``, as below.
- ``cpu`` (the ``tritonserver`` of the ``nvidia-pytriton`` wheel, which has the
  Python backend only): each stage is a Python-backend model (``backend:
  "python"``, ``1/model.py`` from :mod:`export.triton_model`) that runs the same
  ONNX graph (``1/model.onnx``) with ONNX Runtime on the CPU, with the same names,
  shapes, batching and ensemble.

Every stage model's ``parameters`` carry ``microgesture_sha256`` (the sha256 of
the bundle file it serves, as the manifest lists it), ``microgesture_file`` and
``microgesture_precision``, so a client can check that the server serves its
bundle (:mod:`core.triton_backend`).

GPU flavour: one model per stage: platform ``onnxruntime_onnx`` (``model.onnx``, hard-linked
from the bundle when the file system allows, else copied, and a copy of any
external-data file it names) or ``tensorrt_plan``
for TensorRT engines (``model.plan``: the bare engine, without our metadata
header, which Triton would not read; ``plan.json`` beside ``config.pbtxt`` says
which TensorRT version and GPU built it: Triton loads a plan only with exactly
that TensorRT, so build the engines with the TensorRT of the Triton release you
serve with, e.g. inside its container, see :data:`PLAN_NOTE`). Each ``config.pbtxt`` declares the
inputs and outputs (dims without the batch axis), ``max_batch_size``, dynamic
batching and an instance group.

What a client sends (the bundle's ``window`` section says how many frames a
window samples, ``preprocessing`` how to normalise them):

1. every RGB frame a window samples, as it arrives: model ``visual`` with
   ``frames`` (N, 3, S, S) float32 -> ``tokens`` (N, 1 + patches, D). The
   client keeps the tokens of the last R sampled frames (a ring).
2. once per window: the ensemble ``window`` with ``tokens`` (B, R, 1 + patches,
   D) stacked from the ring, ``heatmaps`` (B, V, P, H, W) rendered from the
   skeletons, and ``joints`` (B, R, V, 3) -> ``logits`` (B, C). Inside, the
   ensemble runs the per-window stages in dependency order (``pose`` turns the
   heatmaps into ``pose`` features, ``head`` fuses them with the tokens).

The ensemble is built from the per-window stages whose outputs feed each other
by tensor name; its inputs are the tensors no per-window stage produces, its
outputs those no stage consumes. A bundle with a single per-window stage (a
pose-only ablation, or a model exporting one ``window`` stage) needs no
ensemble. Per-frame stages are never inside it: their work is done once per
frame, not once per window.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from microgesture.core.backends import FP16_DISABLED_OPTIMIZERS, read_engine_file
from microgesture.core.bundle import read_manifest, stage_file
from microgesture.core.errors import MicrogestureError

TRITON_DTYPES = {"float32": "TYPE_FP32", "float16": "TYPE_FP16", "float64": "TYPE_FP64",
                 "bfloat16": "TYPE_BF16", "int64": "TYPE_INT64", "int32": "TYPE_INT32",
                 "int16": "TYPE_INT16", "int8": "TYPE_INT8", "uint8": "TYPE_UINT8",
                 "bool": "TYPE_BOOL"}
ENSEMBLE = "window"
FLAVOURS = ("gpu", "cpu")
PYTHON_MODEL = Path(__file__).with_name("triton_model.py")
"""The Python-backend model of the CPU flavour, copied as ``<stage>/1/model.py``."""


def _dims(shape: list, where: str) -> list[int]:
    """Manifest shape -> Triton dims: the batch axis dropped, other dynamic axes -1."""
    if not shape or shape[0] != "batch":
        raise MicrogestureError(f"{where}: the first axis is {shape[:1]}, not 'batch'; Triton's "
                                "dynamic batching needs a leading batch axis (re-export the "
                                "bundle)")
    return [d if isinstance(d, int) and d >= 0 else -1 for d in shape[1:]]


def _tensor_block(kind: str, tensors: list[dict[str, Any]]) -> list[str]:
    lines = [f"{kind} ["]
    for k, t in enumerate(tensors):
        lines += ["  {", f'    name: "{t["name"]}"', f'    data_type: {t["data_type"]}',
                  f'    dims: [ {", ".join(str(d) for d in t["dims"])} ]']
        if t.get("label_filename"):
            lines.append(f'    label_filename: "{t["label_filename"]}"')
        lines.append("  }" + ("," if k < len(tensors) - 1 else ""))
    return lines + ["]"]


def _io(table: Mapping[str, Any], where: str) -> list[dict[str, Any]]:
    out = []
    for name, spec in table.items():
        dtype = spec.get("dtype", "float32")
        if dtype not in TRITON_DTYPES:
            raise MicrogestureError(f"{where}: tensor {name!r} has dtype {dtype!r}, which has no "
                                    "Triton type")
        out.append({"name": name, "data_type": TRITON_DTYPES[dtype],
                    "dims": _dims(list(spec["shape"]), f"{where} tensor {name!r}")})
    return out


def _parameters(parameters: Mapping[str, str] | None) -> list[str]:
    return [f'parameters {{ key: "{k}" value: {{ string_value: "{v}" }} }}'
            for k, v in (parameters or {}).items()]


def model_config(name: str, platform: str, inputs: list[dict], outputs: list[dict], *,
                 max_batch: int, preferred_batch: Iterable[int], max_queue_delay_us: int,
                 instance_count: int, kind: str,
                 parameters: Mapping[str, str] | None = None) -> str:
    """The text of one model's ``config.pbtxt``; ``platform`` ``python`` names the Python
    backend (``backend: "python"``), any other a platform."""
    runs = 'backend: "python"' if platform == "python" else f'platform: "{platform}"'
    lines = [f'name: "{name}"', runs, f"max_batch_size: {max_batch}"]
    lines += _tensor_block("input", inputs) + _tensor_block("output", outputs)
    preferred = [b for b in preferred_batch if b <= max_batch]
    lines.append("dynamic_batching {")
    if preferred:
        lines.append(f"  preferred_batch_size: [ {', '.join(map(str, preferred))} ]")
    lines += [f"  max_queue_delay_microseconds: {max_queue_delay_us}", "}"]
    lines += ["instance_group [", "  {", f"    count: {instance_count}", f"    kind: {kind}",
              "  }", "]"]
    lines += _parameters(parameters)
    return "\n".join(lines) + "\n"


def ensemble_steps(stages: Mapping[str, Mapping[str, Any]]) -> tuple[list[str], list[str],
                                                                     list[str]]:
    """(stage order, ensemble inputs, ensemble outputs) for chaining ``stages`` (per-window
    stage manifests) by tensor name. Refuses a cycle or a tensor two stages produce."""
    producer: dict[str, str] = {}
    for name, stage in stages.items():
        for out in stage["outputs"]:
            if out in producer:
                raise MicrogestureError(f"stages {producer[out]!r} and {name!r} both output "
                                        f"{out!r}; cannot chain them in one ensemble")
            producer[out] = name
    order: list[str] = []
    remaining = dict(stages)
    while remaining:
        ready = [n for n, s in remaining.items()
                 if all(producer.get(i) in (None, *order) for i in s["inputs"])]
        if not ready:
            raise MicrogestureError(f"stages {sorted(remaining)} depend on each other in a cycle")
        for n in ready:
            order.append(n)
            del remaining[n]
    consumed = {i for s in stages.values() for i in s["inputs"]}
    inputs = list(dict.fromkeys(i for n in order for i in stages[n]["inputs"]
                                if i not in producer))
    outputs = [o for n in order for o in stages[n]["outputs"] if o not in consumed]
    return order, inputs, outputs


def external_data_files(path: Path) -> list[str]:
    """The external-data files an ONNX graph names (``visual.onnx.data`` beside a graph
    that torch's dynamo exporter wrote), relative to the graph's directory."""
    import onnx
    from onnx.external_data_helper import ExternalDataInfo, uses_external_data
    graph = onnx.load(str(path), load_external_data=False).graph
    names = {ExternalDataInfo(t).location for t in graph.initializer if uses_external_data(t)}
    for name in names:
        if Path(name).is_absolute() or ".." in Path(name).parts:
            raise MicrogestureError(f"{path.name} keeps weights in {name}, outside its directory; "
                                    "re-export the bundle")
        if not (path.parent / name).is_file():
            raise MicrogestureError(f"{path.name} keeps its weights in {name}, which is missing "
                                    f"from {path.parent}")
    return sorted(names)


def _fresh(dst: Path) -> Path:
    """``dst`` with its directory made and any old file there removed."""
    dst.parent.mkdir(parents=True, exist_ok=True)
    if dst.exists():
        dst.unlink()
    return dst


def _place(src: Path, dst: Path, link: bool) -> None:
    _fresh(dst)
    if link:
        try:
            os.link(src, dst)
            return
        except OSError:  # another file system, or links not allowed
            pass
    shutil.copy2(src, dst)


def write_repository(bundle_dir: str | Path, out_dir: str | Path, max_batch: int = 8,
                     precision: str = "fp32", instance_count: int = 1,
                     preferred_batch: Iterable[int] = (1, 4, 8), max_queue_delay_us: int = 2000,
                     *, device: str = "gpu", link: bool = True, ensemble: bool = True,
                     flavour: str = "gpu", onnx_threads: int = 1) -> Path:
    """Write a Triton model repository for the bundle at ``bundle_dir`` into ``out_dir``.

    ``precision`` picks each stage's file from the manifest (``fp32``, ``int8``,
    ``fp16`` ONNX, or ``engine`` for TensorRT plans). ``flavour``: ``gpu``
    (ONNX Runtime and TensorRT backends, NVIDIA's containers) or ``cpu`` (Python
    backend models running ONNX Runtime with ``onnx_threads`` threads per instance,
    for the pip ``tritonserver``). ``device``: ``gpu`` or ``cpu`` instance groups
    of the ``gpu`` flavour (TensorRT plans are always ``gpu``; the ``cpu`` flavour
    always ``cpu``). Returns ``out_dir``.
    """
    manifest = read_manifest(bundle_dir)
    out = Path(out_dir)
    if not isinstance(max_batch, int) or max_batch < 1:
        raise MicrogestureError(f"max_batch must be a whole number >= 1, got {max_batch!r}")
    if not isinstance(instance_count, int) or instance_count < 1:
        raise MicrogestureError(f"instance_count must be >= 1, got {instance_count!r}")
    if device not in ("gpu", "cpu"):
        raise MicrogestureError(f"device must be 'gpu' or 'cpu', got {device!r}")
    if flavour not in FLAVOURS:
        raise MicrogestureError(f"flavour must be 'gpu' (NVIDIA's Triton containers) or 'cpu' "
                                f"(the pip tritonserver, Python backend), got {flavour!r}")
    if flavour == "cpu" and precision == "engine":
        raise MicrogestureError("the cpu flavour runs ONNX graphs with ONNX Runtime; TensorRT "
                                "engines need the gpu flavour (precision fp32, int8 or fp16)")
    if not isinstance(onnx_threads, int) or onnx_threads < 0:
        raise MicrogestureError(f"onnx_threads must be a whole number >= 0, got {onnx_threads!r}")
    if max_queue_delay_us < 0:
        raise MicrogestureError(f"max_queue_delay_us must be >= 0, got {max_queue_delay_us}")
    preferred = sorted(set(preferred_batch))
    if any(not isinstance(b, int) or b < 1 for b in preferred):
        raise MicrogestureError(f"preferred_batch sizes must be whole numbers >= 1, got "
                                f"{preferred}")
    stages = manifest["stages"]
    if not stages:
        raise MicrogestureError(f"{bundle_dir}: the bundle has no stages")
    labels = list(manifest.get("labels") or [])
    files = {name: stage_file(manifest, name, precision) for name in stages}  # checks first
    if out.resolve() == Path(manifest["root"]).resolve():
        raise MicrogestureError("write the Triton repository to a directory other than the bundle")

    for name, stage in stages.items():
        where = f"stage {name!r}"
        inputs, outputs = _io(stage["inputs"], where), _io(stage["outputs"], where)
        if labels:
            for t in outputs:
                if t["dims"] == [len(labels)]:
                    t["label_filename"] = "labels.txt"
        model_dir = out / name
        parameters = {"microgesture_sha256": manifest["files"][files[name].name]["sha256"],
                      "microgesture_file": files[name].name, "microgesture_precision": precision,
                      "microgesture_model": str(manifest["model"].get("name", ""))}
        if precision == "engine":
            metadata, engine = read_engine_file(files[name])
            limit = next((p["max"][0] for p in metadata.get("profiles", [])), None)
            if limit is not None and max_batch > limit:
                raise MicrogestureError(
                    f"{files[name].name} was built for batches up to {limit}; pass max_batch <= "
                    f"{limit}, or rebuild the engine with export.tensorrt.build_engines(max_batch=N)")
            platform, kind = "tensorrt_plan", "KIND_GPU"
            (model_dir / "1").mkdir(parents=True, exist_ok=True)
            (model_dir / "1" / "model.plan").write_bytes(engine)
            _write_plan_info(model_dir, files[name].name, metadata)
        else:
            platform, kind = "onnxruntime_onnx", f"KIND_{device.upper()}"
            if flavour == "cpu":
                platform, kind = "python", "KIND_CPU"
                parameters["onnx_threads"] = str(onnx_threads)
                if precision == "fp16":  # as core.backends.open_stage does for fp16 graphs
                    parameters["onnx_disabled_optimizers"] = ",".join(FP16_DISABLED_OPTIMIZERS)
                shutil.copyfile(PYTHON_MODEL, _fresh(model_dir / "1" / "model.py"))
            _place(files[name], model_dir / "1" / "model.onnx", link)
            # found by the name the graph holds; always copied: onnx (1.22) refuses to read
            # external data with several hard links ("potential hardlink attack")
            for data in external_data_files(files[name]):
                _place(files[name].parent / data, model_dir / "1" / data, link=False)
        if any("label_filename" in t for t in outputs):
            (model_dir / "labels.txt").write_text("\n".join(labels) + "\n")
        (model_dir / "config.pbtxt").write_text(model_config(
            name, platform, inputs, outputs, max_batch=max_batch, preferred_batch=preferred,
            max_queue_delay_us=max_queue_delay_us, instance_count=instance_count, kind=kind,
            parameters=parameters))

    window = {n: s for n, s in stages.items() if s["role"] == "per-window"}
    if ensemble and len(window) > 1:
        if ENSEMBLE in stages:
            raise MicrogestureError(f"a stage is named {ENSEMBLE!r}; cannot name the ensemble so")
        _write_ensemble(out / ENSEMBLE, window, max_batch, labels)
    return out


def _write_ensemble(model_dir: Path, stages: Mapping[str, Mapping[str, Any]], max_batch: int,
                    labels: list[str]) -> None:
    order, inputs, outputs = ensemble_steps(stages)
    specs = {}
    for s in stages.values():
        specs.update(s["inputs"])
        specs.update(s["outputs"])
    ins = _io({n: specs[n] for n in inputs}, "ensemble")
    outs = _io({n: specs[n] for n in outputs}, "ensemble")
    for t in outs:
        if labels and t["dims"] == [len(labels)]:
            t["label_filename"] = "labels.txt"
    lines = [f'name: "{model_dir.name}"', 'platform: "ensemble"', f"max_batch_size: {max_batch}"]
    lines += _tensor_block("input", ins) + _tensor_block("output", outs)
    lines += ["ensemble_scheduling {", "  step ["]
    for k, name in enumerate(order):
        lines += ["    {", f'      model_name: "{name}"', "      model_version: -1"]
        lines += [f'      input_map {{ key: "{i}" value: "{i}" }}' for i in stages[name]["inputs"]]
        lines += [f'      output_map {{ key: "{o}" value: "{o}" }}'
                  for o in stages[name]["outputs"]]
        lines.append("    }" + ("," if k < len(order) - 1 else ""))
    lines += ["  ]", "}"]
    (model_dir / "1").mkdir(parents=True, exist_ok=True)  # Triton wants a version directory
    if any("label_filename" in t for t in outs):
        (model_dir / "labels.txt").write_text("\n".join(labels) + "\n")
    (model_dir / "config.pbtxt").write_text("\n".join(lines) + "\n")


PLAN_NOTE = ("A TensorRT plan loads only in exactly the TensorRT version that built it, on the GPU "
             "model it was built for. Build it with the TensorRT inside the Triton container you "
             "serve with: docker run --gpus all -v $PWD:/w nvcr.io/nvidia/tritonserver:<yy.mm>-py3 "
             "bash -c 'pip install /w && microgesture export RUN --out /w/bundle --formats "
             "onnx,engine,triton' (the container's TensorRT is the one Triton loads plans with).")


def _write_plan_info(model_dir, engine_name: str, metadata: dict) -> None:
    """``plan.json``: the TensorRT version and GPU a plan was built with, and how to build
    one Triton loads."""
    import json

    info = {"engine": engine_name, "tensorrt": metadata.get("tensorrt"),
            "gpu": metadata.get("gpu"), "precision": metadata.get("precision"),
            "stage": metadata.get("stage"), "note": PLAN_NOTE}
    (model_dir / "plan.json").write_text(json.dumps(info, indent=1) + "\n")
