"""Synthetic SMPL / SMPL-X model files: offline stand-ins for the licensed official ones.

The official files need a registration and a licence to download. These writers build
a crude but geometrically meaningful human with the official keys, shapes and vertex counts
(SMPL: 6890 vertices, 24 joints; SMPL-X: 10475 vertices, 55 joints), so ``smplx`` loads and
poses them like the real models:

- a T-posed skeleton in SMPL's frame (+y up, facing +z, left at +x), about 1.7 high;
- one closed tube-shaped ellipsoid per joint, from the joint to its child (or to a tip for
  the head, hands, feet and fingers), skinned rigidly to that joint;
- ``J_regressor`` averages the ring of each part's vertices that sits at its joint, so the
  regressed skeleton is the designed one (and follows the shape blend shapes);
- the vertex ids ``smplx`` picks as nose, eyes, ears, toes, heels and fingertips are marker
  vertices placed on the surface where those features are (the face points on the front of
  the head, ears 70 degrees round to the sides), so occlusion tests are meaningful: seen
  from behind, the head hides the face points;
- the remaining vertex slots are filler vertices inside the pelvis, in no face;
- ``shapedirs``: beta 0 stretches the height, beta 1 the width and depth, the others are
  seeded random smooth (linear) fields; ``posedirs`` are zero (no pose correctives).
"""

from __future__ import annotations

import os
import pickle

import numpy as np

SMPL_NUM_VERTICES = 6890
SMPLX_NUM_VERTICES = 10475
_ROOT_PARENT = 4294967295  # the official kintree_table's "no parent" (uint32 -1)
_AROUND = 16  # vertices per ring of a part
_GENDER_SCALE = {"neutral": (1.0, 1.0), "male": (1.04, 1.05), "female": (0.96, 0.94)}  # height, width

# SMPL T-pose skeleton (metres): name, parent, position.
_SMPL_JOINTS = (
    ("pelvis", -1, (0.0, -0.22, 0.0)),
    ("left_hip", 0, (0.07, -0.31, 0.0)),
    ("right_hip", 0, (-0.07, -0.31, 0.0)),
    ("spine1", 0, (0.0, -0.11, 0.0)),
    ("left_knee", 1, (0.1, -0.69, 0.0)),
    ("right_knee", 2, (-0.1, -0.69, 0.0)),
    ("spine2", 3, (0.0, 0.02, 0.0)),
    ("left_ankle", 4, (0.1, -1.09, -0.02)),
    ("right_ankle", 5, (-0.1, -1.09, -0.02)),
    ("spine3", 6, (0.0, 0.08, 0.0)),
    ("left_foot", 7, (0.11, -1.15, 0.1)),
    ("right_foot", 8, (-0.11, -1.15, 0.1)),
    ("neck", 9, (0.0, 0.29, -0.01)),
    ("left_collar", 9, (0.07, 0.2, -0.01)),
    ("right_collar", 9, (-0.07, 0.2, -0.01)),
    ("head", 12, (0.0, 0.37, 0.0)),
    ("left_shoulder", 13, (0.17, 0.23, -0.02)),
    ("right_shoulder", 14, (-0.17, 0.23, -0.02)),
    ("left_elbow", 16, (0.43, 0.21, -0.03)),
    ("right_elbow", 17, (-0.43, 0.21, -0.03)),
    ("left_wrist", 18, (0.68, 0.21, -0.03)),
    ("right_wrist", 19, (-0.68, 0.21, -0.03)),
    ("left_hand", 20, (0.76, 0.21, -0.03)),
    ("right_hand", 21, (-0.76, 0.21, -0.03)),
)
# Part of each joint: end point (a joint index or an offset from the joint), radii
# (across, along the second axis), cap length beyond both ends.
_HEAD_TIP = (0.0, 0.18, 0.0)
_SMPL_PARTS = {
    0: (3, (0.16, 0.11), 0.08), 3: (6, (0.15, 0.1), 0.03), 6: (9, (0.16, 0.1), 0.03),
    9: (12, (0.17, 0.1), 0.04), 12: (15, (0.05, 0.05), 0.02), 15: (_HEAD_TIP, (0.1, 0.1), 0.03),
    13: (16, (0.05, 0.05), 0.02), 14: (17, (0.05, 0.05), 0.02),
    16: (18, (0.05, 0.05), 0.025), 17: (19, (0.05, 0.05), 0.025),
    18: (20, (0.04, 0.04), 0.02), 19: (21, (0.04, 0.04), 0.02),
    20: (22, (0.04, 0.02), 0.015), 21: (23, (0.04, 0.02), 0.015),
    22: ((0.08, 0.0, 0.0), (0.035, 0.012), 0.01), 23: ((-0.08, 0.0, 0.0), (0.035, 0.012), 0.01),
    1: (4, (0.07, 0.07), 0.03), 2: (5, (0.07, 0.07), 0.03),
    4: (7, (0.05, 0.05), 0.02), 5: (8, (0.05, 0.05), 0.02),
    7: (10, (0.04, 0.04), 0.02), 8: (11, (0.04, 0.04), 0.02),
    10: ((0.0, 0.0, 0.08), (0.04, 0.025), 0.015), 11: ((0.0, 0.0, 0.08), (0.04, 0.025), 0.015),
}  # fmt: skip

