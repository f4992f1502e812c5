"""Body model loading (synthetic SMPL / SMPL-X through smplx), presets, posed bodies, errors."""

import numpy as np
import pytest

smplx = pytest.importorskip("smplx")

from ssd_toolkit.integrations.avatar.body import smpl as body_smpl  # noqa: E402
from ssd_toolkit.integrations.avatar.body import openpose, synthetic  # noqa: E402


@pytest.fixture(scope="module")
def body_files(tmp_path_factory):
    root = tmp_path_factory.mktemp("body_files")
    return {
        "root": root,
        "smpl": synthetic.write_synthetic_smpl(root),
        "smpl_male": synthetic.write_synthetic_smpl(root, gender="male"),
        "smplx": synthetic.write_synthetic_smplx(root),
    }


@pytest.fixture(scope="module")
def smpl(body_files):
    return body_smpl.load_body_model(body_files["root"], "smpl")


def test_synthetic_smpl_has_official_keys_and_shapes(body_files):
    arrays = body_smpl.read_model_arrays(body_files["smpl"])
    v = arrays["v_template"].shape[0]
    assert v == 6890
    assert arrays["shapedirs"].shape == (v, 3, 10)
    assert arrays["posedirs"].shape == (v, 3, 207)
    assert arrays["J_regressor"].shape == (24, v)
    assert arrays["weights"].shape == (v, 24)
    assert arrays["kintree_table"].shape == (2, 24)
    assert arrays["f"].shape[1] == 3 and arrays["f"].max() < v
    np.testing.assert_allclose(arrays["J_regressor"].sum(axis=1), 1.0)
    np.testing.assert_allclose(arrays["weights"].sum(axis=1), 1.0)


def test_synthetic_smplx_has_official_keys_and_shapes(body_files):
    arrays = body_smpl.read_model_arrays(body_files["smplx"])
    v = arrays["v_template"].shape[0]
    assert v == 10475
    assert arrays["posedirs"].shape == (v, 3, 486)
    assert arrays["J_regressor"].shape == (55, v)
    assert arrays["hands_componentsl"].shape == arrays["hands_componentsr"].shape == (45, 45)
    assert arrays["hands_meanl"].shape == (45,)
    assert arrays["lmk_faces_idx"].shape == (51,) and arrays["lmk_bary_coords"].shape == (51, 3)


def test_smplx_create_reads_the_synthetic_files_directly(body_files):
    model = smplx.create(str(body_files["root"]), model_type="smpl", gender="neutral")
    out = model()
    assert out.vertices.shape == (1, 6890, 3) and out.joints.shape[1] == 45
    model = smplx.create(str(body_files["root"]), model_type="smplx", gender="neutral", ext="npz")
    assert model().vertices.shape == (1, 10475, 3)


def test_load_infers_type_from_file_and_dir(body_files):
    assert isinstance(body_smpl.load_body_model(body_files["smpl"]), smplx.SMPL)
    x = body_smpl.load_body_model(body_files["smplx"])
    assert isinstance(x, smplx.SMPLX)
    assert not isinstance(body_smpl.load_body_model(body_files["root"]), smplx.SMPLX)  # dir: SMPL first


def test_gender_picks_the_file(body_files):
    male = body_smpl.posed_body(body_smpl.load_body_model(body_files["root"], "smpl", gender="male"), "T")
    neutral = body_smpl.posed_body(body_smpl.load_body_model(body_files["root"], "smpl"), "T")
    assert np.ptp(male.vertices[:, 1]) > np.ptp(neutral.vertices[:, 1]) * 1.02


def test_posed_body_fields(smpl):
    b = body_smpl.posed_body(smpl)
    assert b.model_type == "smpl"
    assert b.vertices.shape == (6890, 3) and b.vertices.dtype == np.float32
    assert b.faces.dtype == np.int64 and b.faces.shape[1] == 3
    assert b.joints.shape == (45, 3) and b.keypoints.shape == (18, 3)
    np.testing.assert_array_equal(b.keypoints, b.joints[list(openpose.SMPL_TO_OPENPOSE)])
    nose_id = smplx.vertex_ids.vertex_ids["smplh"]["nose"]
    np.testing.assert_allclose(b.keypoints[0], b.vertices[nose_id], atol=1e-6)


