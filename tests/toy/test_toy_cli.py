"""The ``ssd-toolkit toy`` command group: every subcommand runs (small knobs) and writes its outputs."""

import json

import pytest

from ssd_toolkit.cli import build_parser, main


def test_toy_group_is_registered_with_all_subcommands():
    parser = build_parser()
    for sub in ("trajectories", "sweep", "statistics", "digits", "all"):
        args = parser.parse_args(["toy", sub])
        assert args.out == "toy_out" and args.seed == 0 and callable(args.func)


@pytest.mark.filterwarnings("ignore::RuntimeWarning")  # the compiled-module fallback notice
@pytest.mark.parametrize(
    "argv, stem, key",
    [
        (["trajectories", "--seeds", "3", "--steps", "200"], "trajectories", "estimators"),
        (["sweep", "--Ms", "0,400", "--lrs", "0.01", "--steps", "100", "--seeds", "2"], "sweep", "rows"),
        (["statistics", "--dim", "8", "--noises", "256", "--num-t", "6"], "statistics", "checks"),
        (["digits", "--steps", "20"], "digits", "estimators"),
    ],
)
def test_subcommand_writes_png_json_markdown(tmp_path, argv, stem, key):
    out = tmp_path / "o"
    assert main(["toy", *argv, "--out", str(out)]) == 0
    for ext in ("png", "json", "md"):
        assert (out / f"{stem}.{ext}").stat().st_size > 0
    summary = json.loads((out / f"{stem}.json").read_text())
    assert summary[key]


def test_statistics_checks_report_every_figure(tmp_path):
    main(["toy", "statistics", "--dim", "8", "--noises", "256", "--num-t", "6", "--out", str(tmp_path)])
    checks = json.loads((tmp_path / "statistics.json").read_text())["checks"]
    assert {c["figure"] for c in checks} >= {"Fig. 16", "Fig. 17", "Fig. 18", "Fig. 19", "Fig. 9"}
    assert all(isinstance(c["holds"], bool) for c in checks)
