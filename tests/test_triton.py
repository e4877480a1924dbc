"""Triton model repositories (export.triton): configs parse, dims match the ONNX graphs,
the ensemble's steps name real models and tensors, and running the steps in order on
the CPU gives what running the stages by hand gives."""

import json
import os
import re

import numpy as np
import onnx
import pytest
from onnx import TensorProto

from microgesture.core.backends import OrtBackend, write_engine_file
from microgesture.core.bundle import read_manifest, write_manifest
from microgesture.core.errors import MicrogestureError
from onnx_graphs import stage_model
from microgesture.export.triton import ensemble_steps, write_repository

# The CLIP-MG stages at toy sizes: R=2 RGB frames, 5 tokens of width 4, V=2 joints,
# P=4 pose frames of 4x4 heatmaps, C=3 classes.
STAGES = {
    "visual": ("per-frame", {"frames": (3, 8, 8)}, {"tokens": (5, 4)}),
    "pose": ("per-window", {"heatmaps": (2, 4, 4, 4)}, {"pose": (2, 4)}),
    "head": ("per-window", {"tokens": (2, 5, 4), "pose": (2, 4), "joints": (2, 2, 3)},
             {"logits": (3,)}),
}
LABELS = ["touch jaw", "fold arms", "press lips"]


# --------------------------------------------------------------------------- tiny bundle
def make_bundle(root, stages=STAGES, engines=False):
    root.mkdir(parents=True)
    table = {}
    for k, (name, (role, ins, outs)) in enumerate(stages.items()):
        stage_model(root / f"{name}.onnx", ins, outs, seed=k, external=name == "pose")
        files = {"fp32": f"{name}.onnx"}
        io = {key: {n: {"shape": ["batch", *s], "dtype": "float32"} for n, s in t.items()}
              for key, t in (("inputs", ins), ("outputs", outs))}
        if engines:
            write_engine_file(root / f"{name}.fp16.engine", {
                "stage": name, "precision": "fp16", "tensorrt": "10.99.0", "gpu": "Fake GPU",
                "profiles": [{"input": n, "min": [1, *s], "opt": [1, *s], "max": [8, *s]}
                             for n, s in ins.items()]}, f"PLAN-{name}".encode())
            files["engine"] = f"{name}.fp16.engine"
        table[name] = {"role": role, **io, "files": files}
    write_manifest(root, {"model": {"name": "tiny", "arch": "clip-mg", "config": {}},
                          "labels": LABELS, "prompts": None, "preprocessing": {},
                          "window": {"rgb_frames": 2, "pose_frames": 4}, "stages": table})
    return root


# --------------------------------------------------------------------------- pbtxt parser
_TOKEN = re.compile(r'\s*(?:(#[^\n]*)|("(?:[^"\\]|\\.)*")|([{}\[\]:,])|([^\s{}\[\]:,"#]+))')


def parse_pbtxt(text):
    """Protobuf text format -> dict; a repeated field becomes a list. Enough of the
    grammar for model configs: messages, lists, strings, numbers and enum names."""
    tokens = []
    pos = 0
    while pos < len(text):
        m = _TOKEN.match(text, pos)
        if not m or m.end() == pos:
            if text[pos:].strip():
                raise ValueError(f"cannot tokenise at {text[pos:pos + 20]!r}")
            break
        pos = m.end()
        if m.group(1):
            continue
        tokens.append(m.group(2) or m.group(3) or m.group(4))
    tokens.append(None)
    index = [0]

    def peek():
        return tokens[index[0]]

    def take(expected=None):
        token = tokens[index[0]]
        if expected is not None and token != expected:
            raise ValueError(f"expected {expected!r}, got {token!r}")
        index[0] += 1
        return token

    def scalar(token):
        if token.startswith('"'):
            return bytes(token[1:-1], "utf-8").decode("unicode_escape")
        if re.fullmatch(r"-?\d+", token):
            return int(token)
        if re.fullmatch(r"-?[\d.]+(e-?\d+)?", token):
            return float(token)
        if re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", token):
            return token  # an enum value or true/false
        raise ValueError(f"bad value {token!r}")

    def value():
        if peek() == "{":
            take("{")
            body = message("}")
            take("}")
            return body
        if peek() == "[":
            take("[")
            items = []
            while peek() != "]":
                items.append(value())
                if peek() == ",":
                    take(",")
            take("]")
            return items
        return scalar(take())

    def message(end):
        fields = {}
        while peek() != end:
            key = take()
            if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", key or ""):
                raise ValueError(f"bad field name {key!r}")
            if peek() == ":":
                take(":")
            elif peek() not in ("{", "["):
                raise ValueError(f"field {key!r} lacks ':'")
            item = value()
            if key in fields:
                previous = fields[key]
                fields[key] = (previous if isinstance(previous, list) else [previous]) + (
                    item if isinstance(item, list) else [item])
            else:
                fields[key] = item
            if peek() == ",":
                take(",")
        return fields

    return message(None)


