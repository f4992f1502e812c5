"""Skeleton conditions: projection, face-point occlusion, OpenPose drawing, CLI grid."""

import numpy as np
import pytest

pytest.importorskip("cv2")
smplx = pytest.importorskip("smplx")

from ssd_toolkit.cli import main  # noqa: E402
from ssd_toolkit.integrations.avatar import body_cli  # noqa: E402
from ssd_toolkit.integrations.avatar.body import smpl as body_smpl  # noqa: E402
from ssd_toolkit.integrations.avatar import cameras  # noqa: E402
from ssd_toolkit.integrations.avatar.body import openpose, skeleton, synthetic  # noqa: E402

FACE = list(openpose.FACE_KEYPOINTS)
# draw_bodypose limb colours (x 0.6 for limbs): right upper arm [3,4] -> colour 2, left upper
# arm [6,7] -> colour 4, right thigh [9,10] -> colour 7, left thigh [12,13] -> colour 10.
RIGHT_ARM, LEFT_ARM = (153, 102, 0), (102, 153, 0)
RIGHT_THIGH, LEFT_THIGH = (0, 153, 51), (0, 102, 153)


@pytest.fixture(scope="module")
def body(tmp_path_factory):
    path = synthetic.write_synthetic_smpl(tmp_path_factory.mktemp("smpl"))
    return body_smpl.posed_body(body_smpl.load_body_model(path), "A")


def _views(azimuths, polar=90.0):
    return cameras.orbit_cameras(2.5, polar, azimuths, 50.0, target=(0.0, 0.0, 0.0))


def test_projection_by_hand():
    cams = cameras.orbit_cameras(2.0, 90.0, 0.0, 90.0)  # at (0, 0, 2) looking at the origin
    points = np.array([[0, 0, 0], [0.5, 0.25, 0], [0, 0, 3.0], [5.0, 0, 0], [-0.4, -0.2, 1.0]])
    uv, visible = skeleton.project_keypoints(points, cams, 512)  # f = 256 / tan(45) = 256
    np.testing.assert_allclose(uv[0, :2], [[256, 256], [256 + 256 * 0.5 / 2, 256 - 256 * 0.25 / 2]])
    np.testing.assert_allclose(uv[0, 4], [256 - 256 * 0.4 / 1.0, 256 + 256 * 0.2 / 1.0])
    assert visible[0].tolist() == [True, True, False, False, True]  # behind; off-image
    uv, _ = skeleton.project_keypoints(points[:2], cams, (256, 512))  # f from the height: 128
    np.testing.assert_allclose(uv[0, 1], [256 + 128 * 0.25, 128 - 128 * 0.125])


def test_segment_occlusion_margin():
    triangle = np.array([[[-1.0, -1.0, 0.0], [1.0, -1.0, 0.0], [0.0, 1.0, 0.0]]])
    origins = np.zeros((4, 3)) + [0, 0, 2.0]
    targets = np.array([[0, 0, -1.0], [0, 0, -0.01], [0, 0, -0.03], [0, 0, 1.0]])
    hit = skeleton.segment_hits_before(origins, targets, triangle, 0.02)
    assert hit.tolist() == [True, False, True, False]  # 0.01 behind the plane is within the margin


def test_front_view_keeps_face_points_back_view_culls_them(body):
    uv, visible = skeleton.skeleton_keypoints(body, _views([0.0, 180.0, 90.0]))
    assert visible[0, FACE].all()
    assert not visible[1, FACE].any()
    assert visible[1, [1, 2, 5, 8, 11]].all()  # the body itself stays
    name = {n: i for i, n in enumerate(openpose.OPENPOSE_JOINT_NAMES)}
    assert visible[2, name["left_ear"]] and not visible[2, name["right_ear"]]  # camera on the left
    _, unculled = skeleton.skeleton_keypoints(body, _views([180.0]), cull_face=False)
    assert unculled[0, FACE].all()


