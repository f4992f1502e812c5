"""Avatar inputs (issue 24): config-file errors name the file's key, unknown keys get a
"did you mean", --prompt '' with --tiny, a directory given as JOBS, a fresh run into a
directory that holds another run."""

import pytest

from ssd_toolkit import cli
from tiny_avatar_run import avatar
from ssd_toolkit.integrations.avatar import config



def test_yaml_type_error_names_the_key_and_file_not_the_flag(tmp_path, capsys):
    pytest.importorskip("yaml")
    f = tmp_path / "c.yaml"
    f.write_text("steps: ten\n")
    with pytest.raises(TypeError, match=r"^config file '.*c\.yaml': key steps: expected an integer, got str 'ten'$"):
        config.resolve({"tiny": True}, f)
    code, err = avatar(capsys, "--tiny", "--out", tmp_path / "out", "--config", f)
    assert code == 2 and len(err) == 1, err
    assert "--steps" not in err[0] and f"config file {str(f)!r}: key steps: expected an integer" in err[0]


def test_yaml_range_error_names_the_key_a_flag_overrides_it(tmp_path):
    pytest.importorskip("yaml")
    f = tmp_path / "c.yaml"
    f.write_text("batch: 0\n")
    with pytest.raises(ValueError, match=r"^config file '.*c\.yaml': key batch: expected an integer >= 1, got 0$"):
        config.resolve({"tiny": True}, f)
    with pytest.raises(ValueError, match=r"^batch: expected an integer >= 1, got -1$"):  # the flag's value: the flag's name
        config.resolve({"tiny": True, "batch": -1}, f)
    assert config.resolve({"tiny": True, "batch": 3}, f).batch == 3


def test_flag_type_error_still_names_the_setting():
    with pytest.raises(TypeError, match=r"^steps: expected an integer, got str '3'$"):
        config.resolve({"prompt": "p", "body": "b", "steps": "3"})


def test_unknown_key_suggests_the_close_name_on_one_line(tmp_path):
    f = tmp_path / "c.json"
    f.write_text('{"guidance-scal": 7}')
    with pytest.raises(ValueError) as info:
        config.resolve({"tiny": True}, f)
    message = str(info.value)
    assert message.endswith("unknown setting 'guidance-scal' (did you mean 'guidance_scale'?)"), message
    assert "\n" not in message and "lambda_entropy" not in message  # not the list of every name


def test_unknown_key_without_a_close_name_lists_the_names():
    with pytest.raises(ValueError) as info:
        config.resolve({"tiny": True, "zzzqqq": 1})
    message = str(info.value)
    assert "did you mean" not in message and "\n" not in message
    assert all(name in message for name in config.field_names())


def test_empty_prompt_with_tiny_does_not_suggest_tiny(capsys, tmp_path):
    with pytest.raises(ValueError) as info:
        config.resolve({"tiny": True, "prompt": ""})
    assert str(info.value) == "prompt: expected a non-empty text prompt, got ''"
    with pytest.raises(ValueError, match=r"\(or --tiny for a smoke run\)"):  # without --tiny the hint stays
        config.resolve({"prompt": " ", "body": "b"})
    code, err = avatar(capsys, "--tiny", "--prompt", "", "--out", tmp_path / "out")
    assert code == 2 and err == ["ssd-toolkit avatar: error: --prompt: expected a non-empty text prompt, got ''"]


def test_batch_refuses_a_directory_as_jobs(tmp_path, capsys, monkeypatch):
    from ssd_toolkit.integrations.avatar.batch.jobs import read_jobs

    with pytest.raises(ValueError, match=r"^jobs: expected a text, JSON or YAML file of avatar jobs, got '.*' \(a directory\)$"):
        read_jobs(tmp_path)
    monkeypatch.chdir(tmp_path)
    code = cli.main(["avatar-batch", ".", "--tiny", "--out", str(tmp_path / "out")])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1, err
    assert "(a directory)" in err[0] and "no such file" not in err[0] and "file of avatar jobs" in err[0]
    assert not (tmp_path / "out").exists()


def test_fresh_run_into_another_runs_outputs_without_checkpoint_is_refused(tmp_path, capsys):
    out = tmp_path / "out"
    (out / "previews").mkdir(parents=True)
    kept = {"config.json": '{"prompt": "theirs"}\n', "log.jsonl": '{"step": 1}\n', "previews/step_000001.png": "png"}
    for rel, text in kept.items():
        (out / rel).write_text(text)
    code, err = avatar(capsys, "--tiny", "--out", out, "--steps", "2", "--preview-every", "0")
    assert code == 2 and len(err) == 1, err
    assert str(out) in err[0] and "config.json, log.jsonl, previews and no checkpoints/last.pt" in err[0]
    assert "choose another --out" in err[0]
    assert {rel: (out / rel).read_text() for rel in kept} == kept  # untouched


def test_only_this_apps_temporaries_or_empty_folders_are_not_another_run(tmp_path):
    from ssd_toolkit.integrations.avatar.outdir import check_no_unfinished_run

    (tmp_path / "previews").mkdir()
    (tmp_path / "previews" / ".step_000004.png.ab12.tmp").write_text("")
    (tmp_path / "notes.txt").write_text("mine")
    check_no_unfinished_run(tmp_path)  # nothing of a run's: accepted
    (tmp_path / "log.jsonl").write_text("")
    with pytest.raises(ValueError, match=r"holding log\.jsonl and no checkpoints/last\.pt"):
        check_no_unfinished_run(tmp_path)
    (tmp_path / "checkpoints").mkdir()
    (tmp_path / "checkpoints" / "last.pt").write_bytes(b"")
    check_no_unfinished_run(tmp_path)  # a run with a checkpoint: --resume's (or check_previous_run's) case
