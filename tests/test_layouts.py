"""Skeleton layouts: the tables, their flip pairs and limbs, and conversion between layouts."""

import re

import numpy as np
import pytest

from microgesture.core.errors import MicrogestureError, UnknownNameError
from microgesture.core.layouts import (LAYOUTS, Layout, convert, flip_keypoints, get_layout, mapping_matrix,
                                       mirror_name, missing_joints)

SIZES = {"imigue35": 35, "imigue22": 22, "coco18": 18, "coco17": 17, "mediapipe33": 33,
         "mediapipe-hand21": 21, "mediapipe-holistic75": 75}


def mirrored(name: str) -> str:
    """A joint name with its side swapped, read from the name itself (not from any layout table)."""
    swapped = re.sub(r"left|right|Left|Right",
                     lambda m: {"left": "right", "right": "left", "Left": "Right", "Right": "Left"}[m.group(0)], name)
    if swapped == name and re.match(r"^[LR][A-Z]", name):  # OpenPose: RShoulder, LEye, LThumbTip
        swapped = {"L": "R", "R": "L"}[name[0]] + name[1:]
    return swapped


def components(layout: Layout) -> int:
    """Number of connected components of the limb graph."""
    parent = list(range(layout.num_joints))

    def root(i):
        while parent[i] != i:
            i = parent[i]
        return i

    for a, b in layout.limbs:
        parent[root(a)] = root(b)
    return len({root(i) for i in range(layout.num_joints)})


def test_registry_has_the_expected_layouts():
    assert {name: layout.num_joints for name, layout in LAYOUTS.items()} == SIZES
    assert all(layout.name == name for name, layout in LAYOUTS.items())


@pytest.mark.parametrize("name", sorted(SIZES))
def test_layout_is_self_consistent(name):
    layout = get_layout(name)
    assert len(set(layout.joints)) == layout.num_joints
    assert len(set(layout.canonical)) == layout.num_joints
    perm = layout.flip_permutation
    assert perm.dtype.kind == "i" and sorted(perm) == list(range(layout.num_joints))
    np.testing.assert_array_equal(perm[perm], np.arange(layout.num_joints))  # an involution
    for i, j in enumerate(perm):  # left_* <-> right_*, by the joint names themselves
        assert layout.joints[j] == mirrored(layout.joints[i]), (layout.joints[i], layout.joints[j])
    assert all(0 <= a < layout.num_joints and 0 <= b < layout.num_joints and a != b for a, b in layout.limbs)
    assert {i for limb in layout.limbs for i in limb} == set(range(layout.num_joints))  # no loose joint
    # MediaPipe's pose graph leaves face, mouth and body apart; Holistic adds two hands.
    assert components(layout) == {"mediapipe33": 3, "mediapipe-holistic75": 5}.get(name, 1)


def test_openpose_and_imigue_orders():
    body25 = get_layout("imigue35")
    assert body25.joints[:9] == ("Nose", "Neck", "RShoulder", "RElbow", "RWrist", "LShoulder", "LElbow", "LWrist",
                                 "MidHip")
    assert body25.joints[24] == "RHeel"
    # fingertips: left hand first (OpenPose's hand order), thumb to pinky
    assert [body25.canonical[i] for i in (25, 29, 30, 34)] == ["left_thumb_tip", "left_pinky_tip", "right_thumb_tip",
                                                               "right_pinky_tip"]
    assert {(7, 25 + k) for k in range(5)} | {(4, 30 + k) for k in range(5)} <= set(body25.limbs)

    coco18 = get_layout("coco18")
    assert coco18.joints == body25.joints[:8] + body25.joints[9:19]

    imigue22 = get_layout("imigue22")
    assert imigue22.joints[:12] == ("Nose", "ShoulderCenter", "ShoulderLeft", "ElbowLeft", "HandLeft",
                                    "ShoulderRight", "ElbowRight", "HandRight", "EyeLeft", "EyeRight", "EarLeft",
                                    "EarRight")
    assert imigue22.joints[12] == "RightFinger1" and imigue22.joints[21] == "LeftFinger5"
    # the release names the viewer's side: its ShoulderLeft/HandLeft are the subject's right ones
    assert imigue22.canonical[2] == "right_shoulder" and imigue22.canonical[4] == "right_wrist"
    assert imigue22.canonical[12] == "left_thumb_tip" and imigue22.canonical[21] == "right_pinky_tip"
    # anatomical limbs (the default): each hand joins its own five fingertips
    body = [(1, 0), (1, 2), (2, 3), (3, 4), (1, 5), (5, 6), (6, 7), (0, 8), (8, 10), (0, 9), (9, 11)]
    hands = [(7, 12 + k) for k in range(5)] + [(4, 17 + k) for k in range(5)]
    assert list(imigue22.limbs) == body + hands and imigue22.limb_set("anatomical") == imigue22.limbs
    # the published list, verbatim, as a named set
    release = [(2, 1), (2, 3), (3, 4), (4, 5), (2, 6), (6, 7), (7, 8), (1, 9), (9, 11), (1, 10), (10, 11)]
    assert list(imigue22.limb_set("release")) == release + [(5, 12 + k) for k in range(5)] + [
        (8, 17 + k) for k in range(5)]
    with pytest.raises(MicrogestureError, match="unknown imigue22 limb set 'relase'.*release"):
        imigue22.limb_set("relase")
    # flip pairs follow the names: each hand's tips swap with the other hand's
    assert (2, 5) in imigue22.flip_pairs and (4, 7) in imigue22.flip_pairs and (12, 17) in imigue22.flip_pairs
    for i, j in imigue22.flip_pairs:
        assert imigue22.canonical[j] == mirror_name(imigue22.canonical[i])


