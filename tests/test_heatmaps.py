"""Keypoints -> heatmaps: values against a dense reference, boxes, flips and input checks."""

import numpy as np
import pytest

from microgesture.core.errors import MicrogestureError
from microgesture.core.heatmaps import (box_to_output, compact_box, flip_heatmaps, joint_heatmaps,
                                        limb_flip_permutation, limb_heatmaps)
from microgesture.core.layouts import flip_keypoints, get_layout


def dense_joints(kp, sc, size, sigma):
    """Reference: the formula evaluated on the full grid, joint by joint. kp (M, T, V, 2)."""
    h, w = size
    y, x = np.mgrid[:h, :w]
    out = np.zeros((kp.shape[2], kp.shape[1], h, w))
    for m, t, v in np.ndindex(*sc.shape):
        if sc[m, t, v] > 0 and np.isfinite(kp[m, t, v]).all():
            d2 = (x - kp[m, t, v, 0]) ** 2 + (y - kp[m, t, v, 1]) ** 2
            g = sc[m, t, v] * np.exp(-d2 / (2 * sigma**2)) * (d2 <= 9 * sigma**2)
            out[v, t] = np.maximum(out[v, t], g)
    return out


def dense_limbs(kp, sc, limbs, size, sigma):
    """Reference: distance to the segment via the clamped projection parameter, pixel by pixel grid."""
    h, w = size
    grid = np.stack(np.mgrid[:h, :w][::-1], -1).astype(float)  # (H, W, 2) as (x, y)
    out = np.zeros((len(limbs), kp.shape[1], h, w))
    for m, t in np.ndindex(*sc.shape[:2]):
        for k, (i, j) in enumerate(limbs):
            value = min(sc[m, t, i], sc[m, t, j])
            if not value > 0:
                continue
            a, b = kp[m, t, i], kp[m, t, j]
            ab = b - a
            u = np.clip(((grid - a) @ ab) / max(ab @ ab, 1e-12), 0, 1)
            d2 = ((grid - (a + u[..., None] * ab)) ** 2).sum(-1)
            g = value * np.exp(-d2 / (2 * sigma**2)) * (d2 <= 9 * sigma**2)
            out[k, t] = np.maximum(out[k, t], g)
    return out


def random_pose(shape, size, seed=0, margin=0.0):
    rng = np.random.default_rng(seed)
    h, w = size
    kp = rng.uniform(-margin, 1 + margin, (*shape, 2)) * (w, h)
    return kp, rng.uniform(0.2, 1.0, shape)


# --- joints -------------------------------------------------------------------------------------------

def test_peak_at_the_integer_pixel_with_the_score():
    kp, sc = np.array([[[10.0, 20.0]]]), np.array([[0.7]])
    hm = joint_heatmaps(kp, sc, (56, 56), 0.6)
    assert hm.shape == (1, 1, 56, 56) and hm.dtype == np.float32
    assert np.unravel_index(hm[0, 0].argmax(), (56, 56)) == (20, 10)
    assert hm[0, 0, 20, 10] == np.float32(0.7)  # exactly the score
    assert hm[0, 0, 20, 11] == pytest.approx(0.7 * np.exp(-1 / (2 * 0.36)), rel=1e-6)


def test_non_square_output_keeps_x_and_y_apart():
    hm = joint_heatmaps(np.array([[[60.0, 40.0]]]), np.ones((1, 1)), (48, 64), 1.0)
    assert hm.shape == (1, 1, 48, 64)
    assert np.unravel_index(hm[0, 0].argmax(), (48, 64)) == (40, 60)


@pytest.mark.parametrize("size,sigma", [((56, 56), 0.6), ((40, 64), 2.5), ((32, 32), 6.0)])
def test_joint_heatmaps_match_the_dense_formula(size, sigma):
    kp, sc = random_pose((2, 5, 17), size, margin=0.1)  # two people, some joints just outside the image
    sc[0, 0, :3] = 0.0
    hm = joint_heatmaps(kp, sc, size, sigma)
    np.testing.assert_allclose(hm, dense_joints(kp, sc, size, sigma), atol=1e-6)


