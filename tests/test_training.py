"""Training end to end on a small synthetic set: checkpoints, exact resume,
kill -9, evaluation with its pictures, ablations, metrics, torchrun."""

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from microgesture.core.checkpoint import load_checkpoint
from microgesture.core.errors import MicrogestureError
from microgesture.training.metrics import classification_report
from microgesture.training.trainer import TrainOptions, train

pytest.importorskip("microgesture.training.synth")


@pytest.fixture(scope="module")
def synth(tmp_path_factory):
    from microgesture.training.synth import write_synthetic

    out = tmp_path_factory.mktemp("synth") / "set"
    write_synthetic(out, subjects=4, clips_per_class=2, classes=6, seed=0, progress=False)
    return out


def options(data, out, **kw):
    base = dict(model="clip-mg-tiny", data=str(data), out=str(out), epochs=2, batch_size=8,
                workers=0, seed=0, test_subjects=("s03",))
    return TrainOptions(**{**base, **kw})


def test_train_writes_a_complete_run(synth, tmp_path):
    summary = train(options(synth, tmp_path / "run"), progress=False)
    run = tmp_path / "run"
    assert summary["epochs_done"] == 2
    info = json.loads((run / "run.json").read_text())
    assert info["split"]["test_subjects"] == ["s03"] and "s03" not in info["split"]["train_subjects"]
    lines = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in lines] == [1, 2]
    assert all(np.isfinite(r["train_loss"]) and r["clips_per_s"] > 0 for r in lines)
    model, meta = load_checkpoint(run / "best.safetensors")
    assert meta["config"].num_classes == 6 and meta["extra"]["epoch"] == summary["best_epoch"]
    state = torch.load(run / "last.pt", weights_only=True)  # no pickled code needed
    assert state["epoch"] == 1
    # the best score is the best epoch's, and best.safetensors really scores it on the
    # held-out subject's 12 clips (recomputed here, one clip at a time)
    scores = [r["val_top1"] for r in lines]
    assert summary["best_top1"] == max(scores) == meta["extra"]["val_top1"]
    assert scores[summary["best_epoch"] - 1] == max(scores)
    assert [r["best_top1"] for r in lines] == [max(scores[:i + 1]) for i in range(len(scores))]
    from microgesture.training.datasets import open_dataset
    from microgesture.training.transforms import ClipDataset

    index = open_dataset(synth)
    held_out = [i for i, r in enumerate(index.records) if r.subject == "s03"]
    dataset = ClipDataset(index, meta["config"], train=False)
    model.eval()
    correct = 0
    with torch.no_grad():
        for i in held_out:
            item = dataset[i]
            logits = model(item["frames"][None], item["heatmaps"][None], item["joints"][None])
            correct += int(logits.argmax(1).item() == item["label"].item())
    assert len(held_out) == 12 and summary["best_top1"] == pytest.approx(correct / 12, abs=1e-9)


def test_resume_continues_exactly(synth, tmp_path):
    """Two epochs straight == one epoch, stop, resume for the second (same weights)."""
    train(options(synth, tmp_path / "straight"), progress=False)
    train(options(synth, tmp_path / "stopped"), progress=False, stop_after=1)
    assert len((tmp_path / "stopped" / "metrics.jsonl").read_text().splitlines()) == 1
    train(TrainOptions(model="", data="", out=str(tmp_path / "stopped")), resume=True,
          progress=False)
    a = torch.load(tmp_path / "straight" / "last.pt", weights_only=True)["model"]
    b = torch.load(tmp_path / "stopped" / "last.pt", weights_only=True)["model"]
    for name in a:
        torch.testing.assert_close(a[name], b[name], rtol=0, atol=1e-6, msg=name)


def test_refuses_to_overwrite_a_run_and_bad_resumes(synth, tmp_path):
    train(options(synth, tmp_path / "run", epochs=1), progress=False)
    with pytest.raises(MicrogestureError, match="--resume"):
        train(options(synth, tmp_path / "run", epochs=1), progress=False)
    with pytest.raises(MicrogestureError, match="not a training run"):
        train(TrainOptions(model="", data="", out=str(tmp_path / "nothing")), resume=True)
    with pytest.raises(MicrogestureError, match="empty"):
        train(options(synth, tmp_path / "all-test", test_subjects=("s00", "s01", "s02", "s03")),
              progress=False)


def test_kill_9_leaves_a_resumable_run(synth, tmp_path):
    run = tmp_path / "run"
    cmd = [sys.executable, "-m", "microgesture", "train", "--model", "clip-mg-tiny",
           "--data", str(synth), "--out", str(run), "--epochs", "40", "--batch-size", "4",
           "--workers", "0", "--test-subjects", "s03", "--quiet"]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline and not (run / "metrics.jsonl").exists():
        time.sleep(0.05)
    time.sleep(0.3)  # somewhere in the next epoch, perhaps mid-write
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert (run / "last.pt").exists(), proc.stderr.read().decode()
    done = torch.load(run / "last.pt", weights_only=True)["epoch"] + 1
    result = subprocess.run([sys.executable, "-m", "microgesture", "train", "--resume", str(run),
                             "--stop-after", str(done + 1), "--quiet"],
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout.splitlines()[-1])["epochs_done"] == done + 1
    epochs = [json.loads(x)["epoch"] for x in (run / "metrics.jsonl").read_text().splitlines()]
    assert epochs[-1] == done + 1