# SMPL-X: the first 22 SMPL joints, then jaw, eyeballs and 2 x 15 finger joints
# (per hand: index, middle, pinky, ring, thumb; 3 joints each).
_FINGERS = (("index", 0.02), ("middle", 0.0), ("pinky", -0.04), ("ring", -0.02), ("thumb", None))


def _smplx_skeleton():
    joints = list(_SMPL_JOINTS[:22]) + [
        ("jaw", 15, (0.0, 0.4, 0.01)),
        ("left_eye_smplhf", 15, (0.03, 0.49, 0.05)),
        ("right_eye_smplhf", 15, (-0.03, 0.49, 0.05)),
    ]
    parts = {j: spec for j, spec in _SMPL_PARTS.items() if j < 22}
    parts[20] = ((0.08, 0.0, 0.0), (0.04, 0.012), 0.01)
    parts[21] = ((-0.08, 0.0, 0.0), (0.04, 0.012), 0.01)
    parts[22] = ((0.0, -0.02, 0.05), (0.03, 0.02), 0.01)
    parts[23] = parts[24] = ((0.0, 0.0, 0.02), (0.012, 0.012), 0.004)
    tips = {}
    for side, sign, wrist in (("left", 1.0, 20), ("right", -1.0, 21)):
        wx, wy, wz = _SMPL_JOINTS[wrist][2]
        for finger, z in _FINGERS:
            if z is None:  # thumb: from the side of the palm, forwards and out
                base, step = np.array([wx + sign * 0.03, wy - 0.01, wz + 0.04]), np.array([sign * 0.018, 0.0, 0.012])
            else:
                base, step = np.array([wx + sign * 0.09, wy, wz + z]), np.array([sign * 0.022, 0.0, 0.0])
            for k in range(3):
                parent = wrist if k == 0 else len(joints) - 1
                joints.append((f"{side}_{finger}{k + 1}", parent, tuple(base + k * step)))
                parts[len(joints) - 1] = (tuple(step), (0.009, 0.007), 0.004)
            tips[side[0] + finger] = (len(joints) - 1, tuple(step))
    return joints, parts, tips


def _basis(direction):
    d = direction / np.linalg.norm(direction)
    ref = np.array([1.0, 0.0, 0.0]) if abs(d[0]) < 0.9 else np.array([0.0, 1.0, 0.0])
    e1 = ref - ref.dot(d) * d
    e1 /= np.linalg.norm(e1)
    return d, e1, np.cross(d, e1)


def _part_mesh(start, end, radii, cap):
    """Closed ellipsoid tube from start to end; returns (vertices, faces, joint ring ids)."""
    axis = end - start
    length = float(np.linalg.norm(axis))
    d, e1, e2 = _basis(axis)
    s_values = np.concatenate([np.linspace(-cap, 0.0, 3)[1:], np.linspace(0.0, length + cap, 8)[1:-1]])
    half, mid = length / 2 + cap, length / 2
    angles = np.linspace(0.0, 2 * np.pi, _AROUND, endpoint=False)
    rings = []
    for s in s_values:
        scale = np.sqrt(max(1.0 - ((s - mid) / half) ** 2, 0.0))
        offsets = scale * (radii[0] * np.cos(angles)[:, None] * e1 + radii[1] * np.sin(angles)[:, None] * e2)
        rings.append(start + s * d + offsets)
    poles = np.stack([start - cap * d, start + (length + cap) * d])
    vertices = np.concatenate(rings + [poles])
    n_rings = len(s_values)
    faces = []
    for r in range(n_rings - 1):
        for a in range(_AROUND):
            i0, i1 = r * _AROUND + a, r * _AROUND + (a + 1) % _AROUND
            j0, j1 = i0 + _AROUND, i1 + _AROUND
            faces += [(i0, j0, i1), (i1, j0, j1)]
    bottom, top = n_rings * _AROUND, n_rings * _AROUND + 1
    last = (n_rings - 1) * _AROUND
    for a in range(_AROUND):
        faces.append((bottom, a, (a + 1) % _AROUND))
        faces.append((top, last + (a + 1) % _AROUND, last + a))
    joint_ring = np.arange(_AROUND) + _AROUND * int(np.argmin(np.abs(s_values)))
    return vertices, np.asarray(faces, np.int64), joint_ring