def test_three_sigma_cut():
    sigma = 2.0
    kp, sc = np.array([[[20.0, 20.0]]]), np.ones((1, 1))
    hm = joint_heatmaps(kp, sc, (40, 40), sigma)[0, 0]
    assert hm[20, 20 + 5] > 0  # 2.5 sigma
    assert hm[20 + 4, 20 + 4] > 0  # 2.83 sigma
    assert hm[20, 20 + 7] == 0  # 3.5 sigma
    assert hm[20 + 5, 20 + 5] == 0  # 3.54 sigma: inside the 3-sigma square, outside the circle
    assert hm[20 + 6, 20] > 0  # exactly 3 sigma: kept, only what lies beyond is cut
    assert hm[20 + 7, 20] == 0

def test_missing_and_nan_joints_draw_nothing():
    kp, sc = random_pose((4, 5), (56, 56))
    sc[0, 1] = 0.0
    sc[1, 2] = np.nan
    kp[2, 3] = np.nan
    kp[3, 4, 0] = np.inf
    kp[0, 2, 1] = 1e7  # beyond any image: a broken estimate
    sc[3, 0] = -1.0
    hm = joint_heatmaps(kp, sc, (56, 56), 1.5)
    assert np.isfinite(hm).all()
    for t, v in ((0, 1), (1, 2), (2, 3), (3, 4), (3, 0), (0, 2)):
        assert not hm[v, t].any()
    assert hm[1, 1].max() > 0  # the others are drawn
    clean = sc.copy()
    clean[[0, 1, 2, 3, 3, 0], [1, 2, 3, 4, 0, 2]] = 0.0
    np.testing.assert_allclose(hm, dense_joints(np.nan_to_num(kp, posinf=0)[None], clean[None], (56, 56), 1.5),
                               atol=1e-6)


def test_multi_person_max_merge():
    kp = np.array([[[[10.0, 10.0]]], [[[12.0, 10.0]]]])  # (M=2, T=1, V=1, 2)
    sc = np.array([[[0.5]], [[0.9]]])
    both = joint_heatmaps(kp, sc, (32, 32), 1.0)
    one, two = joint_heatmaps(kp[0], sc[0], (32, 32), 1.0), joint_heatmaps(kp[1], sc[1], (32, 32), 1.0)
    np.testing.assert_array_equal(both, np.maximum(one, two))
    assert both[0, 0, 10, 10] == np.float32(0.5) and both[0, 0, 10, 12] == np.float32(0.9)


def test_one_frame_at_a_time_equals_the_clip():
    """Streaming draws frame by frame what training draws for a whole clip."""
    kp, sc = random_pose((6, 22), (64, 64), seed=2)
    clip = joint_heatmaps(kp, sc, (64, 64), 0.6)
    limbs = limb_heatmaps(kp, sc, "imigue22", (64, 64), 0.6)
    for t in range(6):
        np.testing.assert_array_equal(joint_heatmaps(kp[t:t + 1], sc[t:t + 1], (64, 64), 0.6), clip[:, t:t + 1])
        np.testing.assert_allclose(limb_heatmaps(kp[t:t + 1], sc[t:t + 1], "imigue22", (64, 64), 0.6),
                                   limbs[:, t:t + 1], atol=1e-6)


# --- boxes --------------------------------------------------------------------------------------------

def test_box_crops_and_scales_to_the_output():
    box = (100, 50, 324, 274)  # 224 x 224 source pixels -> 56 x 56: a factor of 1/4
    kp = np.array([[[141.5, 131.5]]])  # (141.5 + 0.5 - 100) / 4 - 0.5 = 10, (131.5 + 0.5 - 50) / 4 - 0.5 = 20
    np.testing.assert_allclose(box_to_output(kp, box, (56, 56)), [[[10.0, 20.0]]])
    hm = joint_heatmaps(kp, np.ones((1, 1)), (56, 56), 0.6, box=box)
    assert np.unravel_index(hm[0, 0].argmax(), (56, 56)) == (20, 10)
    assert hm[0, 0, 20, 10] == 1.0
    np.testing.assert_array_equal(hm, joint_heatmaps(np.array([[[10.0, 20.0]]]), np.ones((1, 1)), (56, 56), 0.6))