def test_the_parser_itself():
    parsed = parse_pbtxt('name: "m" # comment\nmax_batch_size: 8\ninput [ { name: "x" dims: '
                         '[ 3, -1 ] } ]\nmap { key: "a" value: "b" }\nmap { key: "c" value: "d" }'
                         '\nkind: KIND_GPU')
    assert parsed == {"name": "m", "max_batch_size": 8, "input": [{"name": "x", "dims": [3, -1]}],
                      "map": [{"key": "a", "value": "b"}, {"key": "c", "value": "d"}],
                      "kind": "KIND_GPU"}
    for bad in ('name "m"', "input [ { name: } ]", 'a: { b: 1'):
        with pytest.raises(ValueError):
            parse_pbtxt(bad)


def read_config(model_dir):
    return parse_pbtxt((model_dir / "config.pbtxt").read_text())


def onnx_io(path):
    """name -> (elem type, dims) of a graph's inputs and outputs, read with onnx."""
    graph = onnx.load(str(path)).graph

    def dims(vi):
        return [d.dim_value if d.HasField("dim_value") else d.dim_param
                for d in vi.type.tensor_type.shape.dim]

    return ({v.name: (v.type.tensor_type.elem_type, dims(v)) for v in graph.input},
            {v.name: (v.type.tensor_type.elem_type, dims(v)) for v in graph.output})


# --------------------------------------------------------------------------- tests
@pytest.fixture
def repository(tmp_path):
    bundle = make_bundle(tmp_path / "bundle")
    out = write_repository(bundle, tmp_path / "triton", max_batch=8, instance_count=2,
                           preferred_batch=(4, 1, 8, 16), max_queue_delay_us=1500)
    return bundle, out


def test_stage_models_match_their_onnx_graphs(repository):
    bundle, out = repository
    assert sorted(p.name for p in out.iterdir()) == ["head", "pose", "visual", "window"]
    for name in STAGES:
        config = read_config(out / name)
        model = out / name / "1" / "model.onnx"
        assert model.read_bytes() == (bundle / f"{name}.onnx").read_bytes()
        assert (config["name"], config["platform"]) == (name, "onnxruntime_onnx")
        assert config["max_batch_size"] == 8
        ins, outs = onnx_io(model)
        for declared, graph in ((config["input"], ins), (config["output"], outs)):
            assert sorted(t["name"] for t in declared) == sorted(graph)
            for tensor in declared:
                elem, dims = graph[tensor["name"]]
                assert dims[0] == "batch"  # the batch axis Triton adds
                assert tensor["dims"] == dims[1:]
                assert tensor["data_type"] == "TYPE_FP32" and elem == TensorProto.FLOAT
        assert config["dynamic_batching"] == {"preferred_batch_size": [1, 4, 8],
                                              "max_queue_delay_microseconds": 1500}
        assert config["instance_group"] == [{"count": 2, "kind": "KIND_GPU"}]
    # the pose graph keeps its weights beside it, and so does its copy
    assert (out / "pose" / "1" / "pose.onnx.data").read_bytes() == (
        bundle / "pose.onnx.data").read_bytes()
    assert sorted(p.name for p in (out / "head" / "1").iterdir()) == ["model.onnx"]
    logits = read_config(out / "head")["output"][0]
    assert logits["label_filename"] == "labels.txt"
    assert (out / "head" / "labels.txt").read_text().splitlines() == LABELS
    assert "label_filename" not in read_config(out / "visual")["output"][0]