def _head_surface(start, end, radii, cap, axial, direction):
    """A point on the head ellipsoid: ``axial`` above its centre, towards ``direction`` (xz)."""
    d, _, _ = _basis(end - start)
    length = float(np.linalg.norm(end - start))
    centre = start + d * length / 2
    u = np.asarray(direction, np.float64)
    u /= np.linalg.norm(u)
    return centre + axial * d + radii[0] * np.sqrt(1.0 - (axial / (length / 2 + cap)) ** 2) * u


def _markers(positions, parts, head, tips, hand_joint, foot_joint, ankle_joint):
    """Position and owning joint of every vertex ``smplx`` picks as a keypoint."""
    hstart, hend, hradii, hcap = head
    s70, c70, s20, c20 = np.sin(np.radians(70)), np.cos(np.radians(70)), np.sin(np.radians(20)), np.cos(np.radians(20))
    markers = {
        "nose": (15, _head_surface(hstart, hend, hradii, hcap, 0.0, (0, 0, 1))),
        "reye": (15, _head_surface(hstart, hend, hradii, hcap, 0.03, (-s20, 0, c20))),
        "leye": (15, _head_surface(hstart, hend, hradii, hcap, 0.03, (s20, 0, c20))),
        "rear": (15, _head_surface(hstart, hend, hradii, hcap, 0.0, (-s70, 0, c70))),
        "lear": (15, _head_surface(hstart, hend, hradii, hcap, 0.0, (s70, 0, c70))),
    }
    for side, sign in (("L", 1.0), ("R", -1.0)):
        foot = foot_joint[side]
        toe = positions[foot] + np.array([0.0, -0.02, 0.095])
        markers[f"{side}BigToe"] = (foot, toe + np.array([-sign * 0.015, 0, 0]))
        markers[f"{side}SmallToe"] = (foot, toe + np.array([sign * 0.025, 0, -0.01]))
        markers[f"{side}Heel"] = (ankle_joint[side], positions[ankle_joint[side]] + np.array([0.0, -0.05, -0.05]))
    for side, sign in (("l", 1.0), ("r", -1.0)):
        for k, finger in enumerate(("thumb", "index", "middle", "ring", "pinky")):
            if tips is not None:
                joint, step = tips[side + finger]
                markers[side + finger] = (joint, positions[joint] + 1.2 * np.asarray(step))
            else:
                hand = hand_joint[side]
                z = (0.02, 0.01, 0.0, -0.01, -0.02)[k]
                markers[side + finger] = (hand, positions[hand] + np.array([sign * 0.09, 0.0, z]))
    return markers


