"""SMPL / SMPL-X body models through ``smplx``: loading, pose presets, and posed bodies.

The canonical frame is SMPL's: +y up, the body facing +z, its left side at +x. DreamWaltz
poses the body in an "A" pose (both shoulders rotated by pi/4 about z, arms lowered) and
lifts it by ``y_offset = 0.25``: SMPL's origin sits near the pelvis, about 0.25 below the
middle of a standing body's height range, so the lift centres the body on the origin the
orbit cameras look at.
"""

from __future__ import annotations

import contextlib
import dataclasses
import io
import os
import tempfile

import numpy as np

from .openpose import JOINT_MAPS
from .convert import load_smpl_pickle

DREAMWALTZ_Y_OFFSET = 0.25
GENDERS = ("neutral", "male", "female")
MODEL_TYPES = ("smpl", "smplx")
_JOINTS_OF_TYPE = {24: "smpl", 52: "smplh", 55: "smplx"}
L_SHOULDER, R_SHOULDER = 16, 17  # SMPL / SMPL-X skeleton joint indices (0 = pelvis)
_SMPLX_INSTALL_HINT = "pip install -c .ci/constraints.txt smplx"


@dataclasses.dataclass
class Body:
    """A posed body in world coordinates (SMPL frame, lifted by ``y_offset``).

    Attributes:
        vertices: ``[V, 3]`` float32 mesh vertices.
        faces: ``[F, 3]`` int64 triangle vertex indices.
        joints: ``[J, 3]`` float32 smplx joint output (skeleton joints, then the
            vertex-picked face, feet and fingertip points; SMPL-X adds face landmarks).
        keypoints: ``[18, 3]`` float32 OpenPose COCO keypoints (see ``openpose``).
        model_type: "smpl" or "smplx".
        y_offset: the lift added to every y coordinate.
    """

    vertices: np.ndarray
    faces: np.ndarray
    joints: np.ndarray
    keypoints: np.ndarray
    model_type: str
    y_offset: float = DREAMWALTZ_Y_OFFSET


def _import_smplx():
    try:
        import smplx  # noqa: PLC0415
    except ImportError as exc:
        raise ImportError(f"the body model needs smplx; install it with: {_SMPLX_INSTALL_HINT}") from exc
    return smplx


def _candidate_files(root, model_type, gender):
    g = gender.upper()
    if model_type == "smpl":
        names = [f"SMPL_{g}.pkl"]
    else:
        names = [f"SMPLX_{g}.npz", f"SMPLX_{g}.pkl", f"SMPLX_{g}_2020.npz"]
    return [os.path.join(root, sub, name) for sub in (model_type, "") for name in names]


def resolve_model_file(path, model_type=None, gender="neutral"):
    """The model file ``path`` designates, and the model type asked for.

    Args:
        path: a model file, or a directory laid out as ``smplx`` expects
            (``<dir>/smpl/SMPL_NEUTRAL.pkl``, ``<dir>/smplx/SMPLX_NEUTRAL.npz``; the files
            may also sit directly in ``<dir>``; ``SMPLX_NEUTRAL_2020.npz`` is accepted).
        model_type: "smpl", "smplx" or None (a directory then tries SMPL first, as DreamWaltz
            does, then SMPL-X).
        gender: "neutral", "male" or "female" (chooses the file in a directory).

    Returns:
        (file path, model_type or None).

    Raises:
        FileNotFoundError: no such path, or the directory holds no matching model file.
        ValueError: unknown model_type or gender.
    """
    if model_type is not None and model_type not in MODEL_TYPES:
        raise ValueError(f"model_type: expected one of {MODEL_TYPES} or None, got {model_type!r}")
    if gender not in GENDERS:
        raise ValueError(f"gender: expected one of {GENDERS}, got {gender!r}")
    path = os.fspath(path)
    if os.path.isfile(path):
        return path, model_type
    if not os.path.isdir(path):
        raise FileNotFoundError(f"path: expected a body model file or directory, got {path!r} (does not exist)")
    tried = []
    for kind in (model_type,) if model_type else MODEL_TYPES:
        for candidate in _candidate_files(path, kind, gender):
            if os.path.isfile(candidate):
                return candidate, kind
            tried.append(candidate)
    raise FileNotFoundError(
        f"path: expected a {model_type or 'SMPL/SMPL-X'} {gender} model file in {path!r}, got none (tried {tried})"
    )


