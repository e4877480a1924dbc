"""core.windowing for windows CLIP-MG does not use: limb heatmaps, the skeleton crop,
training vs test heatmap sizes and pose frames without RGB frames (a PoseC3D's window),
and the layering promise (torch-free; export reads clips without training)."""

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from microgesture.core.dataset_index import open_dataset
from microgesture.core.errors import MicrogestureError
from microgesture.core.family import HeatmapSpec, WindowSpec
from microgesture.core.heatmaps import flip_heatmaps, limb_flip_permutation
from microgesture.core.layouts import get_layout
from microgesture.core.windowing import WindowReader

from test_datasets import make_own  # noqa: E402

POSEC3D_LIKE = WindowSpec(pose_frames=48, layout="coco18",
                          heatmaps=HeatmapSpec(kind="limbs", size=64, train_size=56, sigma=0.6, crop="skeleton"))


@pytest.fixture(scope="module")
def record(tmp_path_factory):
    root = make_own(tmp_path_factory.mktemp("win") / "ds", [("c1", "a", "s1")], n_frames=12, videos=False,
                    move=15.0)
    return open_dataset(root).records[0]


def test_limb_maps_at_train_and_test_sizes_without_rgb(record):
    reader = WindowReader(POSEC3D_LIKE)
    limbs = len(get_layout("coco18").limb_set("anatomical"))
    assert not reader.needs_video                     # pose frames only: no video needed
    test = reader.read(record)
    train = reader.read(record, train=True, rng=np.random.default_rng(0))
    assert set(test) == set(train) == {"heatmaps"}
    assert test["heatmaps"].shape == (limbs, 48, 64, 64) and train["heatmaps"].shape == (limbs, 48, 56, 56)
    assert test["heatmaps"].max() > 0.5
    # a test-time mirror image swaps left and right limbs
    flipped = reader.read(record, flip=True)["heatmaps"]
    np.testing.assert_allclose(flipped, flip_heatmaps(test["heatmaps"], limb_flip_permutation("coco18")))


def _peaks_x(maps):
    """x of each joint's maximum in the first pose frame (joints that are present)."""
    first = maps[:, 0]
    present = first.reshape(len(first), -1).max(1) > 0.1
    return np.array([np.unravel_index(np.argmax(m), m.shape)[1] for m in first[present]])


def test_skeleton_crop_follows_the_sampled_frames(record):
    """The left wrist travels 165 px over the clip: the person box spans its whole path,
    the skeleton box only the sampled frame's skeleton, which then fills more of the map."""
    one = dict(pose_frames=1, layout="coco18")
    person = WindowReader(WindowSpec(**one, heatmaps=HeatmapSpec(size=64, sigma=1.0, crop="person")))
    skeleton = WindowReader(WindowSpec(**one, heatmaps=HeatmapSpec(size=64, sigma=1.0, crop="skeleton")))
    spread_person = np.ptp(_peaks_x(person.read(record)["heatmaps"]))
    spread_skeleton = np.ptp(_peaks_x(skeleton.read(record)["heatmaps"]))
    assert spread_skeleton > 1.3 * spread_person


def test_a_window_needs_frames_of_some_kind():
    with pytest.raises(MicrogestureError, match="RGB or pose frames"):
        WindowReader(WindowSpec(layout="coco18"))


def test_windowing_and_export_stay_off_torch_and_training():
    code = ("import sys; import microgesture.core.windowing, microgesture.core.dataset_index, "
            "microgesture.core.family, microgesture.core.config; "
            "from microgesture.core.family import all_configs, get_family; "
            "[get_family(c.arch).window(c) for c in all_configs().values()]; "
            "bad = [m for m in ('torch', 'onnx', 'open_clip') if m in sys.modules]; "
            "print(','.join(bad)); sys.exit(1 if bad else 0)")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr
    export = Path(__file__).resolve().parents[1] / "export"
    users = [p.name for p in export.glob("*.py") if "microgesture.training" in p.read_text()]
    assert users == []