def test_the_35_and_22_joint_readers_agree_on_one_raw_frame(tmp_path):
    """One raw _light_hand.csv frame, read as the 35-joint file and as the challenge converter's
    22 joints, gives the same COCO-18 skeleton (not its mirror image)."""
    from microgesture.core.imigue import read_light_hand, to_challenge22

    rng = np.random.default_rng(3)
    raw = np.concatenate([rng.uniform(100, 1800, (35, 2)), rng.uniform(0.3, 1, (35, 1))], 1)
    raw[5, 0], raw[2, 0] = 1200.0, 700.0  # LShoulder on the image's right: a subject facing the camera
    path = tmp_path / "0001_light_hand.csv"
    path.write_text("frame," + ",".join(f"{c}{j}" for j in range(35) for c in "xys") + "\n"
                    + "0," + ",".join(f"{v:.3f}" for v in raw.ravel()) + "\n")
    kp35, sc35 = read_light_hand(path)
    kp22, sc22 = to_challenge22(kp35, sc35)
    a_kp, a_sc = convert(kp35, sc35, "imigue35", "coco18")
    b_kp, b_sc = convert(kp22, sc22, "imigue22", "coco18")
    both = (a_sc > 0) & (b_sc > 0)
    assert both.sum() == 12  # all but the hips and legs, which the 22 joints lack
    np.testing.assert_array_equal(a_kp[both], b_kp[both])
    coco = get_layout("coco18")
    assert b_kp[0, coco.index("left_shoulder"), 0] > b_kp[0, coco.index("right_shoulder"), 0]


def test_coco17_matches_posec3d():
    coco17 = get_layout("coco17")
    # mmaction2 GeneratePoseTarget's left_kp / right_kp
    expected = np.arange(17)
    expected[[1, 3, 5, 7, 9, 11, 13, 15]], expected[[2, 4, 6, 8, 10, 12, 14, 16]] = (
        [2, 4, 6, 8, 10, 12, 14, 16], [1, 3, 5, 7, 9, 11, 13, 15])
    np.testing.assert_array_equal(coco17.flip_permutation, expected)
    assert coco17.limbs[0] == (0, 1) and coco17.limbs[-1] == (11, 12) and len(coco17.limbs) == 17


def test_mediapipe_tables_match_mediapipe():
    pytest.importorskip("mediapipe")
    from mediapipe.python.solutions.hands import HAND_CONNECTIONS, HandLandmark
    from mediapipe.python.solutions.pose import POSE_CONNECTIONS, PoseLandmark

    pose, hand = get_layout("mediapipe33"), get_layout("mediapipe-hand21")
    assert list(pose.joints) == [lm.name.lower() for lm in PoseLandmark]
    assert set(pose.limbs) == set(POSE_CONNECTIONS)
    assert list(hand.joints) == [lm.name.lower() for lm in HandLandmark]
    assert set(hand.limbs) == set(HAND_CONNECTIONS)
    holistic = get_layout("mediapipe-holistic75")
    assert holistic.joints[:33] == pose.joints
    assert holistic.joints[33:54] == tuple(f"left_hand.{n}" for n in hand.joints)
    assert holistic.joints[54:] == tuple(f"right_hand.{n}" for n in hand.joints)
    assert set(holistic.limbs) == set(pose.limbs) | {(a + o, b + o) for o in (33, 54) for a, b in hand.limbs}


