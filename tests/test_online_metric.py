"""The MiGA online-track metric on hand-made intervals, and the files online evaluation reads:
iMiGUE label CSVs, own/synthetic interval CSVs, the iMiGUE release tree, tuned settings."""

import json

import pytest

from microgesture.core.errors import MicrogestureError
from microgesture.core.online_metric import Detection, Interval, match_video, prf, score_online, temporal_iou


def gt(label, start, end):
    return Interval(label, start, end)


def det(label, start, end, announced=None):
    return Detection(label, start, end, announced)


# --------------------------------------------------------------------------- IoU and matching

def test_iou_of_inclusive_frame_intervals():
    assert temporal_iou(gt("a", 0, 99), det("a", 0, 99)) == 1.0
    assert temporal_iou(gt("a", 0, 99), det("a", 100, 199)) == 0.0      # touching, no shared frame
    assert temporal_iou(gt("a", 0, 99), det("a", 99, 198)) == pytest.approx(1 / 199)
    assert temporal_iou(gt("a", 10, 19), det("a", 0, 39)) == pytest.approx(10 / 40)


def test_iou_must_be_strictly_above_the_threshold():
    truth = [gt("jaw", 0, 99)]
    at = match_video(truth, [det("jaw", 0, 29)])        # 30 / 100 = 0.3 exactly: not enough
    above = match_video(truth, [det("jaw", 0, 30)])     # 31 / 100
    assert temporal_iou(truth[0], det("jaw", 0, 29)) == pytest.approx(0.3)
    assert (at.tp, len(at.kept)) == (0, 1)
    assert above.tp == 1 and above.pairs[0][2] == pytest.approx(0.31)


def test_the_class_must_match():
    m = match_video([gt("jaw", 0, 99)], [det("neck", 0, 99)])
    assert m.tp == 0 and len(m.kept) == 1


def test_one_match_per_ground_truth():
    truth = [gt("jaw", 0, 99)]
    m = match_video(truth, [det("jaw", 0, 99), det("jaw", 10, 89)])
    assert m.tp == 1 and len(m.kept) == 2                      # the second is a false positive
    assert m.pairs[0][:2] == (0, 0)
    # with a second interval of the class the second detection takes that one
    m = match_video(truth + [gt("jaw", 200, 299)], [det("jaw", 0, 99), det("jaw", 190, 290)])
    assert m.tp == 2 and m.matched_truth() == {0, 1}


def test_a_detection_takes_the_unmatched_truth_it_overlaps_most():
    truth = [gt("jaw", 0, 59), gt("jaw", 50, 149)]
    m = match_video(truth, [det("jaw", 40, 139)])               # IoU 20/140 with the first, 90/110 the second
    assert m.pairs == [(0, 1, pytest.approx(90 / 110))]
    # detections are taken in order of their start: the earlier one claims first
    m = match_video([gt("jaw", 0, 99)], [det("jaw", 20, 99), det("jaw", 0, 99)])
    assert [(m.kept[d].start, t) for d, t, _ in m.pairs] == [(0, 0)]


def test_detections_of_15_frames_or_fewer_are_dropped_first():
    truth = [gt("jaw", 0, 14), gt("neck", 100, 115)]           # 15 and 16 frames
    m = match_video(truth, [det("jaw", 0, 14), det("neck", 100, 115)])
    assert [d.label for d in m.dropped] == ["jaw"] and [d.label for d in m.kept] == ["neck"]
    assert m.tp == 1
    s = score_online({"v": m})
    assert (s["detections"], s["dropped"], s["ground_truth"]) == (1, 1, 2)
    assert (s["precision"], s["recall"]) == (1.0, 0.5)
    # a dropped detection cannot take a ground truth from a later one either
    m = match_video([gt("jaw", 0, 99)], [det("jaw", 0, 10), det("jaw", 0, 99)])
    assert m.tp == 1 and len(m.dropped) == 1


def test_totals_are_summed_over_videos_not_averaged():
    a = match_video([gt("jaw", 0, 99)], [det("jaw", 0, 99)])                                  # 1 of 1
    b = match_video([gt("jaw", 0, 99), gt("neck", 200, 299), gt("neck", 400, 499)], [det("jaw", 600, 699)])
    s = score_online({"a": a, "b": b})
    assert (s["tp"], s["detections"], s["ground_truth"]) == (1, 2, 4)
    assert s["precision"] == 0.5 and s["recall"] == 0.25
    assert s["f1"] == pytest.approx(2 * 0.5 * 0.25 / 0.75)                 # not the mean of 1.0 and 0.0
    assert s["per_video"]["a"]["f1"] == 1.0 and s["per_video"]["b"]["f1"] == 0.0
    jaw = s["per_class"]["jaw"]
    assert (jaw["tp"], jaw["detections"], jaw["ground_truth"], jaw["precision"], jaw["recall"]) == (1, 2, 2, 0.5, 0.5)
    assert s["per_class"]["neck"]["recall"] == 0.0 and s["per_class"]["neck"]["detections"] == 0


def test_delay_from_gesture_start_to_first_event():
    m = match_video([gt("jaw", 30, 89), gt("neck", 200, 259)],
                    [det("jaw", 28, 90, announced=75), det("neck", 210, 250, announced=260)], fps=15.0)
    s = score_online({"v": m})
    assert [d["frames"] for d in m.delays()] == [45, 60]
    assert s["delay"]["median_s"] == pytest.approx((3.0 + 4.0) / 2)
    assert s["per_class"]["neck"]["delay"]["mean_s"] == pytest.approx(4.0)


