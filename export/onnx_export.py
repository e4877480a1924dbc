"""PyTorch -> ONNX, one graph per stage of a model family's staged forward pass.

A model is exported as the stages its family declares (``ModelFamily.stages``:
``core.family.StageSpec`` in run order, each with an export wrapper and example
inputs), the stages streaming composes with ``core.family.run_stages``. CLIP-MG's
are ``visual`` (per frame), ``pose`` (per window), ``pose_segment`` (per segment,
replaces ``pose`` where a runtime caches segments) and ``head`` (per window), see
``core.models.clip_mg_stages``; another family may have one ``whole-window`` stage.

Every graph has a symbolic ``batch`` axis and concrete other dims. We export
with ``torch.onnx.export(..., dynamo=True)`` from a batch-2 example (a batch of
1 would be specialised away, DESIGN.md) and ``dynamic_shapes``; if the dynamo
exporter fails, the TorchScript exporter (``dynamo=False``, ``dynamic_axes``)
is tried and the stage records which one was used. Each file passes
``onnx.checker.check_model`` and ONNX Runtime must run it at batch 1 and 3
before it is accepted. Metadata travels inside each file (``metadata_props``:
stage, role, model name, config, labels, preprocessing).
"""

from __future__ import annotations

import contextlib
import inspect
import json
import logging
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from microgesture.core.checkpoint import preprocessing
from microgesture.core.errors import MicrogestureError
from microgesture.core.family import family_of

BATCH = "batch"
MAX_BATCH = 4096


def stage_modules(model: nn.Module) -> dict[str, nn.Module]:
    """The export wrappers of the model's stages (its family's), keyed by stage name, in run order."""
    return {s.name: s.module.eval() for s in family_of(model).stages(model)}


# ----------------------------------------------------------------------------- export

def _spec(shape, dtype=torch.float32) -> dict[str, Any]:
    return {"shape": [BATCH, *[int(d) for d in shape[1:]]], "dtype": str(dtype).removeprefix("torch.")}


@contextlib.contextmanager
def _quiet():
    """Silence the exporters' chatter (warnings and onnxscript's optimizer logs)."""
    loggers = [logging.getLogger(n) for n in ("onnxscript", "torch.onnx", "torch.export",
                                               "torch._export", "torch.fx.experimental.symbolic_shapes")]
    levels = [lg.level for lg in loggers]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for lg in loggers:
            lg.setLevel(logging.ERROR)
        try:
            yield
        finally:
            for lg, level in zip(loggers, levels):
                lg.setLevel(level)


def _var_positional(module: nn.Module) -> bool:
    """Whether ``module.forward`` takes its inputs as ``*inputs``."""
    params = inspect.signature(module.forward).parameters.values()
    return any(p.kind is inspect.Parameter.VAR_POSITIONAL for p in params)


def _export_file(module: nn.Module, inputs: dict[str, Tensor], path: Path, opset: int,
                 exporter: str) -> None:
    names = list(inputs)
    args = tuple(inputs.values())
    out_names = list(module.output_names)
    with _quiet(), torch.no_grad():
        if exporter == "dynamo":
            batch = torch.export.Dim(BATCH, min=1, max=MAX_BATCH)
            axes = tuple({0: batch} for _ in names)
            # a wrapper taking *inputs gets its dynamic shapes as one nested tuple
            dynamic = (axes,) if _var_positional(module) else axes
            torch.onnx.export(module, args, str(path), input_names=names, output_names=out_names,
                              opset_version=opset, dynamo=True, dynamic_shapes=dynamic,
                              external_data=False, verbose=False)
        else:  # TorchScript cannot export nn.MultiheadAttention's fused fast path
            fastpath = torch.backends.mha.get_fastpath_enabled()
            torch.backends.mha.set_fastpath_enabled(False)
            try:
                torch.onnx.export(module, args, str(path), input_names=names,
                                  output_names=out_names, opset_version=opset, dynamo=False,
                                  dynamic_axes={n: {0: BATCH} for n in names + out_names})
            finally:
                torch.backends.mha.set_fastpath_enabled(fastpath)


def _set_metadata(path: Path, metadata: dict[str, str]) -> None:
    import onnx

    model = onnx.load(str(path))
    for prop in [p for p in model.metadata_props if p.key in metadata]:
        model.metadata_props.remove(prop)
    for key, value in metadata.items():
        model.metadata_props.add(key=key, value=value)
    onnx.save(model, str(path))


def file_metadata(model: nn.Module, stage: str, role: str) -> dict[str, str]:
    """What each ONNX file carries about itself (``metadata_props``)."""
    cfg = model.config
    return {"microgesture.stage": stage, "microgesture.role": role,
            "microgesture.model": cfg.name, "microgesture.config": cfg.to_json(),
            "microgesture.labels": json.dumps(list(cfg.labels)),
            "microgesture.preprocessing": json.dumps(preprocessing(cfg))}


def check_onnx(path: str | Path, stage: str = "") -> None:
    """``onnx.checker.check_model`` on a file, as a MicrogestureError when it fails."""
    import onnx

    try:
        onnx.checker.check_model(str(path), full_check=True)
    except (onnx.checker.ValidationError, onnx.shape_inference.InferenceError) as exc:
        raise MicrogestureError(f"the exported {stage or Path(path).name} graph {path} fails the ONNX "
                                f"checker: {exc}. Try another --opset") from exc


