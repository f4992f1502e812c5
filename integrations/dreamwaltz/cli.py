"""``ssd-toolkit skeleton`` and ``ssd-toolkit convert-smpl``. Heavy imports happen inside the
run functions so ``ssd-toolkit --help`` stays fast."""

from __future__ import annotations

import os


def register(subparsers):
    """Add the ``skeleton`` and ``convert-smpl`` commands to the ``ssd-toolkit`` parser."""
    p = subparsers.add_parser(
        "skeleton",
        help="write the OpenPose skeleton conditions of a body seen from a ring of views as a PNG grid",
        description="Pose a SMPL / SMPL-X body (A or T preset, DreamWaltz's y offset), place --views "
        "cameras evenly in azimuth (0 = front) and draw each view's skeleton condition.",
    )
    source = p.add_mutually_exclusive_group(required=True)
    source.add_argument("--body", help="model file (.pkl / .npz) or a smplx model directory")
    source.add_argument("--synthetic", choices=("smpl", "smplx"), help="use a generated synthetic model")
    p.add_argument("--out", required=True, help="output PNG")
    p.add_argument("--views", type=int, default=8, help="number of views (default 8)")
    p.add_argument("--preset", default="A", choices=("A", "T"), help="pose preset (default A)")
    p.add_argument("--size", type=int, default=512, help="condition image size in pixels (default 512)")
    p.add_argument("--model-type", choices=("smpl", "smplx"), default=None, help="default: from the file")
    p.add_argument("--gender", choices=("neutral", "male", "female"), default="neutral")
    p.add_argument("--radius", type=float, default=2.5, help="camera distance (default 2.5: whole body in view)")
    p.add_argument("--polar", type=float, default=90.0, help="polar angle, degrees (default 90: level)")
    p.add_argument("--fovy", type=float, default=50.0, help="vertical field of view, degrees (default 50)")
    p.set_defaults(func=run_skeleton)

    p = subparsers.add_parser(
        "convert-smpl",
        help="convert an official (chumpy) SMPL pickle to a plain-NumPy pickle smplx reads",
    )
    p.add_argument("src", help="official SMPL .pkl")
    p.add_argument("dst", help="output .pkl (e.g. models/smpl/SMPL_NEUTRAL.pkl)")
    p.set_defaults(func=run_convert)


def _grid(images, columns):
    import numpy as np  # noqa: PLC0415

    b, h, w, c = images.shape
    rows = -(-b // columns)
    grid = np.zeros((rows * h, columns * w, c), dtype=images.dtype)
    for i, image in enumerate(images):
        r, k = divmod(i, columns)
        grid[r * h:(r + 1) * h, k * w:(k + 1) * w] = image
    return grid


def run_skeleton(args):
    """Write the skeleton-condition grid; returns 0."""
    import tempfile  # noqa: PLC0415

    import cv2  # noqa: PLC0415
    import numpy as np  # noqa: PLC0415

    from .body import load_body_model, posed_body  # noqa: PLC0415
    from .cameras import orbit_cameras  # noqa: PLC0415
    from .skeleton import draw_conditions  # noqa: PLC0415
    from .synthetic import write_synthetic_smpl, write_synthetic_smplx  # noqa: PLC0415

    if args.views < 1:
        raise SystemExit(f"--views: expected >= 1, got {args.views}")
    if args.size < 1:
        raise SystemExit(f"--size: expected >= 1, got {args.size}")
    if args.synthetic:
        with tempfile.TemporaryDirectory() as tmp:
            writer = write_synthetic_smpl if args.synthetic == "smpl" else write_synthetic_smplx
            model = load_body_model(writer(tmp, args.gender), args.synthetic, args.gender)
    else:
        model = load_body_model(args.body, args.model_type, args.gender)
    body = posed_body(model, args.preset)
    azimuths = np.arange(args.views) * 360.0 / args.views
    cameras = orbit_cameras(args.radius, args.polar, azimuths, args.fovy)
    images = draw_conditions(body, cameras, args.size)
    grid = _grid(images, columns=min(args.views, 4))
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    if not cv2.imwrite(args.out, cv2.cvtColor(grid, cv2.COLOR_RGB2BGR)):
        raise SystemExit(f"--out: could not write a PNG to {args.out!r}")
    print(f"wrote {args.out}: {args.views} views (azimuths {', '.join(f'{a:g}' for a in azimuths)}), "
          f"{args.size}x{args.size} each, {body.model_type} {args.preset}-pose")  # fmt: skip
    return 0


def run_convert(args):
    """Convert a chumpy SMPL pickle; returns 0."""
    from .smpl_convert import convert_smpl_pickle  # noqa: PLC0415

    data = convert_smpl_pickle(args.src, args.dst)
    shapes = ", ".join(f"{k} {tuple(v.shape)}" for k, v in sorted(data.items()) if hasattr(v, "shape"))
    print(f"wrote {args.dst}: {shapes}")
    return 0
