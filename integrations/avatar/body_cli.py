"""``ssd-toolkit skeleton`` and ``ssd-toolkit convert-smpl``: the body tools' commands.

Each has its own entry point (``register_skeleton``, ``register_convert_smpl``).

Arguments, input files and optional dependencies are checked before anything is written;
heavy imports happen inside the run functions so ``ssd-toolkit --help`` stays fast.
"""

from __future__ import annotations

import os

from ssd_toolkit.cli_args import (
    CommandError,
    as_command_error,
    check_input_path,
    check_output_file,
    integer,
    number,
    open_interval,
    require,
)

BODY_FLAGS = {"path": "--body", "model_type": "--model-type", "gender": "--gender"}
TILE_GAP = 6  # pixels of grey between skeleton tiles
GAP_GREY = 96


def register_skeleton(subparsers):
    """Add the ``skeleton`` command to the ``ssd-toolkit`` parser."""
    p = subparsers.add_parser(
        "skeleton",
        help="write the OpenPose skeleton conditions of a body seen from a ring of views as a PNG grid",
        description="Pose a SMPL / SMPL-X body (A or T preset, DreamWaltz's y offset), place --views "
        "cameras evenly in azimuth (0 = front) and draw each view's skeleton condition; each tile is "
        "labelled with its azimuth.",
    )
    source = p.add_mutually_exclusive_group(required=True)
    source.add_argument("--body", help="model file (.pkl / .npz) or a smplx model directory")
    source.add_argument("--synthetic", choices=("smpl", "smplx"), help="use a generated synthetic model")
    p.add_argument("--out", required=True, help="output PNG")
    p.add_argument("--views", type=integer(1), default=8, help="number of views (default: 8)")
    p.add_argument("--preset", default="A", choices=("A", "T"), help="pose preset (default: A)")
    p.add_argument("--size", type=integer(16), default=512, help="condition image size in pixels (default: 512)")
    p.add_argument("--model-type", choices=("smpl", "smplx"), default=None, help="default: from the file")
    p.add_argument("--gender", choices=("neutral", "male", "female"), default="neutral", help="(default: neutral)")
    p.add_argument("--radius", type=number(positive=True), default=2.5,
                   help="camera distance (default: 2.5, whole body in view)")  # fmt: skip
    p.add_argument("--polar", type=open_interval(0, 180), default=90.0,
                   help="polar angle, degrees (default: 90, level)")  # fmt: skip
    p.add_argument("--fovy", type=open_interval(0, 180), default=50.0,
                   help="vertical field of view, degrees (default: 50)")  # fmt: skip
    p.set_defaults(func=run_skeleton)


def register_convert_smpl(subparsers):
    """Add the ``convert-smpl`` command to the ``ssd-toolkit`` parser."""
    p = subparsers.add_parser(
        "convert-smpl",
        help="convert an official (chumpy) SMPL pickle to a plain-NumPy pickle smplx reads",
    )
    p.add_argument("src", help="official SMPL .pkl")
    p.add_argument("dst", help="output .pkl (e.g. models/smpl/SMPL_NEUTRAL.pkl)")
    p.set_defaults(func=run_convert)