def ort_session(path: str | Path, threads: int = 1, disabled_optimizers: tuple[str, ...] = ()):
    """A CPU ONNX Runtime session on ``path`` (``threads`` intra-op threads, no spinning;
    ``disabled_optimizers``: ONNX Runtime optimisers to skip, see
    :data:`core.backends.FP16_DISABLED_OPTIMIZERS`)."""
    from microgesture.core.backends import cpu_session

    return cpu_session(path, threads, disabled_optimizers)


def check_dynamic_batch(path: str | Path, inputs: dict[str, Tensor], stage: str = "",
                        batches=(1, 3)) -> None:
    """Run the file at each batch size of ``batches`` (rows of ``inputs`` repeated) and
    check that every output has that batch: a specialised batch axis fails here."""
    session = ort_session(path)
    for b in batches:
        feeds = {n: np.ascontiguousarray(
            np.resize(t.numpy(), (b, *t.shape[1:])).astype(np.float32)) for n, t in inputs.items()}
        try:
            outputs = session.run(None, feeds)
        except Exception as exc:  # onnxruntime raises its own exception types
            raise MicrogestureError(f"the exported {stage} graph does not run at batch {b} in ONNX "
                                    f"Runtime ({type(exc).__name__}: {exc}); its batch axis is not "
                                    "dynamic") from exc
        for out in outputs:
            if out.shape[0] != b:
                raise MicrogestureError(f"the exported {stage} graph returned batch {out.shape[0]} "
                                        f"for an input of batch {b}; its batch axis is not dynamic")


def export_stage(module: nn.Module, inputs: dict[str, Tensor], path: str | Path, opset: int = 18,
                 exporters=("dynamo", "torchscript"),
                 output_names: tuple[str, ...] | None = None) -> dict[str, Any]:
    """Export one stage wrapper to ``path``, check it and its dynamic batch axis.
    ``output_names``: the graph's outputs (default: the wrapper's ``output_names``).

    Tries each exporter of ``exporters`` in turn; returns ``{"exporter": name}``
    plus ``"fallback_reason"`` when the first one failed.
    """
    path = Path(path)
    if output_names is not None:
        module.output_names = tuple(output_names)
    failures = []
    for exporter in exporters:
        try:
            _export_file(module, inputs, path, opset, exporter)
            check_onnx(path, path.stem)
            check_dynamic_batch(path, inputs, path.stem)
        except Exception as exc:  # any exporter failure: try the next one
            failures.append(f"{exporter}: {type(exc).__name__}: {str(exc).strip().splitlines()[0][:300]}")
            path.unlink(missing_ok=True)
            continue
        info: dict[str, Any] = {"exporter": exporter}
        if failures:
            info["fallback_reason"] = failures[0]
        return info
    raise MicrogestureError(f"could not export the {path.stem} stage to ONNX (opset {opset}): "
                            + "; ".join(failures) + ". Try another --opset or report the model")


def export_onnx(model: nn.Module, out_dir: str | Path, opset: int = 18,
                log: Callable[[str], None] | None = None) -> dict[str, dict[str, Any]]:
    """Export every stage of ``model`` (its family's ``stages``) to ``out_dir/<stage>.onnx``.

    Returns the stage manifests in run order (``core/bundle.py``): role, inputs and
    outputs (shape with a symbolic ``"batch"`` axis, dtype), ``files`` (``{"fp32":
    name}``), ``replaces`` (when the stage stands in for others) and the ``exporter``
    used (``dynamo`` or ``torchscript``).
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    model = model.eval()
    stages: dict[str, dict[str, Any]] = {}
    for spec in family_of(model).stages(model, batch=2):
        module, inputs = spec.module.eval(), dict(spec.example)
        if tuple(inputs) != tuple(spec.inputs):
            raise MicrogestureError(f"stage {spec.name}: its example inputs {list(inputs)} are not "
                                    f"its declared inputs {list(spec.inputs)}")
        if log:
            log(f"exporting the {spec.name} stage to ONNX (opset {opset})")
        with torch.no_grad():
            outputs = module(*inputs.values())
        outputs = outputs if isinstance(outputs, (tuple, list)) else (outputs,)
        if len(outputs) != len(spec.outputs):
            raise MicrogestureError(f"stage {spec.name} returned {len(outputs)} outputs but declares "
                                    f"{len(spec.outputs)} ({', '.join(spec.outputs)})")
        path = out_dir / f"{spec.name}.onnx"
        info = export_stage(module, inputs, path, opset, output_names=tuple(spec.outputs))
        _set_metadata(path, file_metadata(model, spec.name, spec.role))
        stages[spec.name] = {
            "role": spec.role,
            "inputs": {n: _spec(t.shape, t.dtype) for n, t in inputs.items()},
            "outputs": {n: _spec(t.shape, t.dtype) for n, t in zip(spec.outputs, outputs)},
            "files": {"fp32": path.name},
            **({"replaces": list(spec.replaces)} if spec.replaces else {}),
            **info,
        }
    return stages
