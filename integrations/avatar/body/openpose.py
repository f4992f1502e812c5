"""The 18-keypoint OpenPose (COCO) order, SMPL / SMPL-X joint maps, and the loader of
controlnet_aux's OpenPose drawing module.

The drawing module ``controlnet_aux/open_pose/util.py`` is the annotator ControlNet-openpose
was trained with. A full controlnet_aux install imports it normally. A ``--no-deps`` install
(where torchvision is missing or does not match torch) cannot run the package ``__init__``,
so the module is then loaded by its file location under a private package name.
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
import types
from typing import NamedTuple

OPENPOSE_JOINT_NAMES = (
    "nose", "neck",
    "right_shoulder", "right_elbow", "right_wrist",
    "left_shoulder", "left_elbow", "left_wrist",
    "right_hip", "right_knee", "right_ankle",
    "left_hip", "left_knee", "left_ankle",
    "right_eye", "left_eye", "right_ear", "left_ear",
)  # fmt: skip
"""The 18 OpenPose COCO keypoints, in the order the ControlNet annotator draws them."""

FACE_KEYPOINTS = (0, 14, 15, 16, 17)
"""OpenPose indices of the face points (nose, eyes, ears): the ones occlusion may cull."""

# smplx joint output for SMPL: 24 skeleton joints, then the vertex-picked
# nose, right eye, left eye, right ear, left ear (24..28), then feet and fingertips.
SMPL_TO_OPENPOSE = (24, 12, 17, 19, 21, 16, 18, 20, 2, 5, 8, 1, 4, 7, 25, 26, 27, 28)
"""smplx SMPL joint index of each OpenPose keypoint (DreamWaltz's map; neck = joint 12)."""

# smplx joint output for SMPL-X: 22 body joints (same indices as SMPL's first 22), jaw 22,
# eyeballs 23/24, 15 + 15 finger joints (25..54), then the vertex-picked nose, right eye,
# left eye, right ear, left ear (55..59), feet, fingertips and the 51 face landmarks.
SMPLX_TO_OPENPOSE = (55, 12, 17, 19, 21, 16, 18, 20, 2, 5, 8, 1, 4, 7, 56, 57, 58, 59)
"""smplx SMPL-X joint index of each OpenPose keypoint (the SMPL map with the face points
moved past the 55 skeleton joints)."""

JOINT_MAPS = {"smpl": SMPL_TO_OPENPOSE, "smplx": SMPLX_TO_OPENPOSE}

_INSTALL_HINT = "pip install --no-deps controlnet_aux==0.0.10"
_PRIVATE_PACKAGE = "_ssd_toolkit_controlnet_aux_open_pose"


class _Keypoint(NamedTuple):
    x: float
    y: float
    score: float = 1.0
    id: int = -1


class _BodyResult(NamedTuple):
    keypoints: list
    total_score: float
    total_parts: int


def _open_pose_dir():
    """Directory of the installed ``controlnet_aux/open_pose`` (without importing it)."""
    from importlib import metadata  # noqa: PLC0415

    try:
        dist = metadata.distribution("controlnet_aux")
    except metadata.PackageNotFoundError as exc:
        raise ImportError(
            f"controlnet_aux is not installed; the skeleton conditions are drawn with its "
            f"OpenPose utilities. Install it with: {_INSTALL_HINT}"
        ) from exc
    for file in dist.files or ():
        if file.as_posix().endswith("controlnet_aux/open_pose/util.py"):
            return dist.locate_file(file).parent
    raise ImportError(
        f"controlnet_aux {dist.version} is installed but has no open_pose/util.py; "
        f"install the tested version with: {_INSTALL_HINT}"
    )


def _load_util_by_location():
    # util.py's one package import is ``from .body import BodyResult, Keypoint``, so it cannot
    # be loaded by path alone: a parent package must hold a ``body`` module. The real body.py
    # cannot be that module: it imports torch's pose network (.model), scipy.ndimage.filters
    # and util itself back. So a private package (never ``controlnet_aux``, which a later
    # full import must still get) holds a ``body`` with just those two NamedTuples.
    if f"{_PRIVATE_PACKAGE}.util" in sys.modules:
        return sys.modules[f"{_PRIVATE_PACKAGE}.util"]
    directory = _open_pose_dir()
    package = types.ModuleType(_PRIVATE_PACKAGE)
    package.__path__ = [str(directory)]
    body = types.ModuleType(f"{_PRIVATE_PACKAGE}.body")
    body.Keypoint, body.BodyResult = _Keypoint, _BodyResult
    spec = importlib.util.spec_from_file_location(f"{_PRIVATE_PACKAGE}.util", directory / "util.py")
    util = importlib.util.module_from_spec(spec)
    sys.modules.update({package.__name__: package, body.__name__: body, spec.name: util})
    try:
        spec.loader.exec_module(util)
    except Exception:
        for name in (spec.name, body.__name__, package.__name__):
            sys.modules.pop(name, None)
        raise
    return util


def load_openpose_drawing():
    """Return controlnet_aux's ``open_pose.util`` module (``draw_bodypose``, ``Keypoint``).

    Tries ``import controlnet_aux.open_pose.util``; when the package ``__init__`` fails (the
    ``--no-deps`` install has no torchvision), loads ``open_pose/util.py`` from the installed
    distribution's files instead. Either way the module has ``draw_bodypose(canvas,
    keypoints)``, which draws on an ``[H, W, 3]`` uint8 RGB canvas in place, keypoints being a
    list of 18 ``Keypoint(x, y)`` (x, y normalised to [0, 1] by width and height) or None.

    Raises:
        ImportError: controlnet_aux is not installed (with the install command), or its
            drawing module fails to load.
    """
    try:
        util = importlib.import_module("controlnet_aux.open_pose.util")
    except Exception as exc:  # noqa: BLE001 - a broken torchvision raises RuntimeError too
        if isinstance(exc, ImportError) and exc.name == "controlnet_aux":
            raise ImportError(
                f"controlnet_aux is not installed; the skeleton conditions are drawn with its "
                f"OpenPose utilities. Install it with: {_INSTALL_HINT}"
            ) from exc
        util = _load_util_by_location()
    if not hasattr(util, "Keypoint"):  # pragma: no cover - future controlnet_aux layouts
        from controlnet_aux.open_pose.body import Keypoint  # noqa: PLC0415

        util.Keypoint = Keypoint
    return util
