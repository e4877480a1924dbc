"""The MiGA 2024 commands on tiny runs: class-list files, `ensemble`, eval of an ensemble run,
its bundle, and zero-shot evaluation."""

import json
import sys
import types

import numpy as np
import pytest

from microgesture.cli import main
from microgesture.core.classes_file import label_map, parse_classes, read_classes
from microgesture.core.errors import MicrogestureError

# ----------------------------------------------------------------------------- class lists


def test_classes_file_format(tmp_path):
    text = ("# gestures for the lobby camera\n\n"
            "template: a video of a person {}.\n"
            "touching   jaw\n"
            "Templates: someone {} in an interview.\n"
            "yawning\n")
    parsed = parse_classes(text)
    assert parsed.labels == ("touching jaw", "yawning")
    assert parsed.templates == ("a video of a person {}.", "someone {} in an interview.")
    assert parse_classes("a\nb\n").templates is None  # the model keeps its own
    path = tmp_path / "classes.txt"
    path.write_text("touching jaw\nyawning\n")
    assert read_classes(path).labels == ("touching jaw", "yawning")
    assert label_map(["Yawning", "touching jaw"], parsed.labels) == [1, 0]


@pytest.mark.parametrize("text, message", [
    ("", "names no class"),
    ("# only a comment\n", "names no class"),
    ("a\nb\nA\n", r"line 3: class 'A' is already on line 1"),
    ("template: a video of {} doing {}\na\n", r"line 1: a template needs exactly one '\{\}'"),
    ("template: no braces\na\n", "exactly one"),
    ("a person {}\n", r"line 1: .* start a prompt template's line with 'template:'"),
])
def test_classes_file_errors_name_the_line_and_the_fix(text, message):
    with pytest.raises(MicrogestureError, match=message):
        parse_classes(text, "classes.txt")


def test_classes_file_unreadable(tmp_path):
    with pytest.raises(MicrogestureError, match="no such file"):
        read_classes(tmp_path / "missing.txt")
    bad = tmp_path / "latin1.txt"
    bad.write_bytes("caf\xe9\n".encode("latin-1"))
    with pytest.raises(MicrogestureError, match="not UTF-8"):
        read_classes(bad)
    with pytest.raises(MicrogestureError, match="class 'yawning' is not in the class list"):
        label_map(["yawning"], ("touching jaw",))


# ----------------------------------------------------------------------------- tiny runs

@pytest.fixture
def clip_mg_family(monkeypatch):
    """CLIP-MG's family module (issue 9a); until it lands, a stand-in with its evaluation forward."""
    from microgesture.core.family import ModelFamily, get_family

    try:
        get_family("clip-mg")
    except ModuleNotFoundError:
        class StandIn(ModelFamily):
            arch = "clip-mg"

            def predict(self, model, batch):
                return model(batch["frames"], batch["heatmaps"], batch["joints"])

        module = types.ModuleType("microgesture.core.models.clip_mg")
        module.FAMILY = StandIn()
        monkeypatch.setitem(sys.modules, module.__name__, module)


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    pytest.importorskip("torch")
    from microgesture.training.synth import write_synthetic
    from microgesture.training.trainer import TrainOptions, train

    root = tmp_path_factory.mktemp("miga24_runs")
    data = root / "set"
    write_synthetic(data, subjects=3, clips_per_class=2, classes=3, seed=0, frames=16, size=(64, 64),
                    progress=False)
    out = {"data": data}
    for name, seed, test in (("a", 0, ("s02",)), ("b", 1, ("s02",)), ("other-split", 0, ("s01",))):
        train(TrainOptions(model="clip-mg-tiny", data=str(data), out=str(root / name), epochs=1, batch_size=4,
                           workers=0, seed=seed, test_subjects=test), progress=False)
        out[name] = root / name
    return out