def test_models_are_linked_not_copied_when_possible(repository):
    bundle, out = repository
    a, b = os.stat(bundle / "pose.onnx"), os.stat(out / "pose" / "1" / "model.onnx")
    assert (a.st_ino, a.st_dev) == (b.st_ino, b.st_dev)


def test_ensemble_chains_existing_models_and_tensors(repository):
    _, out = repository
    config = read_config(out / "window")
    assert (config["name"], config["platform"], config["max_batch_size"]) == (
        "window", "ensemble", 8)
    assert (out / "window" / "1").is_dir()
    assert sorted(t["name"] for t in config["input"]) == ["heatmaps", "joints", "tokens"]
    assert [t["name"] for t in config["output"]] == ["logits"]
    assert "dynamic_batching" not in config and "instance_group" not in config
    steps = config["ensemble_scheduling"]["step"]
    assert [s["model_name"] for s in steps] == ["pose", "head"]
    available = {t["name"] for t in config["input"]}
    for step in steps:
        model = read_config(out / step["model_name"])  # the model exists
        ins = {t["name"] for t in model["input"]}
        outs = {t["name"] for t in model["output"]}
        inputs = step["input_map"] if isinstance(step["input_map"], list) else [step["input_map"]]
        outputs = (step["output_map"] if isinstance(step["output_map"], list)
                   else [step["output_map"]])
        assert {m["key"] for m in inputs} == ins  # every model input is fed ...
        assert {m["value"] for m in inputs} <= available  # ... by a tensor that exists by then
        assert {m["key"] for m in outputs} <= outs
        available |= {m["value"] for m in outputs}
    assert {t["name"] for t in config["output"]} <= available
    # ensemble tensors have the dims of the models that produce or consume them
    head = {t["name"]: t["dims"] for t in read_config(out / "head")["input"]}
    for tensor in config["input"]:
        if tensor["name"] in head:
            assert tensor["dims"] == head[tensor["name"]]


def test_running_the_ensemble_steps_matches_the_stages(repository):
    """What Triton would do with the ensemble, done with ONNX Runtime on the CPU."""
    _, out = repository
    config = read_config(out / "window")
    rng = np.random.default_rng(0)
    frames = rng.standard_normal((2 * 2, 3, 8, 8)).astype(np.float32)  # 2 windows x R=2
    visual = OrtBackend(out / "visual" / "1" / "model.onnx")
    tokens = visual.run({"frames": frames})["tokens"].reshape(2, 2, 5, 4)  # the client's ring
    tensors = {"tokens": tokens,
               "heatmaps": rng.random((2, 2, 4, 4, 4), dtype=np.float32),
               "joints": rng.random((2, 2, 2, 3), dtype=np.float32)}
    for step in config["ensemble_scheduling"]["step"]:
        backend = OrtBackend(out / step["model_name"] / "1" / "model.onnx")
        maps = step["input_map"] if isinstance(step["input_map"], list) else [step["input_map"]]
        result = backend.run({m["key"]: tensors[m["value"]] for m in maps})
        outs = step["output_map"] if isinstance(step["output_map"], list) else [step["output_map"]]
        tensors.update({m["value"]: result[m["key"]] for m in outs})
    bundle = read_manifest(out.parent / "bundle")
    root = out.parent / "bundle"
    pose = OrtBackend(root / bundle["stages"]["pose"]["files"]["fp32"]).run(
        {"heatmaps": tensors["heatmaps"]})["pose"]
    want = OrtBackend(root / "head.onnx").run({"tokens": tokens, "pose": pose,
                                               "joints": tensors["joints"]})["logits"]
    np.testing.assert_allclose(tensors["logits"], want, rtol=1e-6)
    assert tensors["logits"].shape == (2, 3)


