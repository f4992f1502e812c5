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