def read_model_arrays(file):
    """The arrays of a ``.pkl`` (chumpy-free) or ``.npz`` model file as a dict.

    Raises:
        ValueError: the file cannot be read as either (names the file and the reason).
    """
    try:
        if file.endswith(".npz"):
            with np.load(file, allow_pickle=True) as data:
                return {key: data[key] for key in data.files}
        return load_smpl_pickle(file)
    except Exception as exc:  # noqa: BLE001 - any parse failure of a user's file is "not a model file"
        if isinstance(exc, ValueError) and str(exc).startswith("path:"):
            raise
        raise ValueError(
            f"path: expected a SMPL/SMPL-X model (.pkl pickle or .npz), got {file!r} ({type(exc).__name__}: {exc})"
        ) from exc


def infer_model_type(arrays, file="<model>"):
    """'smpl' or 'smplx' from the number of skeleton joints (24 or 55) in a model's arrays.

    Raises:
        ValueError: no ``kintree_table`` / ``J_regressor``, or an unsupported joint count.
    """
    for key, axis in (("kintree_table", 1), ("J_regressor", 0)):
        if key in arrays:
            joints = np.shape(arrays[key])[axis]
            break
    else:
        raise ValueError(f"path: {file!r} has no kintree_table or J_regressor; not a SMPL-family model")
    kind = _JOINTS_OF_TYPE.get(joints)
    if kind not in MODEL_TYPES:
        raise ValueError(
            f"path: expected a SMPL (24 joints) or SMPL-X (55 joints) model, got {joints} joints"
            f" ({kind or 'unknown'}) in {file!r}"
        )
    return kind


def load_body_model(path, model_type=None, gender="neutral", num_betas=10):
    """Load a SMPL or SMPL-X model as an ``smplx`` module (batch 1, float32, CPU).

    SMPL pickles are read without chumpy (official files need no conversion first) and
    handed to ``smplx.SMPL`` in memory. SMPL-X ``.npz`` files go to ``smplx.SMPLX`` as they
    are; a SMPL-X ``.pkl`` is converted to a temporary ``.npz`` first.

    Args:
        path: model file or directory (see :func:`resolve_model_file`).
        model_type: "smpl", "smplx", or None to infer it from the file's joint count.
        gender: "neutral", "male" or "female".
        num_betas: shape coefficients to use (capped by the file's).

    Returns:
        ``smplx.SMPL`` or ``smplx.SMPLX`` module.

    Raises:
        FileNotFoundError: missing path or model file.
        ValueError: bad model_type / gender / num_betas, or the file holds a different
            model type than ``model_type`` asks for.
        ImportError: smplx is not installed.
    """
    if not isinstance(num_betas, (int, np.integer)) or num_betas < 1:
        raise ValueError(f"num_betas: expected an int >= 1, got {num_betas!r}")
    file, asked = resolve_model_file(path, model_type, gender)
    arrays = read_model_arrays(file)
    found = infer_model_type(arrays, file)
    if asked is not None and asked != found:
        raise ValueError(f"model_type: expected {found!r} for {file!r} (its joint count), got {asked!r}")
    smplx = _import_smplx()
    quiet = contextlib.redirect_stdout(io.StringIO())  # smplx prints a warning for 10-beta files
    if found == "smpl":
        struct = smplx.utils.Struct(**arrays)
        with quiet:
            return smplx.SMPL(file, data_struct=struct, gender=gender, num_betas=int(num_betas))
    if file.endswith(".npz"):
        with quiet:
            return smplx.SMPLX(file, ext="npz", gender=gender, num_betas=int(num_betas))
    with tempfile.TemporaryDirectory() as tmp:
        npz = os.path.join(tmp, "SMPLX_CONVERTED.npz")
        np.savez(npz, **arrays)
        with quiet:
            return smplx.SMPLX(npz, ext="npz", gender=gender, num_betas=int(num_betas))