def _build(joint_table, parts, tips, num_vertices, vertex_ids, gender, seed, num_betas):
    if gender not in _GENDER_SCALE:
        raise ValueError(f"gender: expected one of {tuple(_GENDER_SCALE)}, got {gender!r}")
    height, width = _GENDER_SCALE[gender]
    scale = np.array([width, height, width])
    positions = np.array([p for _, _, p in joint_table], np.float64) * scale
    parents = [p for _, p, _ in joint_table]
    n_joints = len(joint_table)

    def end_point(joint, end):
        return positions[end] if isinstance(end, int) else positions[joint] + np.asarray(end) * scale

    meshes, faces, owners, rings, offset = [], [], [], {}, 0
    for joint in range(n_joints):
        end, radii, cap = parts[joint]
        v, f, ring = _part_mesh(positions[joint], end_point(joint, end), np.asarray(radii) * width, cap)
        meshes.append(v)
        faces.append(f + offset)
        owners.append(np.full(len(v), joint))
        rings[joint] = ring + offset
        offset += len(v)
    mesh_vertices, mesh_faces, mesh_owner = np.concatenate(meshes), np.concatenate(faces), np.concatenate(owners)
    head_end, head_radii, head_cap = parts[15]
    head = (positions[15], end_point(15, head_end), np.asarray(head_radii) * width, head_cap)
    markers = _markers(positions, parts, head, tips, {"l": 22, "r": 23}, {"L": 10, "R": 11}, {"L": 7, "R": 8})
    marker_ids = {vertex_ids[name]: markers[name] for name in markers}
    free_slots = np.array([i for i in range(num_vertices) if i not in marker_ids])
    if len(free_slots) < len(mesh_vertices):
        raise ValueError(f"num_vertices: expected >= {len(mesh_vertices) + len(marker_ids)}, got {num_vertices}")
    slot = free_slots[: len(mesh_vertices)]  # mesh vertex k lives at vertex id slot[k]

    v_template = np.repeat(positions[:1], num_vertices, axis=0)  # filler: at the pelvis joint
    owner = np.zeros(num_vertices, np.int64)
    v_template[slot], owner[slot] = mesh_vertices, mesh_owner
    for vid, (joint, position) in marker_ids.items():
        v_template[vid], owner[vid] = position, joint
    j_regressor = np.zeros((n_joints, num_vertices))
    for joint, ring in rings.items():
        j_regressor[joint, slot[ring]] = 1.0 / len(ring)

    rng = np.random.default_rng(seed)
    centred = v_template - positions[0]
    shapedirs = np.zeros((num_vertices, 3, num_betas))
    shapedirs[:, 1, 0] = 0.06 * centred[:, 1]
    shapedirs[:, 0, 1], shapedirs[:, 2, 1] = 0.08 * centred[:, 0], 0.08 * centred[:, 2]
    for k in range(2, num_betas):
        shapedirs[:, :, k] = centred @ (0.02 * rng.standard_normal((3, 3)))
    kintree = np.array([[_ROOT_PARENT if p < 0 else p for p in parents], list(range(n_joints))], np.int64)
    return {
        "v_template": v_template,
        "f": slot[mesh_faces].astype(np.uint32),
        "J_regressor": j_regressor,
        "J": j_regressor @ v_template,
        "weights": np.eye(n_joints)[owner],
        "kintree_table": kintree,
        "shapedirs": shapedirs,
        "posedirs": np.zeros((num_vertices, 3, 9 * (n_joints - 1)), np.float32),
    }, rng, mesh_faces, slot


def synthetic_smpl_arrays(gender="neutral", seed=0):
    """The arrays of a synthetic SMPL model (keys and shapes of the official pickle)."""
    from smplx.vertex_ids import vertex_ids  # noqa: PLC0415

    arrays, _, _, _ = _build(_SMPL_JOINTS, _SMPL_PARTS, None, SMPL_NUM_VERTICES, vertex_ids["smplh"], gender, seed, 10)
    arrays.update(bs_style="lbs", bs_type="lrotmin")
    return arrays


def synthetic_smplx_arrays(gender="neutral", seed=0):
    """The arrays of a synthetic SMPL-X model (keys and shapes of ``SMPLX_*.npz``)."""
    from smplx.vertex_ids import vertex_ids  # noqa: PLC0415

    joints, parts, tips = _smplx_skeleton()
    arrays, rng, mesh_faces, slot = _build(
        joints, parts, tips, SMPLX_NUM_VERTICES, vertex_ids["smplx"], gender, seed, 20
    )
    centroids = arrays["v_template"][arrays["f"].astype(np.int64)].mean(axis=1)
    head_faces = np.flatnonzero((centroids[:, 1] > 0.4) & (centroids[:, 2] > 0.03))
    front = head_faces[np.argsort(-centroids[head_faces, 2])]
    components = [np.linalg.qr(rng.standard_normal((45, 45)))[0] for _ in range(2)]
    arrays.update(
        hands_componentsl=components[0], hands_componentsr=components[1],
        hands_meanl=np.zeros(45), hands_meanr=np.zeros(45),
        lmk_faces_idx=front[:51].astype(np.int64), lmk_bary_coords=np.full((51, 3), 1.0 / 3),
        dynamic_lmk_faces_idx=np.resize(front, (79, 17)).astype(np.int64),
        dynamic_lmk_bary_coords=np.full((79, 17, 3), 1.0 / 3),
    )  # fmt: skip
    return arrays


def write_synthetic_smpl(directory, gender="neutral", seed=0):
    """Write ``<directory>/smpl/SMPL_{GENDER}.pkl`` (plain NumPy pickle); return its path."""
    path = os.path.join(os.fspath(directory), "smpl", f"SMPL_{gender.upper()}.pkl")
    arrays = synthetic_smpl_arrays(gender, seed)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "wb") as f:
        pickle.dump(arrays, f, protocol=pickle.HIGHEST_PROTOCOL)
    return path


def write_synthetic_smplx(directory, gender="neutral", seed=0):
    """Write ``<directory>/smplx/SMPLX_{GENDER}.npz`` (compressed); return its path."""
    path = os.path.join(os.fspath(directory), "smplx", f"SMPLX_{gender.upper()}.npz")
    arrays = synthetic_smplx_arrays(gender, seed)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    np.savez_compressed(path, **arrays)
    return path