def test_box_mapping_matches_cv2_resize():
    """A linear ramp resized with cv2 tells where each output pixel centre came from."""
    cv2 = pytest.importorskip("cv2")
    x0, y0, x1, y1 = 30, 10, 130, 60  # 100 x 50 crop -> 56 x 40 (H, W), different scales on x and y
    ramp_x = np.tile(np.arange(200, dtype=np.float32), (100, 1))
    ramp_y = ramp_x.T.copy()
    out_x = cv2.resize(ramp_x[y0:y1, x0:x1], (40, 56), interpolation=cv2.INTER_LINEAR)
    out_y = cv2.resize(ramp_y[y0:y1, x0:x1], (40, 56), interpolation=cv2.INTER_LINEAR)
    src = np.stack([out_x, out_y], -1)[3:-3, 3:-3]  # source coordinates of interior output pixels
    rows, cols = np.mgrid[3:53, 3:37]
    np.testing.assert_allclose(box_to_output(src, (x0, y0, x1, y1), (56, 40)), np.stack([cols, rows], -1), atol=1e-3)


def test_compact_box_pads_and_squares():
    # pixel centres 99.5..199.5 and 49.5..99.5 -> tight box [100, 200] x [50, 100] in slice coordinates
    kp = np.array([[[99.5, 49.5], [199.5, 99.5], [150.0, 70.0]]])
    sc = np.ones((1, 3))
    assert compact_box(kp, sc, (400, 300)) == pytest.approx((87.5, 12.5, 212.5, 137.5))
    assert compact_box(kp, sc, (400, 300), hw_ratio=None) == pytest.approx((87.5, 43.75, 212.5, 106.25))
    assert compact_box(kp, sc, (400, 300), padding=0.0, hw_ratio=None) == pytest.approx((100, 50, 200, 100))
    assert compact_box(kp, sc, (200, 120), allow_imgpad=False) == pytest.approx((87.5, 12.5, 200, 120))
    tall = compact_box(kp, sc, (400, 300), padding=0.0, hw_ratio=(2.0, 3.0))  # h/w in [2, 3]
    assert (tall[3] - tall[1]) / (tall[2] - tall[0]) == pytest.approx(2.0)


def test_compact_box_covers_all_frames_and_people_and_ignores_missing_joints():
    kp = np.zeros((2, 3, 2, 2))  # (M, T, V, 2)
    kp[0, 0] = [[99.5, 49.5], [150, 60]]
    kp[1, 2] = [[150, 60], [199.5, 99.5]]
    sc = np.zeros((2, 3, 2))
    sc[0, 0] = sc[1, 2] = 1.0
    kp[0, 1] = [[-500, -500], [900, 900]]  # score 0: ignored
    kp[1, 0, 0] = np.nan
    sc[1, 0, 0] = 1.0
    assert compact_box(kp, sc, (400, 300), padding=0.0, hw_ratio=None) == pytest.approx((100, 50, 200, 100))
    sc[0, 0, 1] = 0.3
    sc[1, 2, 1] = 0.3
    # threshold: joints scoring 0.3 no longer count
    assert compact_box(kp, sc, (400, 300), padding=0.0, hw_ratio=None, threshold=0.5) == pytest.approx(
        (100, 50, 150.5, 60.5))


def test_compact_box_falls_back_to_the_whole_image():
    kp = np.array([[[10.0, 10.0], [12.0, 11.0]]])
    assert compact_box(kp, np.zeros((1, 2)), (640, 480)) == (0, 0, 640, 480)  # nothing valid
    assert compact_box(kp, np.ones((1, 2)), (640, 480)) == (0, 0, 640, 480)  # smaller than min_size
    assert compact_box(kp, np.ones((1, 2)), (640, 480), min_size=1.0) != (0, 0, 640, 480)


# --- limbs --------------------------------------------------------------------------------------------

