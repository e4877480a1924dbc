"""INT8 stages for CPUs (ONNX Runtime quantization).

Which method a stage gets follows from its inputs (:func:`method_for`), not its name.

- stages over frames or features (CLIP-MG's ``visual`` and ``head``; transformers: matrix products): DYNAMIC int8 --
  ``quantize_dynamic`` with int8 weights on MatMul/Gemm; activations are
  quantized on the fly, so no calibration is needed. ViT-B/16 runs about 2.5x
  faster at a cosine of 0.9998 to fp32 (DESIGN.md). Weights use 7 bits
  (``reduce_range``): on x86 CPUs without VNNI (AVX2 only) ONNX Runtime's
  uint8 x int8 kernels add pairs of products in 16 bits and saturate with full
  8-bit weights. Measured on an AVX2-only AMD EPYC with onnxruntime 1.32, the
  tiny test model's int8 head fell to a cosine of 0.974 to fp32 with 8-bit
  weights and is at 0.99995 with 7-bit ones. A bundle runs on CPUs other than
  the one that exported it, so the export does not depend on the exporting CPU.
- stages over heatmaps only (CLIP-MG's ``pose``; 3D convolutions): STATIC int8 in QDQ format -- ``quantize_static``
  with per-channel int8 weights and uint8 activations whose ranges come from a
  few calibration windows' heatmaps (a :class:`HeatmapReader`). Dynamic int8 on
  convolutions is several times SLOWER than fp32 in ONNX Runtime (DESIGN.md).
  The dynamo exporter writes ``graph.value_info`` entries that the quantizer's
  own shape inference trips over, so they are cleared first, and the graph goes
  through ``quant_pre_process`` (Conv + BatchNorm folding, shapes) when it can.

Files are written beside the fp32 ones as ``<stage>.int8.onnx``. The accuracy
change is measured by ``export.verify`` (int8 against fp32, and against the
labels when calibration/verification clips have them).
"""

from __future__ import annotations

import contextlib
import logging
import tempfile
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import numpy as np

from microgesture.core.errors import MicrogestureError

DYNAMIC_OPS = ("MatMul", "Gemm")


def method_for(stage: dict[str, Any]) -> str:
    """How a stage is quantized, from what it reads: a stage that reads only
    ``heatmaps`` is a CNN over pose maps (CLIP-MG's ``pose`` and ``pose_segment``, a
    PoseC3D): static QDQ calibrated on heatmaps; anything else (transformers over
    frames or earlier stages' outputs): dynamic."""
    return "static-qdq" if list(stage.get("inputs", {})) == ["heatmaps"] else "dynamic"


def _require_quantization():
    try:
        from onnxruntime import quantization
    except ImportError as exc:  # pragma: no cover - depends on the install
        raise MicrogestureError("int8 export needs onnxruntime with its quantization tools: "
                                "pip install onnxruntime") from exc
    return quantization