def test_engine_repository_uses_bare_plans(tmp_path):
    bundle = make_bundle(tmp_path / "bundle", engines=True)
    out = write_repository(bundle, tmp_path / "triton", precision="engine", max_batch=4,
                           device="cpu")
    for name in STAGES:
        config = read_config(out / name)
        assert config["platform"] == "tensorrt_plan"
        assert config["instance_group"] == [{"count": 1, "kind": "KIND_GPU"}]  # always
        assert config["dynamic_batching"]["preferred_batch_size"] == [1, 4]
        assert (out / name / "1" / "model.plan").read_bytes() == f"PLAN-{name}".encode()
        info = json.loads((out / name / "plan.json").read_text())   # what built the plan
        assert (info["tensorrt"], info["gpu"]) == ("10.99.0", "Fake GPU")
        assert "tritonserver" in info["note"]
    assert read_config(out / "window")["platform"] == "ensemble"
    with pytest.raises(MicrogestureError, match="batches up to 8; pass max_batch <= 8"):
        write_repository(bundle, tmp_path / "other", precision="engine", max_batch=16)


def test_cpu_instances_and_refusals(tmp_path):
    bundle = make_bundle(tmp_path / "bundle")
    out = write_repository(bundle, tmp_path / "cpu", device="cpu", link=False)
    assert read_config(out / "pose")["instance_group"] == [{"count": 1, "kind": "KIND_CPU"}]
    assert os.stat(out / "pose" / "1" / "model.onnx").st_ino != os.stat(
        bundle / "pose.onnx").st_ino
    with pytest.raises(MicrogestureError, match="no 'int8' file for stage .*it has: fp32"):
        write_repository(bundle, tmp_path / "int8", precision="int8")
    assert not (tmp_path / "int8").exists()  # checked before anything is written
    with pytest.raises(MicrogestureError, match="max_batch"):
        write_repository(bundle, tmp_path / "x", max_batch=0)
    with pytest.raises(MicrogestureError, match="'gpu' or 'cpu'"):
        write_repository(bundle, tmp_path / "x", device="tpu")
    with pytest.raises(MicrogestureError, match="other than the bundle"):
        write_repository(bundle, bundle)
    with pytest.raises(MicrogestureError, match="no manifest.json"):
        write_repository(tmp_path / "nothing", tmp_path / "x")


def test_single_window_stage_has_no_ensemble(tmp_path):
    pose_only = {"pose": STAGES["pose"],
                 "head": ("per-window", {"pose": (2, 4)}, {"logits": (3,)})}
    bundle = make_bundle(tmp_path / "two", pose_only)
    assert (write_repository(bundle, tmp_path / "a") / "window").is_dir()  # pose -> head
    single = {"window": ("per-window", {"clip": (2, 3, 8, 8)}, {"logits": (3,)})}
    out = write_repository(make_bundle(tmp_path / "one", single), tmp_path / "b")
    assert sorted(p.name for p in out.iterdir()) == ["window"]
    assert read_config(out / "window")["platform"] == "onnxruntime_onnx"


def test_ensemble_steps_order_and_refusals():
    head = {"inputs": {"tokens": {}, "pose": {}}, "outputs": {"logits": {}}}
    pose = {"inputs": {"heatmaps": {}}, "outputs": {"pose": {}}}
    assert ensemble_steps({"head": head, "pose": pose}) == (["pose", "head"],
                                                            ["heatmaps", "tokens"], ["logits"])
    loop = {"a": {"inputs": {"x": {}}, "outputs": {"y": {}}},
            "b": {"inputs": {"y": {}}, "outputs": {"x": {}}}}
    with pytest.raises(MicrogestureError, match="cycle"):
        ensemble_steps(loop)
    with pytest.raises(MicrogestureError, match="both output"):
        ensemble_steps({"a": pose, "b": pose})