def test_keypoint_semantics_in_the_smpl_frame(smpl):
    k = body_smpl.posed_body(smpl, "T").keypoints
    name = {n: i for i, n in enumerate(openpose.OPENPOSE_JOINT_NAMES)}
    for part in ("shoulder", "elbow", "wrist", "hip", "knee", "ankle", "eye", "ear"):
        assert k[name[f"left_{part}"], 0] > 0 > k[name[f"right_{part}"], 0], part  # left at +x
    assert k[name["nose"], 2] > k[name["neck"], 2]  # facing +z
    assert k[name["nose"], 1] > k[name["neck"], 1] > k[name["right_hip"], 1] > k[name["right_ankle"], 1]


def test_a_pose_lowers_both_arms_by_45_degrees(smpl):
    t = body_smpl.posed_body(smpl, "T").keypoints
    a = body_smpl.posed_body(smpl, "A").keypoints
    for shoulder, elbow in ((2, 3), (5, 6)):
        t_arm, a_arm = t[elbow] - t[shoulder], a[elbow] - a[shoulder]
        t_drop = np.degrees(np.arctan2(-t_arm[1], abs(t_arm[0])))
        a_drop = np.degrees(np.arctan2(-a_arm[1], abs(a_arm[0])))
        assert a_drop - t_drop == pytest.approx(45.0, abs=0.5)
    np.testing.assert_allclose(a[[0, 1, 8, 11]], t[[0, 1, 8, 11]], atol=1e-6)  # only the arms move


def test_presets_and_y_offset(smpl):
    a = body_smpl.pose_preset("A")
    assert a.shape == (23, 3) and a[15, 2] == pytest.approx(-np.pi / 4) and a[16, 2] == pytest.approx(np.pi / 4)
    assert np.count_nonzero(a) == 2 and not body_smpl.pose_preset("t").any()
    assert body_smpl.pose_preset("A", 21).shape == (21, 3)
    lifted = body_smpl.posed_body(smpl, "T")
    base = body_smpl.posed_body(smpl, "T", y_offset=0.0)
    np.testing.assert_allclose(lifted.vertices - base.vertices, np.tile([0, 0.25, 0], (6890, 1)), atol=1e-6)
    assert lifted.y_offset == 0.25


def test_betas_and_explicit_body_pose(smpl):
    betas = np.zeros(10, np.float32)
    betas[0] = 2.0
    tall = body_smpl.posed_body(smpl, "T", betas=betas)
    base = body_smpl.posed_body(smpl, "T")
    assert np.ptp(tall.vertices[:, 1]) > 1.1 * np.ptp(base.vertices[:, 1])
    explicit = body_smpl.posed_body(smpl, body_pose=body_smpl.pose_preset("A").ravel())
    np.testing.assert_allclose(explicit.vertices, body_smpl.posed_body(smpl, "A").vertices, atol=1e-6)


def test_smplx_keypoint_map(body_files):
    model = body_smpl.load_body_model(body_files["root"], "smplx")
    b = body_smpl.posed_body(model)
    ids = smplx.vertex_ids.vertex_ids["smplx"]
    np.testing.assert_allclose(b.keypoints[[0, 14, 15, 16, 17]],
                               b.vertices[[ids[n] for n in ("nose", "reye", "leye", "rear", "lear")]], atol=1e-6)
    smpl_kp = body_smpl.posed_body(body_smpl.load_body_model(body_files["root"], "smpl")).keypoints
    np.testing.assert_allclose(b.keypoints[1:14], smpl_kp[1:14], atol=1e-5)  # same skeleton joints


def test_errors(body_files, tmp_path, smpl):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        body_smpl.load_body_model(tmp_path / "missing.pkl")
    with pytest.raises(FileNotFoundError, match="SMPLX_FEMALE"):
        body_smpl.load_body_model(body_files["root"], "smplx", gender="female")
    with pytest.raises(ValueError, match="model_type: expected 'smpl'.*got 'smplx'"):
        body_smpl.load_body_model(body_files["smpl"], "smplx")
    with pytest.raises(ValueError, match="model_type: expected one of"):
        body_smpl.load_body_model(body_files["smpl"], "smplh")
    with pytest.raises(ValueError, match="gender"):
        body_smpl.load_body_model(body_files["root"], gender="other")
    with pytest.raises(ValueError, match="name: expected 'A' or 'T'"):
        body_smpl.pose_preset("Y")
    with pytest.raises(ValueError, match=r"betas: expected shape \[10\]"):
        body_smpl.posed_body(smpl, betas=np.zeros(3))
    with pytest.raises(ValueError, match="body_pose: expected 23 x 3"):
        body_smpl.posed_body(smpl, body_pose=np.zeros(63))
    bad = tmp_path / "bad.npz"
    np.savez(bad, v_template=np.zeros((3, 3)))
    with pytest.raises(ValueError, match="not a SMPL-family model"):
        body_smpl.load_body_model(bad)