class _DropPreprocessHint(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return "pre-processing before quantization" not in record.getMessage()


@contextlib.contextmanager
def _quiet():
    """Drop the quantizer's "consider pre-processing" hint (we pre-process where it helps)."""
    root, hint = logging.getLogger(), _DropPreprocessHint()
    root.addFilter(hint)
    try:
        yield
    finally:
        root.removeFilter(hint)


def _copy_metadata(src: Path, dst: Path, precision: str) -> None:
    """Carry the fp32 file's ``metadata_props`` over to the quantized one."""
    import onnx

    source = onnx.load(str(src), load_external_data=False)
    model = onnx.load(str(dst))
    keys = {p.key for p in model.metadata_props}
    for prop in source.metadata_props:
        if prop.key not in keys:
            model.metadata_props.add(key=prop.key, value=prop.value)
    for prop in [p for p in model.metadata_props if p.key == "microgesture.precision"]:
        model.metadata_props.remove(prop)
    model.metadata_props.add(key="microgesture.precision", value=precision)
    onnx.save(model, str(dst))


def _without_value_info(src: Path, dst: Path) -> Path:
    import onnx

    model = onnx.load(str(src))
    del model.graph.value_info[:]
    onnx.save(model, str(dst))
    return dst


def quantize_dynamic_stage(src: str | Path, dst: str | Path) -> dict[str, Any]:
    """Dynamic int8 (int8 weights on MatMul/Gemm) of ``src`` into ``dst``."""
    q = _require_quantization()
    src, dst = Path(src), Path(dst)
    with tempfile.TemporaryDirectory(dir=dst.parent, prefix=".quant-") as tmp:
        clean = _without_value_info(src, Path(tmp) / src.name)
        with _quiet():
            q.quantize_dynamic(str(clean), str(dst), op_types_to_quantize=list(DYNAMIC_OPS),
                               weight_type=q.QuantType.QInt8, per_channel=False, reduce_range=True)
    _copy_metadata(src, dst, "int8")
    return {"method": "dynamic", "weights": "int8", "ops": list(DYNAMIC_OPS)}


class HeatmapReader:
    """A ``CalibrationDataReader`` over windows of one input (``name``): each item of
    ``arrays`` (N, ...) is fed as batch 1."""

    def __init__(self, arrays: np.ndarray, name: str = "heatmaps"):
        self.arrays = np.asarray(arrays, dtype=np.float32)
        self.name = name
        self._next = 0

    def get_next(self) -> dict[str, np.ndarray] | None:
        if self._next >= len(self.arrays):
            return None
        item = self.arrays[self._next:self._next + 1]
        self._next += 1
        return {self.name: np.ascontiguousarray(item)}

    def rewind(self) -> None:
        self._next = 0

    def __len__(self) -> int:
        return len(self.arrays)


def quantize_static_stage(src: str | Path, dst: str | Path, calibration: np.ndarray,
                          input_name: str = "heatmaps", for_tensorrt: bool = False
                          ) -> dict[str, Any]:
    """Static int8 in QDQ format (per-channel int8 weights, uint8 activations
    calibrated by min/max over ``calibration`` (N, ...)) of ``src`` into ``dst``.

    ``for_tensorrt=True``: signed, symmetric int8 activations and weights (every zero
    point 0), which is what TensorRT builds INT8 engines from; ONNX Runtime's CPU
    default (unsigned, asymmetric activations) cannot build there."""
    q = _require_quantization()
    if calibration is None or len(calibration) == 0:
        raise MicrogestureError("static int8 quantization needs calibration windows; give a dataset "
                                "folder (--data DIR) or let the exporter draw synthetic ones")
    src, dst = Path(src), Path(dst)
    base = q.CalibrationDataReader

    class Reader(HeatmapReader, base):  # the base class is onnxruntime's ABC
        pass

    with tempfile.TemporaryDirectory(dir=dst.parent, prefix=".quant-") as tmp:
        clean = _without_value_info(src, Path(tmp) / "clean.onnx")
        prepared = Path(tmp) / "prepared.onnx"
        try:
            from onnxruntime.quantization.shape_inference import quant_pre_process

            quant_pre_process(str(clean), str(prepared), skip_symbolic_shape=True)
            preprocess = True
        except Exception:  # pre-processing only helps; the quantizer works without it
            prepared, preprocess = clean, False
        with _quiet():
            q.quantize_static(str(prepared), str(dst), Reader(calibration, input_name),
                              quant_format=q.QuantFormat.QDQ, per_channel=True, reduce_range=False,
                              activation_type=(q.QuantType.QInt8 if for_tensorrt
                                               else q.QuantType.QUInt8),
                              weight_type=q.QuantType.QInt8,
                              calibrate_method=q.CalibrationMethod.MinMax,
                              extra_options=({"ActivationSymmetric": True,
                                              "WeightSymmetric": True} if for_tensorrt else {}))
    _copy_metadata(src, dst, "int8")
    return {"method": "static-qdq", "weights": "int8 per-channel",
            "activations": "int8 symmetric" if for_tensorrt else "uint8",
            "calibration": "minmax", "calibration_windows": int(len(calibration)),
            "pre_processed": preprocess}


def quantize_stages(bundle_dir: str | Path, stages: dict[str, dict[str, Any]],
                    calibration_heatmaps: np.ndarray | None,
                    log: Callable[[str], None] | None = None,
                    only: Iterable[str] | None = None) -> dict[str, dict[str, Any]]:
    """Write ``<stage>.int8.onnx`` for every stage (``only``: a subset) of a bundle
    being built, and record it in the stage manifests (``files["int8"]`` and
    ``quantization``). ``calibration_heatmaps`` (N, V, P, H, W) calibrate the pose
    stage. Returns ``stages``, updated in place."""
    bundle_dir = Path(bundle_dir)
    for name, stage in stages.items():
        if only is not None and name not in only:
            continue
        src = bundle_dir / stage["files"]["fp32"]
        dst = bundle_dir / f"{name}.int8.onnx"
        method = method_for(stage)
        if log:
            log(f"quantizing the {name} stage to int8 ({method})")
        try:
            if method == "static-qdq":
                info = quantize_static_stage(src, dst, _stage_calibration(stage, calibration_heatmaps),
                                             next(iter(stage["inputs"])))
            else:
                info = quantize_dynamic_stage(src, dst)
        except MicrogestureError:
            raise
        except Exception as exc:
            raise MicrogestureError(f"int8 quantization of the {name} stage failed: "
                                    f"{type(exc).__name__}: {exc}. Export without the int8 format") from exc
        from microgesture.export.onnx_export import check_onnx

        check_onnx(dst, f"{name} int8")
        stage["files"]["int8"] = dst.name
        stage.setdefault("quantization", {})["int8"] = info
    return stages


def _stage_calibration(stage: dict[str, Any], heatmaps: np.ndarray | None) -> np.ndarray | None:
    """The calibration inputs of a static stage: the windows' heatmaps (N, V, P, H, W), or for
    a per-segment stage the same windows cut into their segments (N * P/F, V, F, H, W)."""
    if heatmaps is None or stage.get("role") != "per-segment":
        return heatmaps
    n, v, p, h, w = heatmaps.shape
    f = int(next(iter(stage["inputs"].values()))["shape"][2])
    x = np.asarray(heatmaps).reshape(n, v, p // f, f, h, w).transpose(0, 2, 1, 3, 4, 5)
    return np.ascontiguousarray(x.reshape(n * (p // f), v, f, h, w))


def count_ops(path: str | Path) -> dict[str, int]:
    """Node counts by op type of an ONNX file (to see what quantization did)."""
    import onnx

    counts: dict[str, int] = {}
    for node in onnx.load(str(path), load_external_data=False).graph.node:
        counts[node.op_type] = counts.get(node.op_type, 0) + 1
    return counts


__all__ = ["quantize_stages", "quantize_dynamic_stage", "quantize_static_stage", "HeatmapReader",
           "count_ops"]