# --------------------------------------------------------------------------- Triton's own schema
def parse_with_triton(model_dir):
    """config.pbtxt parsed as Triton parses it: its ModelConfig protobuf, text format."""
    pb = pytest.importorskip("tritonclient.grpc.model_config_pb2",
                             reason="tritonclient[grpc] is not installed (pip install "
                                    "'microgesture[triton]')")
    from google.protobuf import text_format
    return text_format.Parse((model_dir / "config.pbtxt").read_text(), pb.ModelConfig())


@pytest.mark.parametrize("flavour", ["gpu", "cpu"])
def test_both_flavours_parse_as_tritons_model_config(tmp_path, flavour):
    bundle = make_bundle(tmp_path / "bundle")
    out = write_repository(bundle, tmp_path / flavour, flavour=flavour, max_batch=4,
                           instance_count=2, onnx_threads=2)
    manifest = read_manifest(bundle)
    for name in STAGES:
        config = parse_with_triton(out / name)
        assert config.name == name and config.max_batch_size == 4
        assert list(config.dynamic_batching.preferred_batch_size) == [1, 4]
        assert [(g.count, g.kind) for g in config.instance_group] == [
            (2, config.instance_group[0].KIND_CPU if flavour == "cpu" else
             config.instance_group[0].KIND_GPU)]
        params = {k: v.string_value for k, v in config.parameters.items()}
        assert params["microgesture_sha256"] == manifest["files"][f"{name}.onnx"]["sha256"]
        assert (params["microgesture_file"], params["microgesture_precision"]) == (
            f"{name}.onnx", "fp32")
        assert (out / name / "1" / "model.onnx").read_bytes() == (bundle / f"{name}.onnx").read_bytes()
        if flavour == "cpu":
            assert (config.backend, config.platform) == ("python", "")
            assert params["onnx_threads"] == "2"
            assert (out / name / "1" / "model.py").read_text().count("class TritonPythonModel") == 1
        else:
            assert (config.backend, config.platform) == ("", "onnxruntime_onnx")
            assert not (out / name / "1" / "model.py").exists()
        ins, _ = onnx_io(out / name / "1" / "model.onnx")
        assert {t.name: list(t.dims) for t in config.input} == {n: d[1:] for n, (_, d) in ins.items()}
    ensemble = parse_with_triton(out / "window")
    assert ensemble.platform == "ensemble"
    steps = ensemble.ensemble_scheduling.step
    assert [s.model_name for s in steps] == ["pose", "head"]
    for step in steps:  # every step feeds every input of a model that exists
        model = parse_with_triton(out / step.model_name)
        assert set(step.input_map) == {t.name for t in model.input}
        assert set(step.output_map) <= {t.name for t in model.output}


def test_the_two_flavours_differ_only_in_what_runs_the_stages(tmp_path):
    bundle = make_bundle(tmp_path / "bundle")
    gpu = write_repository(bundle, tmp_path / "gpu", device="cpu")
    cpu = write_repository(bundle, tmp_path / "cpu", flavour="cpu")
    for name in [*STAGES, "window"]:
        a, b = parse_with_triton(gpu / name), parse_with_triton(cpu / name)
        for config in (a, b):
            config.ClearField("platform")
            config.ClearField("backend")
            config.parameters.pop("onnx_threads", None)
        assert a == b


def test_flavour_refusals(tmp_path):
    bundle = make_bundle(tmp_path / "bundle", engines=True)
    with pytest.raises(MicrogestureError, match="flavour must be 'gpu'"):
        write_repository(bundle, tmp_path / "x", flavour="tpu")
    with pytest.raises(MicrogestureError, match="engines need the gpu flavour"):
        write_repository(bundle, tmp_path / "x", flavour="cpu", precision="engine")
    assert not (tmp_path / "x").exists()