def test_ensemble_command_searches_weights_and_eval_scores_the_run(runs, clip_mg_family, tmp_path, capsys):
    from microgesture.core.ensemble import fuse, read_ensemble_run
    from microgesture.training.ensemble_run import evaluate_ensemble
    from microgesture.training.family_eval import family_logits, load_run, validation_part
    from microgesture.training.datasets import open_dataset
    from microgesture.training.transforms import ClipDataset

    out = tmp_path / "ens"
    assert main(["ensemble", str(runs["a"]), str(runs["b"]), "--out", str(out), "--step", "0.1",
                 "--workers", "0", "--quiet"]) == 0
    printed = json.loads(capsys.readouterr().out)
    info = read_ensemble_run(out)
    assert [m["name"] for m in info["members"]] == ["a", "b"]
    assert abs(sum(info["weights"]) - 1) < 1e-9 and all(round(w * 10, 6).is_integer() for w in info["weights"])
    assert printed["val_top1"] == info["val_top1"]
    # the ensemble's validation top-1 is what its weights give on the members' validation scores
    scores, labels = [], None
    for m in info["members"]:
        model, _, _, run_info = load_run(m["run"])
        val = validation_part(open_dataset(runs["data"]), run_info, m["run"])
        z, labels = family_logits(model, ClipDataset(val, model.config, train=False))
        scores.append(z)
        assert m["val_top1"] == pytest.approx(float((z.argmax(1) == labels).mean()))
    fused = fuse(scores, info["weights"])
    assert info["val_top1"] == pytest.approx(float((fused.argmax(1) == labels).mean()))
    assert info["val_top1"] >= max(m["val_top1"] for m in info["members"])  # a member alone is on the grid
    # eval of the ensemble run writes metrics.json with each member's score
    report = evaluate_ensemble(out, workers=0, progress=False)
    assert set(report["members"]) == {"a", "b"} and report["clips"] == len(labels)
    assert json.loads((out / "metrics.json").read_text())["top1"] == report["top1"]
    assert main(["eval", str(out), "--workers", "0", "--quiet"]) == 0
    assert json.loads(capsys.readouterr().out)["weights"] == {m["name"]: m["weight"] for m in info["members"]}


def test_ensemble_refuses_members_that_cannot_be_fused(runs, clip_mg_family, tmp_path, capsys):
    assert main(["ensemble", str(runs["a"]), "--out", str(tmp_path / "e1")]) == 2
    assert "at least two trained runs" in capsys.readouterr().err
    assert main(["ensemble", str(runs["a"]), str(runs["other-split"]), "--out", str(tmp_path / "e2"),
                 "--workers", "0", "--quiet"]) == 2
    assert "other validation clips" in capsys.readouterr().err
    busy = tmp_path / "busy"
    busy.mkdir()
    (busy / "notes.txt").write_text("mine")
    assert main(["ensemble", str(runs["a"]), str(runs["b"]), "--out", str(busy)]) == 2
    assert "holds other files" in capsys.readouterr().err and (busy / "notes.txt").read_text() == "mine"


def test_zero_shot_refuses_a_model_without_text(runs, clip_mg_family, tmp_path, capsys):
    classes = tmp_path / "classes.txt"
    classes.write_text("yawning\n")
    assert main(["eval", str(runs["a"]), "--zero-shot", "--classes", str(classes), "--workers", "0"]) == 2
    assert "cannot take a new class list" in capsys.readouterr().err
    assert main(["eval", str(runs["a"]), "--zero-shot"]) == 2
    assert "--classes FILE" in capsys.readouterr().err


@pytest.mark.slow  # two members exported: about 80 s on the busy 2-core machine
def test_ensemble_bundle_holds_its_members(runs, clip_mg_family, tmp_path):
    pytest.importorskip("onnxruntime")
    from microgesture.core.bundle import read_manifest
    from microgesture.core.ensemble import read_ensemble_run
    from microgesture.export.ensemble_bundle import export_ensemble
    from microgesture.training.ensemble_run import make_ensemble

    ens = tmp_path / "ens"
    make_ensemble([runs["a"], runs["b"]], ens, workers=0, progress=False)
    summary = export_ensemble(ens, tmp_path / "bundle", verify=False, progress=False)
    top = json.loads((tmp_path / "bundle" / "manifest.json").read_text())
    info = read_ensemble_run(ens)
    assert top["stages"] == {} and top["labels"] == info["labels"]
    assert top["members"] == [{"bundle": f"members/{m['name']}", "weight": m["weight"]} for m in info["members"]]
    assert sum(m["weight"] for m in top["members"]) == pytest.approx(1)
    assert top["window"]["span_s"] > 0
    for m in top["members"]:  # each a complete bundle with its own manifest, pinned by checksum
        manifest = read_manifest(tmp_path / "bundle" / m["bundle"])
        assert manifest["labels"] == top["labels"]
        assert f"{m['bundle']}/manifest.json" in top["files"]
    assert set(summary["members"]) == {"a", "b"}
    assert not any(p.name.startswith(".bundle.") for p in tmp_path.iterdir())  # no staging left behind