def labelled_grid(images, labels, columns):
    """Tiles in rows of ``columns``, separated by grey gaps, each labelled top-left.

    Args:
        images: ``[B, H, W, 3]`` uint8.
        labels: B strings.
        columns: tiles per row.

    Returns:
        ``[rows H + (rows + 1) gap, columns W + (columns + 1) gap, 3]`` uint8.
    """
    import cv2  # noqa: PLC0415
    import numpy as np  # noqa: PLC0415

    b, h, w, c = images.shape
    rows, gap = -(-b // columns), TILE_GAP
    grid = np.full((rows * h + (rows + 1) * gap, columns * w + (columns + 1) * gap, c), GAP_GREY, dtype=np.uint8)
    scale = max(h / 512, 0.3)
    thickness = max(1, round(2 * scale))
    for i, (image, label) in enumerate(zip(images, labels, strict=True)):
        r, k = divmod(i, columns)
        y, x = gap + r * (h + gap), gap + k * (w + gap)
        tile = np.ascontiguousarray(image)
        cv2.putText(tile, label, (round(10 * scale), round(40 * scale)), cv2.FONT_HERSHEY_SIMPLEX, 1.2 * scale,
                    (255, 255, 255), thickness, cv2.LINE_AA)  # fmt: skip
        grid[y:y + h, x:x + w] = tile
    return grid


def _load_body(args):
    """The posed body of ``--body`` / ``--synthetic``; user errors as CommandError."""
    import tempfile  # noqa: PLC0415

    from .body.smpl import load_body_model, posed_body  # noqa: PLC0415
    from .body.synthetic import write_synthetic_smpl, write_synthetic_smplx  # noqa: PLC0415

    if args.synthetic:
        with tempfile.TemporaryDirectory() as tmp:
            writer = write_synthetic_smpl if args.synthetic == "smpl" else write_synthetic_smplx
            model = load_body_model(writer(tmp, args.gender), args.synthetic, args.gender)
    else:
        what = "an SMPL/SMPL-X model file (.pkl/.npz) or model directory"
        check_input_path(args.body, "--body", what, directory_ok=True)
        try:
            model = load_body_model(args.body, args.model_type, args.gender)
        except (FileNotFoundError, ValueError) as exc:
            raise as_command_error(exc, BODY_FLAGS) from exc
    return posed_body(model, args.preset)


def _check_openpose_drawing():
    from .body.openpose import load_openpose_drawing  # noqa: PLC0415

    try:
        load_openpose_drawing()
    except ImportError as exc:
        raise CommandError(f"controlnet_aux: expected its OpenPose drawing module, got none ({exc})") from exc


def run_skeleton(args):
    """Write the skeleton-condition grid; returns 0."""
    check_output_file(args.out, "--out", suffixes=(".png",))
    require("numpy", "cv2", "torch", "smplx", "scipy")
    _check_openpose_drawing()

    import cv2  # noqa: PLC0415
    import numpy as np  # noqa: PLC0415

    from .cameras import orbit_cameras  # noqa: PLC0415
    from .body.skeleton import draw_conditions  # noqa: PLC0415

    body = _load_body(args)
    azimuths = np.arange(args.views) * 360.0 / args.views
    cameras = orbit_cameras(args.radius, args.polar, azimuths, args.fovy)
    images = draw_conditions(body, cameras, args.size)
    grid = labelled_grid(images, [f"azimuth {a:g} deg" for a in azimuths], columns=min(args.views, 4))
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    if not cv2.imwrite(args.out, cv2.cvtColor(grid, cv2.COLOR_RGB2BGR)):
        raise CommandError(f"--out: expected a writable PNG path, got {args.out!r} (cv2.imwrite failed)")
    print(f"wrote {args.out}: {args.views} views (azimuths {', '.join(f'{a:g}' for a in azimuths)}), "
          f"{args.size}x{args.size} each, {body.model_type} {args.preset}-pose")  # fmt: skip
    return 0


def run_convert(args):
    """Convert a chumpy SMPL pickle; returns 0."""
    from .body.convert import convert_smpl_pickle  # noqa: PLC0415

    check_input_path(args.src, "src", "an official SMPL .pkl file")
    check_output_file(args.dst, "dst", suffixes=(".pkl",))
    if os.path.exists(args.dst) and os.path.samefile(args.src, args.dst):
        raise CommandError(f"dst: expected a path other than src, got the same file {args.dst!r}")
    try:
        data = convert_smpl_pickle(args.src, args.dst)
    except ValueError as exc:
        raise as_command_error(exc, {"path": "src"}) from exc
    shapes = ", ".join(f"{k} {tuple(v.shape)}" for k, v in sorted(data.items()) if hasattr(v, "shape"))
    print(f"wrote {args.dst}: {shapes}")
    return 0
