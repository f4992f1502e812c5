"""The ``ssd-toolkit toy`` command group: every subcommand runs (small knobs) and writes its outputs."""

import json

import numpy as np
import pytest

from ssd_toolkit.cli import build_parser, main


def test_toy_group_is_registered_with_all_subcommands():
    parser = build_parser()
    for sub in ("trajectories", "drift", "sweep", "statistics", "digits", "all"):
        args = parser.parse_args(["toy", sub])
        assert args.out == "toy_out" and args.seed == 0 and callable(args.func)


@pytest.mark.filterwarnings("ignore::RuntimeWarning")  # the compiled-module fallback notice
@pytest.mark.parametrize(
    "argv, stem, key",
    [
        (["trajectories", "--seeds", "3", "--steps", "200"], "trajectories", "estimators"),
        (["drift", "--noises", "2"], "drift", "at_mode"),
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


@pytest.mark.parametrize(
    "argv, flag, said",
    [
        (["sweep", "--Ms", "800,0,200,200"], "--Ms", "got 200 more than once in '800,0,200,200'"),
        (["sweep", "--lrs", "0.1,0.10"], "--lrs", "got 0.1 more than once"),
        (["sweep", "--steps", "100,100"], "--steps", "got 100 more than once"),
    ],
)
def test_repeated_list_values_are_one_line_errors(tmp_path, capsys, argv, flag, said):
    with pytest.raises(SystemExit) as exit_:
        main(["toy", *argv, "--out", str(tmp_path / "o")])
    err = capsys.readouterr().err
    assert exit_.value.code == 2 and err.count("\n") == 1
    assert err.startswith(f"ssd-toolkit toy sweep: error: {flag}: expected distinct values, {said}")
    assert not (tmp_path / "o").exists()


@pytest.mark.parametrize("name", ["fig.png", "out.json", "Fig.PDF"])
def test_out_named_like_a_file_is_refused_and_nothing_is_created(tmp_path, capsys, monkeypatch, name):
    monkeypatch.chdir(tmp_path)
    assert main(["toy", "trajectories", "--out", name]) == 2
    err = capsys.readouterr().err
    assert err == f"ssd-toolkit toy trajectories: error: --out: expected a folder (each command writes NAME.png, NAME.json and NAME.md into it), got {name!r}, a file name\n"
    assert not (tmp_path / name).exists()


def test_an_existing_folder_with_a_dot_is_fine(tmp_path):
    (tmp_path / "figs.png").mkdir()  # already a folder: the user meant it
    assert main(["toy", "statistics", "--dim", "4", "--noises", "64", "--num-t", "3", "--out", str(tmp_path / "figs.png")]) == 0


@pytest.mark.parametrize("markers", [[".lock"], ["log.jsonl"], ["checkpoints"], [".lock", "config.json"],
                                     ["log.jsonl", "config.json"]])  # fmt: skip
@pytest.mark.parametrize("flag", ["--out", "--docs"])
def test_a_folder_holding_an_avatar_run_is_refused(tmp_path, capsys, markers, flag):
    run = tmp_path / "avatar_run"
    run.mkdir()
    for marker in markers:
        (run / marker).mkdir() if marker == "checkpoints" else (run / marker).write_text("{}")
    before = sorted(p.name for p in run.iterdir())
    argv = ["toy", "all", "--out", str(run)] if flag == "--out" else ["toy", "all", "--out", str(tmp_path / "o"), "--docs", str(run)]
    assert main(argv) == 2
    assert capsys.readouterr().err == (f"ssd-toolkit toy all: error: {flag}: expected a folder that holds no avatar run, "
                                       f"got {str(run)!r}, which holds {', '.join(markers)}; choose another {flag}\n")  # fmt: skip
    assert sorted(p.name for p in run.iterdir()) == before and not (tmp_path / "o").exists()


def test_a_lone_config_json_is_no_avatar_run(tmp_path):
    (tmp_path / "config.json").write_text("{}")  # other tools write one too
    assert main(["toy", "statistics", "--dim", "4", "--noises", "64", "--num-t", "3", "--out", str(tmp_path)]) == 0


def test_ctrl_c_is_one_line_and_exit_130(tmp_path, capsys, monkeypatch):
    from ssd_toolkit.toy import sweep

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(sweep, "run", interrupted)
    assert main(["toy", "sweep", "--out", str(tmp_path)]) == 130
    captured = capsys.readouterr()
    assert captured.err == f"ssd-toolkit toy sweep: interrupted; what {tmp_path}/ holds may be incomplete\n"
    assert captured.out == ""


def test_progress_bars_are_off_when_stderr_is_not_a_terminal():
    from ssd_toolkit.toy.progress import bar

    assert bar(range(3), "x").disable  # pytest captures stderr: no carriage returns in logs


def test_a_digits_run_too_large_is_refused_in_one_line_before_it_starts(tmp_path, capsys):
    """--per-class 1000 --steps 2 ran 300 s at 1.7 GB with no output (issue 35)."""
    import time

    start = time.perf_counter()
    assert main(["toy", "digits", "--per-class", "1000", "--steps", "2", "--out", str(tmp_path / "o")]) == 2
    assert time.perf_counter() - start < 2.0
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("ssd-toolkit toy digits: error: --per-class: expected at most ")
    assert ", got 1000, about " in err and not (tmp_path / "o").exists()


def test_a_long_digits_run_says_so_first():
    from ssd_toolkit.toy.cli import check_digits_size

    assert check_digits_size(2, 1000) is None  # the default: seconds
    notice = check_digits_size(100, 1000)
    assert notice.startswith("ssd-toolkit toy digits: expect about ") and "--per-class 100 x --steps 1000" in notice


@pytest.mark.parametrize("jobs", ["1", "2"])
def test_toy_all_runs_every_experiment_once(tmp_path, capsys, monkeypatch, jobs):
    """Each experiment once (in worker processes with --jobs 2, which show no bars), the
    summary line last; the experiments stubbed to write a marker (the real ones take seconds)."""
    from ssd_toolkit.toy import cli as toy_cli

    def stub(name):
        def run(args):
            from ssd_toolkit.toy import progress

            with open(f"{args.out}/{name}.done", "a") as f:
                f.write(f"{progress.SHOW}\n")
            print(f"{name}: done")

        return run

    for name in toy_cli.EXPERIMENTS:
        monkeypatch.setitem(toy_cli._RUNS, name, stub(name))
    out = tmp_path / "o"
    out.mkdir()
    assert main(["toy", "all", "--out", str(out), "--jobs", jobs]) == 0
    for name in toy_cli.EXPERIMENTS:
        assert (out / f"{name}.done").read_text() == ("True\n" if jobs == "1" else "False\n")
    if jobs == "1":  # a worker's prints go to the terminal, not to capsys
        lines = capsys.readouterr().out.splitlines()
        assert lines[:-1] == [f"{name}: done" for name in toy_cli.EXPERIMENTS] and lines[-1].startswith("toy all: ")


def test_docs_copies_are_lossless(tmp_path):
    """The copies the docs show keep every pixel (a 256-colour palette banded the gradients)."""
    from PIL import Image

    from ssd_toolkit.toy.report import compress_png

    y, x = np.mgrid[0:64, 0:300]
    rgb = np.stack([x * 255 // 299, y * 4, (x + y) % 256], axis=-1).astype(np.uint8)  # > 256 colours
    Image.fromarray(rgb).save(tmp_path / "fig.png")
    compress_png(tmp_path / "fig.png", tmp_path / "docs" / "fig.png")
    with Image.open(tmp_path / "docs" / "fig.png") as im:
        np.testing.assert_array_equal(np.asarray(im.convert("RGB")), rgb)


def test_ctrl_c_in_a_toy_all_worker_stops_all_in_one_line(tmp_path, capsys, monkeypatch):
    from ssd_toolkit.toy import cli as toy_cli

    def interrupted(args):
        raise KeyboardInterrupt

    for name in toy_cli.EXPERIMENTS:
        monkeypatch.setitem(toy_cli._RUNS, name, interrupted)
    assert main(["toy", "all", "--out", str(tmp_path), "--jobs", "2"]) == 130
    assert capsys.readouterr().err == f"ssd-toolkit toy all: interrupted; what {tmp_path}/ holds may be incomplete\n"