def test_index_and_unknown_names():
    coco17 = get_layout("coco17")
    assert coco17.index("left_wrist") == 9
    assert get_layout("imigue35").index("LWrist") == get_layout("imigue35").index("left_wrist") == 7
    with pytest.raises(UnknownNameError, match="Did you mean 'left_wrist'"):
        coco17.index("left_wirst")
    with pytest.raises(UnknownNameError, match="unknown layout 'coco_17'. Did you mean 'coco17'"):
        get_layout("coco_17")
    with pytest.raises(MicrogestureError, match="name or a Layout"):
        get_layout(17)
    assert get_layout(coco17) is coco17


def test_layout_rejects_broken_tables():
    with pytest.raises(MicrogestureError, match="duplicate joint names"):
        Layout("bad", ("a", "a"), (), ())
    with pytest.raises(MicrogestureError, match=r"limbs \[\(0, 2\)\]"):
        Layout("bad", ("a", "b"), (), ((0, 2),))
    with pytest.raises(MicrogestureError, match="duplicate limbs"):
        Layout("bad", ("a", "b"), (), ((0, 1), (1, 0)))
    custom = Layout("custom", ("l", "c", "r"), ((0, 2),), ((0, 1), (1, 2)))
    assert custom.canonical == custom.joints and list(custom.flip_permutation) == [2, 1, 0]


# --- conversion ---------------------------------------------------------------------------------------

def pose_in(layout_name, seed=0):
    """Random keypoints (V, 2) in 1920x1080 and scores (V,) in [0.5, 1) for a layout."""
    rng = np.random.default_rng(seed)
    v = SIZES[layout_name]
    return rng.uniform(0, 1000, (v, 2)), rng.uniform(0.5, 1.0, v)


def at(layout_name, joint):
    return get_layout(layout_name).index(joint)


DIRECT = [  # (src, dst): every dst joint is a copy of the src joint with the same canonical name
    ("imigue35", "imigue22"), ("imigue35", "coco18"), ("coco18", "coco17"), ("mediapipe33", "coco17"),
    ("mediapipe-holistic75", "mediapipe33"), ("imigue22", "imigue35"),
]


@pytest.mark.parametrize("src,dst", DIRECT)
def test_direct_conversions_copy_joints(src, dst):
    kp, sc = pose_in(src)
    out_kp, out_sc = convert(kp, sc, src, dst)
    s, d = get_layout(src), get_layout(dst)
    for j, c in enumerate(d.canonical):
        if c in s.canonical:
            i = s.canonical.index(c)
            np.testing.assert_array_equal(out_kp[j], kp[i])
            assert out_sc[j] == sc[i]
        else:
            assert out_sc[j] == 0 and np.isnan(out_kp[j]).all()


def test_imigue35_to_imigue22_by_name():
    kp, sc = pose_in("imigue35")
    out, _ = convert(kp, sc, "imigue35", "imigue22")
    pairs = {"HandLeft": "RWrist", "ShoulderRight": "LShoulder", "ShoulderCenter": "Neck", "EarLeft": "REar",
             "RightFinger1": "LThumbTip", "LeftFinger5": "RPinkyTip", "LeftFinger3": "RMiddleTip"}
    for dst, src in pairs.items():
        np.testing.assert_array_equal(out[at("imigue22", dst)], kp[at("imigue35", src)])


def test_coco17_to_coco18_derives_the_neck():
    kp, sc = pose_in("coco17")
    kp[5], sc[5] = (10, 20), 0.9  # left_shoulder
    kp[6], sc[6] = (30, 40), 0.6  # right_shoulder
    out, out_sc = convert(kp, sc, "coco17", "coco18")
    np.testing.assert_allclose(out[1], (20, 30))
    assert out_sc[1] == pytest.approx(0.6)
    np.testing.assert_array_equal(out[at("coco18", "LWrist")], kp[9])
    assert missing_joints("coco17", "coco18") == ()


@pytest.mark.parametrize("src", ["mediapipe33", "mediapipe-holistic75"])
def test_mediapipe_to_coco18(src):
    kp, sc = pose_in(src)
    out, out_sc = convert(kp, sc, src, "coco18")
    ls, rs = at(src, "left_shoulder"), at(src, "right_shoulder")
    np.testing.assert_allclose(out[1], (kp[ls] + kp[rs]) / 2)
    assert out_sc[1] == min(sc[ls], sc[rs])
    np.testing.assert_array_equal(out[at("coco18", "LEye")], kp[at(src, "left_eye")])  # not eye_inner/outer
    np.testing.assert_array_equal(out[at("coco18", "RHip")], kp[at(src, "right_hip")])
    assert (out_sc > 0).all()