def test_evaluate_writes_metrics_and_pictures(synth, tmp_path):
    from microgesture.training.evaluate import evaluate

    run = tmp_path / "run"
    train(options(synth, run, epochs=1), progress=False)
    report = evaluate(run, clips=2, flip=True, workers=0, progress=False)
    saved = json.loads((run / "metrics.json").read_text())
    assert saved["top1"] == report["top1"] and report["views"] == 4
    cm = np.array(saved["confusion_matrix"])
    assert cm.sum() == saved["clips"] == 12  # 6 classes x 2 clips of the held-out subject
    assert np.isclose(np.trace(cm) / cm.sum(), saved["top1"])
    assert set(saved["per_subject"]) == {"s03"}
    for name in ("confusion", "per_class", "curves", "relevance", "gate"):
        png = run / f"{name}.png"
        assert png.stat().st_size > 1000 and png.read_bytes()[:4] == b"\x89PNG", name


def test_ablation_table(synth, tmp_path):
    from microgesture.training.ablate import run_ablations

    rows = run_ablations(options(synth, tmp_path / "abl", epochs=1), ["full", "pose-only"],
                         progress=False)
    assert [r["ablation"] for r in rows] == ["full", "pose-only"]
    table = (tmp_path / "abl" / "ablations.md").read_text()
    assert "| full |" in table and "| pose-only |" in table
    assert json.loads((tmp_path / "abl" / "ablations.json").read_text()) == rows
    _, meta = load_checkpoint(tmp_path / "abl" / "pose-only" / "best.safetensors")
    assert meta["config"].modality == "pose"


def test_classification_report_on_known_scores():
    scores = np.array([[0.9, 0.1, 0.0], [0.2, 0.7, 0.1], [0.6, 0.3, 0.1], [0.1, 0.2, 0.7]])
    labels = np.array([0, 1, 1, 2])
    r = classification_report(scores, labels, ["a", "b", "c"], subjects=["x", "x", "y", "y"])
    assert r["top1"] == 0.75 and r["top5"] == 1.0
    assert r["per_class"]["b"] == {"accuracy": 0.5, "f1": pytest.approx(2 / 3), "support": 2}
    assert r["macro_f1"] == pytest.approx((2 / 3 + 2 / 3 + 1) / 3)
    assert r["per_subject"] == {"x": 1.0, "y": 0.5}
    assert r["confusion_matrix"] == [[1, 0, 0], [1, 1, 0], [0, 0, 1]]


@pytest.mark.skipif(shutil.which("torchrun") is None and not Path(sys.executable).with_name("torchrun").exists(),
                    reason="torchrun not installed")
@pytest.mark.parametrize("model", ["clip-mg-tiny", "miga24-vclip-tiny"])
def test_torchrun_two_processes_on_cpu(synth, tmp_path, model):
    """DistributedDataParallel through torchrun (gloo on CPU): the same command as on GPUs;
    the student's distillation terms never call its forward, and must train under DDP too."""
    torchrun = shutil.which("torchrun") or str(Path(sys.executable).with_name("torchrun"))
    run = tmp_path / "ddp"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    result = subprocess.run(
        [torchrun, "--standalone", "--nproc_per_node", "2", "-m", "microgesture", "train",
         "--model", model, "--data", str(synth), "--out", str(run), "--epochs", "1",
         "--batch-size", "4", "--workers", "0", "--device", "cpu", "--test-subjects", "s03",
         "--quiet"], capture_output=True, text=True, timeout=600, env=env)
    assert result.returncode == 0, result.stderr[-3000:]
    assert len((run / "metrics.jsonl").read_text().splitlines()) == 1  # rank 0 only
    load_checkpoint(run / "best.safetensors")


def test_each_loss_term_of_the_family_is_minimised_and_logged(synth, tmp_path, monkeypatch, capsys):
    """The trainer minimises the sum of the family's named loss terms and logs each one's
    epoch mean (a distillation or alignment term of another family gets a place)."""
    from microgesture.core.family import get_family

    family = get_family("clip-mg")
    plain = family.loss

    def two_terms(model, batch):
        terms = plain(model, batch)
        return {**terms, "loss_half": 0.5 * terms["loss_ce"]}

    monkeypatch.setattr(family, "loss", two_terms)
    train(options(synth, tmp_path / "run", epochs=1), progress=True)
    (record,) = [json.loads(x) for x in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert record["loss_half"] == pytest.approx(0.5 * record["loss_ce"], rel=1e-5)
    assert record["train_loss"] == pytest.approx(record["loss_ce"] + record["loss_half"], rel=1e-5)
    assert "loss_half" in capsys.readouterr().err   # the progress line names every term