# ----------------------------------------------------------------------------- the MiGA 2024 models as runs

def test_miga24_models_train_with_text_from_ensemble_and_zero_shot(runs, tmp_path, capsys):
    import torch

    from microgesture.core.checkpoint import load_checkpoint, run_checkpoint
    from microgesture.core.ensemble import read_ensemble_run

    data = runs["data"]
    common = ["--data", str(data), "--epochs", "1", "--batch-size", "4", "--workers", "0",
              "--test-subjects", "s02", "--quiet"]
    rgb, limb, joint = tmp_path / "rgb", tmp_path / "limb", tmp_path / "joint"
    assert main(["train", "--model", "miga24-vclip-tiny", "--out", str(rgb), *common]) == 0
    assert main(["train", "--model", "miga24-posec3d-limb-tiny", "--out", str(limb), "--text-from", str(rgb),
                 *common]) == 0
    assert main(["train", "--model", "miga24-posec3d-joint-tiny", "--out", str(joint), *common]) == 0
    assert "text alignment is off" in capsys.readouterr().err
    student, _ = load_checkpoint(run_checkpoint(rgb))
    pose, _ = load_checkpoint(run_checkpoint(limb))
    torch.testing.assert_close(pose.text_targets, student.class_text_embeddings(), atol=1e-6, rtol=1e-5)

    ens = tmp_path / "ens"
    assert main(["ensemble", str(rgb), str(limb), str(joint), "--out", str(ens), "--workers", "0", "--quiet"]) == 0
    assert [m["arch"] for m in read_ensemble_run(ens)["members"]] == ["miga24-vclip", "miga24-posec3d",
                                                                      "miga24-posec3d"]
    capsys.readouterr()

    classes = tmp_path / "classes.txt"
    names = list(student.config.labels)[::-1] + ["yawning"]
    classes.write_text("template: a video of someone {}.\n" + "\n".join(names) + "\n")
    assert main(["eval", str(rgb), "--zero-shot", "--classes", str(classes), "--workers", "0", "--quiet"]) == 0
    printed = json.loads(capsys.readouterr().out)
    report = json.loads((rgb / "metrics_zero_shot.json").read_text())
    assert printed["unseen_classes"] == ["yawning"] and report["classes"] == names
    assert len(report["confusion_matrix"]) == len(names) and report["clips"] > 0


@pytest.fixture
def student_run(runs, tmp_path, monkeypatch):
    """A tiny miga24-vclip run with run "a"'s split (its checkpoint written directly), and
    the dataset class that reads its windows."""
    import torch

    import microgesture.training.ensemble_run as ensemble_run
    import microgesture.training.zero_shot as zero_shot
    from microgesture.core.checkpoint import KEEP_FILES, load_checkpoint, save_checkpoint
    from microgesture.core.family import get_family
    from microgesture.training.datasets import open_dataset
    from microgesture.training.transforms import ClipDataset

    fam = get_family("miga24-vclip")
    index = open_dataset(runs["data"])
    torch.manual_seed(0)
    student = fam.build_for_inference(fam.configs[fam.tiny].replace(labels=tuple(index.classes)))
    run = tmp_path / "rgb"
    run.mkdir()
    save_checkpoint(student, run / KEEP_FILES["best"])
    info = json.loads((runs["a"] / "run.json").read_text())
    info["config"] = student.config.to_dict()
    (run / "run.json").write_text(json.dumps(info))
    load_checkpoint(run / KEEP_FILES["best"])
    dataset = ClipDataset
    return types.SimpleNamespace(run=run, student=student, family=fam, index=index, info=info, dataset=dataset)