def test_mediapipe33_to_imigue22_approximates_fingertips_from_knuckles():
    kp, sc = pose_in("mediapipe33")
    out, out_sc = convert(kp, sc, "mediapipe33", "imigue22")
    thumb, index, pinky = (at("mediapipe33", f"left_{f}") for f in ("thumb", "index", "pinky"))
    # the subject's left hand is the release's "Right" one (it names the viewer's side)
    np.testing.assert_array_equal(out[at("imigue22", "left_thumb_tip")], kp[thumb])
    assert at("imigue22", "left_thumb_tip") == at("imigue22", "RightFinger1")
    np.testing.assert_array_equal(out[at("imigue22", "left_index_tip")], kp[index])
    np.testing.assert_allclose(out[at("imigue22", "left_middle_tip")], 2 / 3 * kp[index] + 1 / 3 * kp[pinky])
    np.testing.assert_allclose(out[at("imigue22", "left_ring_tip")], 1 / 3 * kp[index] + 2 / 3 * kp[pinky])
    np.testing.assert_array_equal(out[at("imigue22", "left_pinky_tip")], kp[pinky])
    assert out_sc[at("imigue22", "left_middle_tip")] == min(sc[index], sc[pinky])
    np.testing.assert_allclose(out[at("imigue22", "ShoulderCenter")],
                               (kp[at("mediapipe33", "left_shoulder")] + kp[at("mediapipe33", "right_shoulder")]) / 2)
    np.testing.assert_array_equal(out[at("imigue22", "right_wrist")], kp[at("mediapipe33", "right_wrist")])
    assert (out_sc > 0).all()


def test_holistic_to_imigue22_takes_fingertips_from_the_hands():
    kp, sc = pose_in("mediapipe-holistic75")
    out, out_sc = convert(kp, sc, "mediapipe-holistic75", "imigue22")
    for side, prefix in (("Right", "left_hand"), ("Left", "right_hand")):  # the release names the viewer's side
        for k, tip in enumerate(("thumb_tip", "index_finger_tip", "middle_finger_tip", "ring_finger_tip", "pinky_tip")):
            src = 33 + 21 * (prefix == "right_hand") + (4, 8, 12, 16, 20)[k]
            assert get_layout("mediapipe-holistic75").joints[src] == f"{prefix}.{tip}"
            np.testing.assert_array_equal(out[at("imigue22", f"{side}Finger{k + 1}")], kp[src])
            assert out_sc[at("imigue22", f"{side}Finger{k + 1}")] == sc[src]
    # the wrist is the pose's wrist (left_wrist = 15), not the hand model's
    np.testing.assert_array_equal(out[at("imigue22", "left_wrist")], kp[15])


def test_imigue22_to_coco18_keeps_its_neck_and_lacks_the_legs():
    kp, sc = pose_in("imigue22")
    out, out_sc = convert(kp, sc, "imigue22", "coco18")
    np.testing.assert_array_equal(out[1], kp[1])  # ShoulderCenter copied, not re-derived
    legs = ["RHip", "RKnee", "RAnkle", "LHip", "LKnee", "LAnkle"]
    assert missing_joints("imigue22", "coco18") == tuple(legs)
    for joint in legs:
        assert out_sc[at("coco18", joint)] == 0 and np.isnan(out[at("coco18", joint)]).all()
    np.testing.assert_array_equal(out[at("coco18", "LWrist")], kp[at("imigue22", "HandRight")])


def test_missing_source_joints_give_score_zero_and_nan():
    kp, sc = pose_in("coco17")
    sc[5] = 0.0  # left_shoulder: missing -> neck cannot be derived
    kp[9] = np.nan  # left_wrist: NaN coordinates with a positive score are missing too
    sc[10] = np.nan  # right_wrist: NaN score
    out, out_sc = convert(kp, sc, "coco17", "coco18")
    for joint in ("Neck", "LShoulder", "LWrist", "RWrist"):
        j = at("coco18", joint)
        assert out_sc[j] == 0 and np.isnan(out[j]).all(), joint
    assert np.isfinite(out[at("coco18", "RShoulder")]).all()
    assert ((out_sc > 0) == np.isfinite(out).all(-1)).all()


def test_round_trip_coco18_coco17_coco18():
    kp, sc = pose_in("coco18")
    back, back_sc = convert(*convert(kp, sc, "coco18", "coco17"), "coco17", "coco18")
    keep = np.arange(18) != 1
    np.testing.assert_array_equal(back[keep], kp[keep])
    np.testing.assert_array_equal(back_sc[keep], sc[keep])
    np.testing.assert_allclose(back[1], (kp[2] + kp[5]) / 2)  # neck re-derived from the shoulders
    assert back_sc[1] == min(sc[2], sc[5])