def test_limbs_get_the_colours_of_their_side(body):
    images = skeleton.draw_conditions(body, _views([0.0, 180.0]), 512)
    uv, _ = skeleton.skeleton_keypoints(body, _views([0.0, 180.0]))
    assert images.dtype == np.uint8 and images.shape == (2, 512, 512, 3)
    for view, right_on_left in ((0, True), (1, False)):
        for (a, b), colour in (((2, 3), RIGHT_ARM), ((5, 6), LEFT_ARM), ((8, 9), RIGHT_THIGH), ((11, 12), LEFT_THIGH)):
            samples = [uv[view, a] + f * (uv[view, b] - uv[view, a]) for f in (0.35, 0.5, 0.65)]
            for u, v in samples:
                assert tuple(images[view, int(v), int(u)]) == colour, (view, a, b)
            is_right = a in (2, 8)
            assert (uv[view, a, 0] < 256) == (is_right == right_on_left)
    assert (images[0].reshape(-1, 3).sum(axis=1) == 0).mean() > 0.9  # black canvas


def test_batch_equals_one_by_one(body):
    cams = cameras.sample_cameras(4, np.random.default_rng(3))
    batch = skeleton.draw_conditions(body, cams, (192, 160))
    assert batch.shape == (4, 192, 160, 3)
    uv, visible = skeleton.skeleton_keypoints(body, cams, 256)
    for i in range(4):
        np.testing.assert_array_equal(batch[i], skeleton.draw_conditions(body, cams[i], (192, 160))[0])
        one_uv, one_visible = skeleton.skeleton_keypoints(body, cams[i], 256)
        np.testing.assert_allclose(one_uv[0], uv[i], rtol=0, atol=1e-9)
        np.testing.assert_array_equal(one_visible[0], visible[i])
    assert batch.any()


def test_drawing_module_loads_and_explains_a_missing_install(monkeypatch):
    util = openpose.load_openpose_drawing()
    assert callable(util.draw_bodypose) and util.Keypoint(0.5, 0.25).y == 0.25

    def no_package(name, *args, **kwargs):
        raise ModuleNotFoundError("No module named 'controlnet_aux'", name="controlnet_aux")

    monkeypatch.setattr(openpose.importlib, "import_module", no_package)
    with pytest.raises(ImportError, match="pip install --no-deps controlnet_aux==0.0.10"):
        openpose.load_openpose_drawing()


def test_drawing_module_falls_back_to_file_location(monkeypatch):
    def broken_init(name, *args, **kwargs):
        raise ModuleNotFoundError("No module named 'torchvision'", name="torchvision")

    monkeypatch.setattr(openpose.importlib, "import_module", broken_init)
    util = openpose.load_openpose_drawing()
    canvas = np.zeros((32, 32, 3), np.uint8)
    util.draw_bodypose(canvas, [util.Keypoint(0.5, 0.5)] + [None] * 17)
    assert tuple(canvas[16, 16]) == (255, 0, 0)  # the nose colour


def test_errors(body):
    cams = _views([0.0])
    with pytest.raises(ValueError, match="size: expected an int >= 1"):
        skeleton.project_keypoints(body.keypoints, cams, 0)
    with pytest.raises(ValueError, match=r"points: expected shape \[N, 3\]"):
        skeleton.project_keypoints(np.zeros((18, 2)), cams)
    with pytest.raises(ValueError, match=r"visible: expected shape \[1, 18\]"):
        skeleton.cull_occluded_face_points(body.keypoints, body.vertices, body.faces, cams, np.ones((2, 18)))


def test_cli_writes_a_grid(tmp_path, capsys):
    import cv2

    out = tmp_path / "grid.png"
    assert main(["skeleton", "--synthetic", "smpl", "--out", str(out), "--views", "6", "--size", "64"]) == 0
    grid = cv2.imread(str(out))
    gap = body_cli.TILE_GAP
    assert grid.shape == (2 * 64 + 3 * gap, 4 * 64 + 5 * gap, 3)
    assert (grid[:gap] == body_cli.GAP_GREY).all() and (grid[:, 64 + gap:64 + 2 * gap] == body_cli.GAP_GREY).all()  # separators
    first = grid[gap:gap + 64, gap:gap + 64]
    assert first[20:].any() and (first[:16] == 255).any()  # a skeleton, and the white azimuth label on top
    empty = grid[64 + 2 * gap:64 * 2 + 2 * gap, 2 * 64 + 3 * gap:]  # the two unused tiles of row 2
    assert set(np.unique(empty)) == {body_cli.GAP_GREY}
    assert "6 views" in capsys.readouterr().out