def test_zero_shot_scores_the_student_on_a_class_list_it_was_not_trained_on(student_run, tmp_path, capsys):
    import torch

    import microgesture.training.zero_shot as zero_shot

    run, fam, student, index, info = (student_run.run, student_run.family, student_run.student, student_run.index,
                                      student_run.info)
    names = list(index.classes)[::-1] + ["yawning"]
    classes = tmp_path / "classes.txt"
    classes.write_text("template: a video of someone {}.\n" + "\n".join(n.upper() for n in names) + "\n")
    assert main(["eval", str(run), "--zero-shot", "--classes", str(classes), "--workers", "0", "--quiet"]) == 0
    printed = json.loads(capsys.readouterr().out)
    report = json.loads((run / "metrics_zero_shot.json").read_text())
    assert printed["top1"] == report["top1"] and printed["unseen_classes"] == ["YAWNING"]
    assert report["classes"] == [n.upper() for n in names] and report["templates"] == ["a video of someone {}."]
    # the same scores by hand: the student with the listed classes, each clip's class found by name
    test_part = zero_shot.splits.eval_part(index, info["split"])
    fam.set_classes(student, report["classes"], ["a video of someone {}."])
    dataset = student_run.dataset(test_part, student.config.replace(labels=tuple(index.classes)), train=False)
    items = [dataset[i] for i in range(len(dataset))]
    with torch.no_grad():
        logits = fam.predict(student.eval(), {"frames": torch.stack([it["frames"] for it in items])})
    truth = np.array([names.index(index.classes[int(it["label"])]) for it in items])
    assert report["clips"] == len(items)
    assert report["top1"] == pytest.approx(float((logits.argmax(1).numpy() == truth).mean()))
    assert np.array(report["confusion_matrix"]).sum(1).tolist() == np.bincount(truth, minlength=len(names)).tolist()


def test_an_ensemble_of_two_families(runs, student_run, clip_mg_family, tmp_path):
    from microgesture.core.ensemble import read_ensemble_run
    from microgesture.training.ensemble_run import evaluate_ensemble, make_ensemble

    info = make_ensemble([runs["a"], student_run.run], tmp_path / "ens", workers=0, progress=False)
    assert [m["arch"] for m in info["members"]] == ["clip-mg", "miga24-vclip"]
    assert read_ensemble_run(tmp_path / "ens")["weights"] == info["weights"]
    assert info["val_top1"] >= max(m["val_top1"] for m in info["members"])
    report = evaluate_ensemble(tmp_path / "ens", workers=0, progress=False)
    assert set(report["members"]) == {"a", "rgb"} and 0 <= report["top1"] <= 1


def test_a_checkpoint_with_another_class_list_is_the_student_with_those_classes(student_run, tmp_path):
    import torch

    from microgesture.core.checkpoint import load_checkpoint
    from microgesture.core.open_vocab import checkpoint_with_classes

    classes = tmp_path / "classes.txt"
    classes.write_text("template: a clip of someone {}.\nyawning\ntouching jaw\n")
    path = checkpoint_with_classes(student_run.run, classes, tmp_path / "retargeted")
    model, meta = load_checkpoint(path)
    assert model.config.labels == ("yawning", "touching jaw") and meta["extra"]["classes_from"] == str(classes)
    fam, student = student_run.family, student_run.student
    fam.set_classes(student, ["yawning", "touching jaw"], ["a clip of someone {}."])
    frames = fam.example_batch(model.config, batch=2)["frames"]
    with torch.no_grad():
        torch.testing.assert_close(fam.predict(model.eval(), {"frames": frames}),
                                   fam.predict(student.eval(), {"frames": frames}))


def test_text_from_must_name_a_run(tmp_path, capsys):
    assert main(["train", "--model", "miga24-posec3d-limb-tiny", "--text-from", str(tmp_path / "nope"),
                 "--data", str(tmp_path), "--out", str(tmp_path / "run")]) == 2
    assert "--text-from" in capsys.readouterr().err and not (tmp_path / "run").exists()