def model_type_of(model):
    """'smplx' for an ``smplx.SMPLX`` module, 'smpl' for ``smplx.SMPL``."""
    smplx = _import_smplx()
    if isinstance(model, smplx.SMPLX):
        return "smplx"
    if isinstance(model, smplx.SMPLH) or not isinstance(model, smplx.SMPL):
        raise TypeError(f"model: expected an smplx.SMPL or smplx.SMPLX module, got {type(model).__name__}")
    return "smpl"


def pose_preset(name, num_body_joints=23):
    """Axis-angle body pose of a named preset.

    Args:
        name: "A" (DreamWaltz's canonical pose: the left shoulder, joint 16, rotated by
            -pi/4 about z and the right shoulder, joint 17, by +pi/4, which lowers both
            T-posed arms by 45 degrees) or "T" (all zeros: SMPL's rest pose, arms level).
            Case-insensitive.
        num_body_joints: rows of ``body_pose``: 23 for SMPL, 21 for SMPL-X (joints 1.., the
            pelvis being the global orientation).

    Returns:
        ``[num_body_joints, 3]`` float32 axis-angle rotations (row ``j - 1`` is joint ``j``).

    Raises:
        ValueError: unknown name, or too few joints to hold the shoulders.
    """
    if num_body_joints < R_SHOULDER:
        raise ValueError(f"num_body_joints: expected >= {R_SHOULDER}, got {num_body_joints}")
    pose = np.zeros((num_body_joints, 3), dtype=np.float32)
    key = str(name).upper()
    if key == "A":
        pose[L_SHOULDER - 1, 2] = -np.pi / 4
        pose[R_SHOULDER - 1, 2] = np.pi / 4
    elif key != "T":
        raise ValueError(f"name: expected 'A' or 'T', got {name!r}")
    return pose


def posed_body(model, preset="A", betas=None, body_pose=None, y_offset=DREAMWALTZ_Y_OFFSET):
    """Pose a body model and return mesh, joints and OpenPose keypoints as NumPy.

    Args:
        model: from :func:`load_body_model` (``smplx.SMPL`` or ``smplx.SMPLX``).
        preset: pose preset name (see :func:`pose_preset`); ignored when ``body_pose``
            is given.
        betas: ``[num_betas]`` shape coefficients (``model.num_betas``), zeros when None.
        body_pose: ``[num_body_joints, 3]`` or flat axis-angle pose; replaces the preset.
        y_offset: added to every y coordinate (DreamWaltz: 0.25, see the module docstring).

    Returns:
        Body.

    Raises:
        ValueError: ``betas`` or ``body_pose`` of the wrong size.
    """
    import torch  # noqa: PLC0415

    kind = model_type_of(model)
    n = model.NUM_BODY_JOINTS
    if body_pose is None:
        body_pose = pose_preset(preset, n)
    body_pose = np.asarray(body_pose, dtype=np.float32)
    if body_pose.size != 3 * n:
        raise ValueError(f"body_pose: expected {n} x 3 axis-angle values for {kind}, got shape {body_pose.shape}")
    betas = np.zeros(model.num_betas, np.float32) if betas is None else np.asarray(betas, np.float32)
    if betas.shape != (model.num_betas,):
        raise ValueError(f"betas: expected shape [{model.num_betas}], got {list(betas.shape)}")
    dtype = model.shapedirs.dtype
    with torch.no_grad():
        out = model(
            betas=torch.as_tensor(betas, dtype=dtype)[None],
            body_pose=torch.as_tensor(body_pose, dtype=dtype).reshape(1, -1),
            global_orient=torch.zeros(1, 3, dtype=dtype),
            transl=torch.zeros(1, 3, dtype=dtype),
            return_verts=True,
        )
    lift = np.array([0.0, y_offset, 0.0], dtype=np.float32)
    vertices = out.vertices[0].cpu().numpy().astype(np.float32) + lift
    joints = out.joints[0].cpu().numpy().astype(np.float32) + lift
    faces = np.asarray(model.faces, dtype=np.int64).reshape(-1, 3)
    keypoints = joints[list(JOINT_MAPS[kind])]
    return Body(vertices, faces, joints, keypoints, kind, float(y_offset))