def test_limb_is_maximal_along_the_segment_and_zero_off_it():
    kp = np.array([[[10.0, 20.0], [40.0, 20.0]]])
    sc = np.array([[0.8, 0.6]])
    hm = limb_heatmaps(kp, sc, [(0, 1)], (48, 56), 1.0)
    assert hm.shape == (1, 1, 48, 56) and hm.dtype == np.float32
    np.testing.assert_array_equal(hm[0, 0, 20, 10:41], np.float32(0.6))  # min of the two scores, all along
    assert hm[0, 0].max() == np.float32(0.6)
    assert hm[0, 0, 21, 25] == pytest.approx(0.6 * np.exp(-0.5), rel=1e-6)
    assert not hm[0, 0, 24:].any() and not hm[0, 0, :17].any()  # beyond 3 sigma across
    assert not hm[0, 0, :, 44:].any() and not hm[0, 0, :, :7].any()  # beyond 3 sigma past the ends


@pytest.mark.parametrize("size,sigma,people,frames", [((56, 56), 0.6, 1, 8), ((64, 48), 1.5, 2, 3),
                                                      ((32, 32), 4.0, 1, 2)])
def test_limb_heatmaps_match_the_dense_formula(size, sigma, people, frames):
    layout = get_layout("coco17")
    kp, sc = random_pose((people, frames, 17), size, seed=5, margin=0.1)
    sc[0, 0, 5] = 0.0  # a missing shoulder removes its limbs in that frame
    kp[0, 1, 3] = kp[0, 1, 1]  # a zero-length limb
    hm = limb_heatmaps(kp, sc, layout, size, sigma)
    np.testing.assert_allclose(hm, dense_limbs(kp, sc, layout.limbs, size, sigma), atol=2e-6)


def test_zero_length_limb_is_a_joint():
    kp = np.array([[[20.3, 11.7], [20.3, 11.7]]])
    sc = np.array([[0.9, 0.4]])
    limb = limb_heatmaps(kp, sc, [(0, 1)], (32, 40), 1.2)
    joint = joint_heatmaps(kp[:, :1], np.array([[0.4]]), (32, 40), 1.2)
    np.testing.assert_allclose(limb, joint, atol=1e-6)


def test_limb_with_a_missing_end_draws_nothing():
    kp = np.array([[[10.0, 10.0], [np.nan, 20.0], [30.0, 10.0]]])
    sc = np.array([[1.0, 1.0, 1.0]])
    hm = limb_heatmaps(kp, sc, [(0, 1), (1, 2), (0, 2)], (32, 40), 1.0)
    assert np.isfinite(hm).all()
    assert not hm[0].any() and not hm[1].any() and hm[2].max() == 1.0


# --- flips --------------------------------------------------------------------------------------------

@pytest.mark.parametrize("layout", ["coco17", "coco18", "imigue35", "imigue22", "mediapipe33",
                                    "mediapipe-holistic75"])
def test_flipped_keypoints_give_flipped_joint_heatmaps(layout):
    v, size = get_layout(layout).num_joints, (40, 56)
    kp, sc = random_pose((3, v), size, seed=7)
    hm = joint_heatmaps(kp, sc, size, 1.3)
    mirrored = joint_heatmaps(*flip_keypoints(kp, sc, layout, width=size[1]), size, 1.3)
    np.testing.assert_allclose(mirrored, flip_heatmaps(hm, layout), atol=1e-6)
    assert not np.allclose(hm, mirrored)  # the test means something: the pose is not symmetric


@pytest.mark.parametrize("layout", ["coco17", "coco18", "imigue35", "mediapipe33", "mediapipe-holistic75"])
def test_flipped_keypoints_give_flipped_limb_heatmaps(layout):
    v, size = get_layout(layout).num_joints, (48, 40)
    kp, sc = random_pose((2, v), size, seed=8)
    hm = limb_heatmaps(kp, sc, layout, size, 0.8)
    mirrored = limb_heatmaps(*flip_keypoints(kp, sc, layout, width=size[1]), layout, size, 0.8)
    np.testing.assert_allclose(mirrored, flip_heatmaps(hm, limb_flip_permutation(layout)), atol=1e-6)


def test_limb_flip_permutation_matches_posec3d():
    perm = limb_flip_permutation("coco17")
    left, right = [0, 2, 4, 5, 6, 10, 11, 12], [1, 3, 7, 8, 9, 13, 14, 15]  # mmaction2 left_limb / right_limb
    np.testing.assert_array_equal(perm[left], right)
    np.testing.assert_array_equal(perm[right], left)
    assert perm[16] == 16  # hip to hip is its own mirror