def test_round_trip_imigue22_imigue35_imigue22():
    kp, sc = pose_in("imigue22")
    back, back_sc = convert(*convert(kp, sc, "imigue22", "imigue35"), "imigue35", "imigue22")
    np.testing.assert_array_equal(back, kp)
    np.testing.assert_array_equal(back_sc, sc)


def test_convert_any_batch_shape_and_dtype():
    rng = np.random.default_rng(1)
    kp = rng.uniform(0, 100, (2, 3, 4, 33, 2)).astype(np.float32)
    sc = rng.uniform(0, 1, (2, 3, 4, 33)).astype(np.float32)
    out, out_sc = convert(kp, sc, "mediapipe33", "imigue22")
    assert out.shape == (2, 3, 4, 22, 2) and out_sc.shape == (2, 3, 4, 22)
    assert out.dtype == np.float32 and out_sc.dtype == np.float32
    one, one_sc = convert(kp[1, 2, 3], sc[1, 2, 3], "mediapipe33", "imigue22")
    np.testing.assert_allclose(out[1, 2, 3], one, rtol=1e-6)
    np.testing.assert_array_equal(out_sc[1, 2, 3], one_sc)


def test_mapping_matrix():
    m = mapping_matrix("coco17", "coco18")
    assert m.shape == (18, 17)
    np.testing.assert_allclose(m[1], np.eye(17)[5] * 0.5 + np.eye(17)[6] * 0.5)
    np.testing.assert_allclose(m.sum(1), 1.0)
    m[:] = 0  # a copy: the cached plan is untouched
    assert mapping_matrix("coco17", "coco18")[1, 5] == 0.5
    legs = mapping_matrix("imigue22", "coco18")[[8, 9, 10, 11, 12, 13]]
    assert not legs.any()
    assert missing_joints("mediapipe33", "imigue35") == ("LSmallToe", "RSmallToe")


CONVERSIONS = [("imigue35", "imigue22"), ("imigue35", "coco18"), ("coco18", "coco17"), ("coco17", "coco18"),
               ("mediapipe33", "coco17"), ("mediapipe33", "coco18"), ("mediapipe33", "imigue22"),
               ("mediapipe-holistic75", "imigue22"), ("mediapipe-holistic75", "coco18"), ("imigue22", "coco18"),
               ("mediapipe33", "imigue35")]


@pytest.mark.parametrize("src,dst", CONVERSIONS)
def test_flip_then_convert_equals_convert_then_flip(src, dst):
    kp, sc = pose_in(src, seed=3)
    sc[2] = 0.0  # a missing joint, to check that it stays missing on both paths
    width = 1920
    a_kp, a_sc = convert(*flip_keypoints(kp, sc, src, width), src, dst)
    b_kp, b_sc = flip_keypoints(*convert(kp, sc, src, dst), dst, width)
    np.testing.assert_allclose(a_kp, b_kp, rtol=1e-12)  # NaN where NaN
    np.testing.assert_array_equal(a_sc, b_sc)


def test_flip_keypoints():
    kp, sc = pose_in("coco17")
    kp[9], sc[9] = (10.0, 5.0), 0.7  # left_wrist
    out, out_sc = flip_keypoints(kp, sc, "coco17", width=100)
    np.testing.assert_array_equal(out[10], (89.0, 5.0))  # now the right wrist, mirrored about x = 49.5
    assert out_sc[10] == 0.7
    np.testing.assert_array_equal(out[0], (99 - kp[0, 0], kp[0, 1]))  # the nose stays the nose
    np.testing.assert_allclose(flip_keypoints(out, out_sc, "coco17", 100)[0], kp, rtol=1e-12)
    assert kp[9, 0] == 10.0  # input untouched


def test_bad_shapes_are_reported():
    kp, sc = pose_in("coco17")
    with pytest.raises(MicrogestureError, match=r"\(\.\.\., 18, 2\) for layout 'coco18'"):
        convert(kp, sc, "coco18", "coco17")
    with pytest.raises(MicrogestureError, match="scores must have shape"):
        convert(kp, sc[:-1], "coco17", "coco18")
    with pytest.raises(MicrogestureError, match="numeric"):
        convert([["a", "b"]] * 17, sc, "coco17", "coco18")
    with pytest.raises(UnknownNameError):
        convert(kp, sc, "coco17", "coco19")