def test_prf_handles_empty_counts():
    assert prf(0, 0, 0) == {"precision": 0.0, "recall": 0.0, "f1": 0.0}
    assert score_online({})["f1"] == 0.0


# --------------------------------------------------------------------------- files

def test_imigue_label_csv_is_zero_based_inclusive(tmp_path):
    from microgesture.core.imigue import read_label_csv

    path = tmp_path / "0001_label.csv"
    path.write_text("gestureID,start,end\n11,0,40\n1,41,90\n31,100,130\n99,131,200\n")
    assert read_label_csv(path) == [(10, 0, 40), (0, 41, 90), (30, 100, 130), (31, 131, 200)]
    path.write_text("11,0,40\n12,x,3\n")
    with pytest.raises(MicrogestureError, match=r"0001_label.csv:2"):
        read_label_csv(path)
    path.write_text("40,0,40\n")
    with pytest.raises(MicrogestureError, match="out of range"):
        read_label_csv(path)
    path.write_text("11,50,40\n")
    with pytest.raises(MicrogestureError, match="after end frame"):
        read_label_csv(path)


def test_own_long_videos_read_with_splits(tmp_path):
    from microgesture.core.long_videos import open_long_videos

    (tmp_path / "videos").mkdir()
    for name in ("a", "b", "c"):
        (tmp_path / "videos" / f"{name}.mp4").write_bytes(b"")
    (tmp_path / "intervals.csv").write_text("video,label,start_frame,last_frame\na,touching jaw,10,50\n"
                                            "a,head up,60,99\nb,touching jaw,0,20\n")
    (tmp_path / "videos.csv").write_text("video,subject,split\na,p1,train\nb,p2,Validation\nc,p3,test\n")
    found = open_long_videos(tmp_path)
    assert found.kind == "intervals" and found.splits() == ["test", "train", "val"]
    a = found.split("train")[0]
    assert a.truth == (Interval("touching jaw", 10, 50), Interval("head up", 60, 99))
    assert found.split("test")[0].truth == ()                  # listed, no gesture
    (tmp_path / "intervals.csv").write_text("video,label,start_frame,end_frame\na,head up,1,2\n")
    with pytest.raises(MicrogestureError, match="last_frame"):
        open_long_videos(tmp_path)
    (tmp_path / "intervals.csv").write_text("video,label,start_frame,last_frame\nzzz,head up,1,2\n")
    with pytest.raises(MicrogestureError, match="zzz"):
        open_long_videos(tmp_path)


def test_imigue_release_tree_takes_its_split_from_the_folder(tmp_path):
    from microgesture.core.long_videos import open_long_videos

    for split, video in (("train", "0001"), ("validate", "0002"), ("test", "0003")):
        folder = tmp_path / f"imigue_skeleton_{split}" / video
        folder.mkdir(parents=True)
        (folder / f"{video}_label.csv").write_text("11,0,40\n99,50,80\n")
        (folder / f"{video}_light_hand.csv").write_text("")
        (tmp_path / "rgb").mkdir(exist_ok=True)
        if video != "0003":
            (tmp_path / "rgb" / f"{video}.mp4").write_bytes(b"")
    found = open_long_videos(tmp_path)
    assert found.kind == "imigue-raw"
    assert {v.name: v.split for v in found.videos} == {"0001": "train", "0002": "val"}
    v = found.split("val")[0]
    assert v.truth[0] == Interval("touching jaw", 0, 40) and v.truth[1].label == "illustrative hand gestures"
    assert v.skeleton.name == "0002_light_hand.csv"
    assert len(found.skipped) == 1 and "0003" in found.skipped[0][0]


def test_tuned_settings_live_checksummed_in_the_bundle(tmp_path):
    import shutil

    from microgesture.core.bundle import read_manifest
    from microgesture.core.paths import DEMO_BUNDLE
    from microgesture.core.tuned import TUNED_FILE, read_tuned, write_tuned

    bundle = tmp_path / "b"
    shutil.copytree(DEMO_BUNDLE, bundle)
    assert read_tuned(bundle) is None
    before = json.loads((bundle / "manifest.json").read_text())
    settings = {"window": 2, "start_threshold": 0.6, "end_threshold": 0.36, "min_duration_s": 0.3, "hop_s": 0.3333}
    write_tuned(bundle, settings, {"f1": 0.9})
    after = json.loads((bundle / "manifest.json").read_text())
    assert {k: v for k, v in after.items() if k != "files"} == {k: v for k, v in before.items() if k != "files"}
    assert set(after["files"]) == set(before["files"]) | {TUNED_FILE}
    assert read_tuned(bundle) == settings
    read_manifest(bundle)                                      # the whole bundle still verifies
    doc = json.loads((bundle / TUNED_FILE).read_text())
    doc["settings"]["start_threshold"] = 0.1
    (bundle / TUNED_FILE).write_text(json.dumps(doc))
    with pytest.raises(MicrogestureError, match="checksum"):
        read_tuned(bundle)
    with pytest.raises(MicrogestureError, match="checksum"):
        read_manifest(bundle)
    with pytest.raises(MicrogestureError, match="end_threshold"):
        write_tuned(bundle, {**settings, "end_threshold": 0.7}, {})