def test_imigue22_anatomical_limbs_flip_by_name():
    layout = get_layout("imigue22")
    perm = limb_flip_permutation("imigue22")
    limbs = layout.limbs
    for k, q in enumerate(perm):  # each limb's mirror joins the mirrored joints
        assert {layout.flip_permutation[i] for i in limbs[k]} == set(limbs[q])


def test_flip_heatmaps_batches_and_is_an_involution():
    rng = np.random.default_rng(0)
    batch = rng.random((2, 17, 3, 8, 10)).astype(np.float32)  # (N, V, T, H, W)
    flipped = flip_heatmaps(batch, "coco17")
    assert flipped.flags.c_contiguous and flipped.shape == batch.shape
    np.testing.assert_array_equal(flipped[1, 2, :, :, 0], batch[1, 1, :, :, -1])  # right_eye <- mirrored left_eye
    np.testing.assert_array_equal(flip_heatmaps(flipped, "coco17"), batch)
    channels_first = np.moveaxis(batch, 1, 0)  # (V, N, T, H, W): channels on axis 0
    np.testing.assert_array_equal(flip_heatmaps(channels_first, "coco17", channel_axis=0),
                                  np.moveaxis(flipped, 1, 0))


# --- input checks -------------------------------------------------------------------------------------

GOOD_KP, GOOD_SC = np.zeros((4, 17, 2)), np.ones((4, 17))


@pytest.mark.parametrize("kwargs,message", [
    (dict(keypoints=np.zeros((17, 2))), r"keypoints must have shape \(T, V, 2\) or \(M, T, V, 2\)"),
    (dict(keypoints=np.zeros((4, 17, 3))), r"keypoints must have shape"),
    (dict(scores=np.ones((4, 16))), r"scores must have shape \(4, 17\)"),
    (dict(scores=[["x"] * 17] * 4), "numeric"),
    (dict(sigma=0), "sigma must be a positive"),
    (dict(sigma=-1.0), "sigma must be a positive"),
    (dict(sigma=float("nan")), "sigma must be a positive"),
    (dict(size=(0, 56)), r"size must be two positive integers \(H, W\)"),
    (dict(size=(56,)), "size must be two positive integers"),
    (dict(size=(56.5, 56)), "size must be two positive integers"),
    (dict(box=(10, 10, 5, 20)), r"box must be \(x0, y0, x1, y1\)"),
])
def test_bad_input_is_reported(kwargs, message):
    args = dict(keypoints=GOOD_KP, scores=GOOD_SC, size=(56, 56), sigma=0.6) | kwargs
    with pytest.raises(MicrogestureError, match=message):
        joint_heatmaps(**args)
    with pytest.raises(MicrogestureError, match=message):
        limb_heatmaps(limbs="coco17", **args)


def test_bad_limbs_flips_and_boxes_are_reported():
    with pytest.raises(MicrogestureError, match=r"limbs must be .* indices in \[0, 17\)"):
        limb_heatmaps(GOOD_KP, GOOD_SC, [(0, 17)], (56, 56), 0.6)
    with pytest.raises(MicrogestureError, match="limb_flip_permutation"):
        flip_heatmaps(np.zeros((17, 1, 4, 4)), limb_flip_permutation("mediapipe33"))
    with pytest.raises(MicrogestureError, match=r"\(\.\.\., C, T, H, W\)"):
        flip_heatmaps(np.zeros((4, 4)), "coco17")
    with pytest.raises(MicrogestureError, match=r"image_size must be two positive integers \(W, H\)"):
        compact_box(GOOD_KP, GOOD_SC, (640,))
    with pytest.raises(MicrogestureError, match="hw_ratio"):
        compact_box(GOOD_KP, GOOD_SC, (640, 480), hw_ratio=(2.0, 1.0))
    with pytest.raises(MicrogestureError, match="padding"):
        compact_box(GOOD_KP, GOOD_SC, (640, 480), padding=-0.1)
