"""The ensemble weight search (torch-free) finds known optima on made-up scores."""

import itertools

import numpy as np
import pytest

from microgesture.core.ensemble import fuse, search_weights, softmax, weight_grid
from microgesture.core.errors import MicrogestureError


def two_class_logits(margins):
    """Logits (M,) pairs whose softmax gives p(class 0) - p(class 1) = margin for each model."""
    p0 = (1 + np.asarray(margins)) / 2
    return np.log(np.stack([p0, 1 - p0], -1))


def test_grid_sums_to_one_on_steps_of_005():
    grid = weight_grid(3, 0.05)
    assert grid.shape == (231, 3)  # C(22, 2)
    np.testing.assert_allclose(grid.sum(1), 1.0)
    assert np.allclose(grid * 20, np.round(grid * 20)) and (grid >= 0).all()
    assert len({tuple(r) for r in grid.round(6)}) == 231
    assert tuple(grid[0]) == (1.0, 0.0, 0.0)
    with pytest.raises(MicrogestureError, match="divide 1"):
        weight_grid(3, 0.3)


def test_finds_the_papers_weights_when_only_they_get_everything_right():
    """Sample i is correct iff w . d_i > 0; four samples pin w_1 in (0.525, 0.575) and w_2 in
    (0.375, 0.425), so only (0.55, 0.40, 0.05) classifies all of them (the paper's best)."""
    pins = [(1 - 0.525, -0.525, -0.525), (-0.425, 0.575, 0.575),   # 0.525 < w1 < 0.575
            (-0.375, 1 - 0.375, -0.375), (0.425, -0.575, 0.425)]   # 0.375 < w2 < 0.425
    easy = [(0.8, 0.6, 0.9)] * 6  # every weight vector gets these right
    per_sample = np.stack([two_class_logits(d) for d in pins + easy])  # (N, M, 2)
    logits = [per_sample[:, m] + 3.0 for m in range(3)]  # log p + any shift: softmax gives p back
    labels = np.zeros(len(per_sample), dtype=int)
    result = search_weights(logits, labels)
    assert result.weights == pytest.approx((0.55, 0.40, 0.05))
    assert result.accuracy == 1.0
    assert (result.accuracies == 1.0).sum() == 1


def test_ties_in_accuracy_go_to_the_lower_log_loss():
    # every weight vector is right on both samples; model 2 is the most confident in the truth
    logits = [np.log([[0.6, 0.4], [0.3, 0.7]]), np.log([[0.9, 0.1], [0.2, 0.8]]),
              np.log([[0.55, 0.45], [0.45, 0.55]])]
    result = search_weights(logits, [0, 1], step=0.1)
    assert (result.accuracies == 1.0).all()
    assert result.weights == pytest.approx((0.0, 1.0, 0.0))
    assert result.log_loss == pytest.approx(-np.mean(np.log([0.9, 0.8])))


def test_softmax_first_so_a_large_logit_scale_does_not_dominate():
    # model 0 (CLIP-like, logits 100 x cos) votes with a margin of 10 logits, model 1 the other way
    # with 6: raw weighted logits follow model 0, weighted probabilities follow the heavier model 1
    clip = 100 * np.array([[0.40, 0.30], [0.30, 0.40]])
    pose = np.array([[-3.0, 3.0], [3.0, -3.0]])
    fused = fuse([clip, pose], [0.4, 0.6])
    assert (fused.argmax(1) == [1, 0]).all()
    assert ((0.4 * clip + 0.6 * pose).argmax(1) == [0, 1]).all()
    np.testing.assert_allclose(fused.sum(1), 1.0)


def test_matches_a_brute_force_search_on_random_scores():
    rng = np.random.default_rng(3)
    labels = rng.integers(0, 5, 60)
    logits = [rng.normal(size=(60, 5)) * s + np.eye(5)[labels] * b for s, b in ((1, 1.0), (3, 2.0), (0.5, 0.3))]
    result = search_weights(logits, labels, step=0.1, chunk=7)
    best = None
    for w in itertools.product(np.arange(11), repeat=3):
        if sum(w) != 10:
            continue
        p = sum(wi / 10 * softmax(z) for wi, z in zip(w, logits))
        key = (-(p.argmax(1) == labels).mean(), -np.log(p[np.arange(60), labels] + 1e-12).mean())
        if best is None or key < best[0]:
            best = (key, tuple(wi / 10 for wi in w))
    assert result.weights == pytest.approx(best[1])
    assert (-result.accuracy, result.log_loss) == pytest.approx(best[0])


def test_bad_inputs_are_named():
    with pytest.raises(MicrogestureError, match="same samples"):
        search_weights([np.zeros((3, 2)), np.zeros((4, 2))], [0, 1, 0])
    with pytest.raises(MicrogestureError, match="labels must be 3 class ids"):
        search_weights([np.zeros((3, 2))], [0, 1, 2])
    with pytest.raises(MicrogestureError, match="one weight per model"):
        fuse([np.zeros((3, 2))] * 2, [1.0])


def test_ensemble_run_file_is_checked(tmp_path):
    import json

    from microgesture.core.ensemble import ENSEMBLE_FILE, is_ensemble_run, read_ensemble_run

    assert not is_ensemble_run(tmp_path)
    with pytest.raises(MicrogestureError, match="not an ensemble run"):
        read_ensemble_run(tmp_path)
    member = {"name": "rgb", "run": "/r", "checkpoint": "/r/best.safetensors", "weight": 0.6}
    good = {"format": "microgesture-ensemble", "members": [member, {**member, "name": "joint", "weight": 0.4}],
            "labels": ["a", "b"]}
    (tmp_path / ENSEMBLE_FILE).write_text(json.dumps(good))
    assert is_ensemble_run(tmp_path) and read_ensemble_run(tmp_path)["labels"] == ["a", "b"]
    for bad, message in (({**good, "members": [member]}, "sum to 1"), ({**good, "labels": []}, "no labels"),
                         ({**good, "members": [{"name": "x"}]}, "name, run, checkpoint and weight")):
        (tmp_path / ENSEMBLE_FILE).write_text(json.dumps(bad))
        with pytest.raises(MicrogestureError, match=message):
            read_ensemble_run(tmp_path)
    (tmp_path / ENSEMBLE_FILE).write_text("[1, 2]")
    with pytest.raises(MicrogestureError, match="not a microgesture ensemble"):
        read_ensemble_run(tmp_path)
    (tmp_path / ENSEMBLE_FILE).write_text("{")
    with pytest.raises(MicrogestureError, match="not readable JSON"):
        read_ensemble_run(tmp_path)
