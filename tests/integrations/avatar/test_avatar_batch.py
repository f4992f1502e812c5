"""``ssd-toolkit avatar-batch`` on CPU with --tiny: stacked avatars follow their own ``avatar``
runs, the queue, per-avatar NaN guard, rerun skips, torchrun with 2 gloo processes, errors."""

import json
import os
import re
import socket
import subprocess
import sys

import pytest
import torch

pytest.importorskip("diffusers")
pytest.importorskip("smplx")

from ssd_toolkit import cli  # noqa: E402
from ssd_toolkit.integrations.guidance.controlnet import ControlNetGuidance  # noqa: E402

SHORT = ["--steps", "4", "--checkpoint-every", "2", "--preview-every", "3", "--turntable-frames", "2",
         "--body-init-steps", "5", "--no-progress"]  # fmt: skip
# three avatars, each its own prompt, seed and batch; with --max-concurrent 2 the third waits in the queue
JOBS = [
    {"name": "robot", "prompt": "a wooden robot", "seed": 1},
    {"name": "knight", "prompt": "a knight in armor", "seed": 2, "batch": 1},
    {"name": "clown", "prompt": "a clown", "seed": 3, "estimator": "sds"},
]
# stacking changes the networks' batch, so float rounding differs: the trajectories agree
# to float32 tolerance, not bit for bit
RTOL, ATOL = 1e-4, 1e-6
# Adam divides by sqrt(v): where a parameter's gradient is near zero, rounding-size gradient
# differences move it by a visible part of one step (lr 1e-2); 5e-4 is 5% of one step
FIELD_ATOL = 5e-4


@pytest.fixture(scope="module")
def assets(avatar_assets):
    """The shared tiny networks and body as avatar-batch flags."""
    return ["--tiny", *(arg for key, value in avatar_assets.items() for arg in (f"--{key.replace('_', '-')}", value))]


def write_jobs(path, jobs):
    path.write_text(json.dumps(jobs))
    return path


def log_records(out):
    return [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]


def summary(out):
    return json.loads((out / "summary.json").read_text())


@pytest.fixture(scope="module")
def batch(assets, tmp_path_factory):
    root = tmp_path_factory.mktemp("batch")
    jobs = write_jobs(root / "jobs.json", JOBS)
    rc = cli.main(["avatar-batch", str(jobs), "--out", str(root / "out"), "--max-concurrent", "2", *assets, *SHORT])
    assert rc == 0
    return root / "out"


def single_run(assets, job, out):
    flags = ["--prompt", job["prompt"], "--seed", str(job["seed"])]
    flags += ["--batch", str(job["batch"])] if "batch" in job else []
    flags += ["--estimator", job["estimator"]] if "estimator" in job else []
    assert cli.main(["avatar", *flags, "--out", str(out), *assets, *SHORT]) == 0
    return out


@pytest.mark.parametrize("job", JOBS, ids=[j["name"] for j in JOBS])
def test_stacked_avatar_follows_its_own_single_run(batch, assets, job, tmp_path):
    single = single_run(assets, job, tmp_path / job["name"])
    stacked = batch / job["name"]
    a, b = log_records(stacked), log_records(single)
    assert [r["step"] for r in a] == [1, 2, 3, 4]
    for ra, rb in zip(a, b):
        assert ra["t_mean"] == rb["t_mean"]  # its own timestep stream
        for key in ("loss", "reg", "grad_norm", "opacity"):
            assert ra[key] == pytest.approx(rb[key], rel=RTOL, abs=ATOL), (ra["step"], key)
    ca = torch.load(stacked / "checkpoints" / "last.pt", weights_only=True)
    cb = torch.load(single / "checkpoints" / "last.pt", weights_only=True)
    assert ca["step"] == cb["step"] == 4
    for key, value in cb["field"].items():
        torch.testing.assert_close(ca["field"][key], value, rtol=RTOL, atol=FIELD_ATOL)
    for key in ("cameras", "t_sampler"):  # the streams stand where the single run's stand
        assert ca["rng"]["numpy"][key] == cb["rng"]["numpy"][key]
    # the same files as `avatar` writes (the batch fills the tiny assets: none are built per job)
    files = {p.relative_to(single).as_posix() for p in single.rglob("*") if "tiny_assets" not in p.parts}
    assert files == {p.relative_to(stacked).as_posix() for p in stacked.rglob("*")}


def test_summary_lists_every_job(batch):
    s = summary(batch)
    assert [j["name"] for j in s["jobs"]] == [j["name"] for j in JOBS]
    assert s["counts"] == {"done": 3} and s["world_size"] == 1 and s["max_concurrent"] == 2
    for entry in s["jobs"]:
        metrics = json.loads((batch / entry["name"] / "metrics.json").read_text())
        assert entry["steps"] == entry["target_steps"] == 4 and entry["final_loss"] == metrics["final_loss"]
        assert entry["it_per_s"] > 0 and entry["outputs"] == str(batch / entry["name"])


def test_rerun_skips_finished_jobs_and_resumes_longer_ones(batch, assets, capsys):
    jobs = batch.parent / "jobs.json"
    before = {j["name"]: (batch / j["name"] / "log.jsonl").read_text() for j in JOBS}
    assert cli.main(["avatar-batch", str(jobs), "--out", str(batch), *assets, *SHORT]) == 0
    assert summary(batch)["counts"] == {"skipped": 3}
    assert before == {j["name"]: (batch / j["name"] / "log.jsonl").read_text() for j in JOBS}
    extra = write_jobs(batch.parent / "more.json", JOBS[:1])
    longer = [*SHORT[:1], "6", *SHORT[2:]]
    assert cli.main(["avatar-batch", str(extra), "--out", str(batch), *assets, *longer]) == 0
    entry = summary(batch)["jobs"][0]
    assert entry["status"] == "done" and entry["steps"] == 6
    assert [r["step"] for r in log_records(batch / "robot")] == [1, 2, 3, 4, 5, 6]


def test_a_diverging_avatar_stops_alone(assets, tmp_path, monkeypatch, capsys):
    original = ControlNetGuidance.finish_step

    def finish_step(self, prep, eps):
        out = original(self, prep, eps)
        if self.generator.initial_seed() == 2 and self._nan_calls == 2:  # knight's third call: step 3
            out.gradients = torch.full_like(out.gradients, float("nan"))
        self._nan_calls += 1
        return out

    monkeypatch.setattr(ControlNetGuidance, "_nan_calls", 0, raising=False)
    monkeypatch.setattr(ControlNetGuidance, "finish_step", finish_step)
    jobs = write_jobs(tmp_path / "jobs.json", JOBS[:2])
    rc = cli.main(["avatar-batch", str(jobs), "--out", str(tmp_path / "out"), *assets, *SHORT])
    assert rc == 3
    entries = {j["name"]: j for j in summary(tmp_path / "out")["jobs"]}
    assert entries["robot"]["status"] == "done" and entries["robot"]["steps"] == 4
    knight = entries["knight"]
    assert knight["status"] == "stopped" and knight["steps"] == 2
    assert "step 3: non-finite values" in knight["message"] and "(step 2)" in knight["message"]
    ckpt = torch.load(tmp_path / "out" / "knight" / "checkpoints" / "last.pt", weights_only=True)
    assert ckpt["step"] == 2 and all(torch.isfinite(v).all() for v in ckpt["field"].values())
    assert not (tmp_path / "out" / "knight" / "metrics.json").exists()


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_torchrun_two_gloo_processes_share_the_jobs(assets, tmp_path):
    jobs = tmp_path / "jobs.txt"  # the text form: one prompt per line
    jobs.write_text("# three avatars\na robot\n\na knight\na clown\n")
    out = tmp_path / "out"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    command = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", "--nnodes=1",
               "--master_addr=127.0.0.1", f"--master_port={_free_port()}", "-m", "ssd_toolkit.cli", "avatar-batch",
               str(jobs), "--out", str(out), *assets, "--steps", "2", "--checkpoint-every", "2", "--preview-every",
               "0", "--turntable-frames", "1", "--body-init-steps", "2", "--no-progress"]  # fmt: skip
    proc = subprocess.run(command, env=env, capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, proc.stderr[-3000:]
    s = summary(out)
    assert s["world_size"] == 2 and s["counts"] == {"done": 3}
    assert [(j["name"], j["rank"]) for j in s["jobs"]] == [("001-a-robot", 0), ("002-a-knight", 1), ("003-a-clown", 0)]
    for j in s["jobs"]:
        assert (out / j["name"] / "metrics.json").is_file() and j["steps"] == 2
    assert "[rank 1] [002-a-knight] done" in proc.stderr


@pytest.mark.parametrize(
    "jobs, extra, message",
    [
        (None, [], r"JOBS: expected a text, JSON or YAML file of avatar jobs, got .*no such file"),
        ([], [], r"JOBS: expected a non-empty list of prompts or settings in .*, got an empty list"),
        ([{"prompt": "a", "colour": 1}], [], r"JOBS: item 1 of .*: unknown setting 'colour'"),
        ([{"prompt": "a", "steps": "many"}], [], r"steps: expected an integer, got str 'many'"),
        ([{"prompt": "a", "name": "x"}, {"prompt": "b", "name": "x"}], [], r"expected a unique name, got 'x' \(also item 1\)"),
        ([{"prompt": "a", "name": "../up"}], [], r"expected a name of letters, digits"),
        ([{"prompt": "a", "name": "summary.json"}], [], r"expected a name other than summary.json, tiny_assets"),
        ([{"prompt": "a", "out": "elsewhere"}], [], r"expected no 'out'"),
        ([{"prompt": "a"}, {"prompt": "b", "latent_size": 16}], [],
         r"JOBS: expected every job to share latent_size .*got 8 in job '001-a' and 16 in job '002-b'"),
        ([{"prompt": "a"}], ["--max-concurrent", "0"], r"--max-concurrent: expected an integer >= 1, got 0"),
        ([{"prompt": "a", "body": "/no/such/body"}], [], r"--body: expected an SMPL/SMPL-X model .*\(job '001-a'\)"),
    ],
)
def test_user_errors_are_one_line_exit_2(assets, tmp_path, capsys, jobs, extra, message):
    path = tmp_path / "missing.json" if jobs is None else write_jobs(tmp_path / "jobs.json", jobs)
    with pytest.raises(SystemExit) as exc:
        rc = cli.main(["avatar-batch", str(path), "--out", str(tmp_path / "out"), *assets, *SHORT, *extra])
        raise SystemExit(rc)
    assert exc.value.code == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "Traceback" not in err, err
    assert err.startswith("ssd-toolkit avatar-batch: error: ")
    assert re.search(message, err), err
    assert not (tmp_path / "out" / "001-a").exists()


def test_jobs_file_forms(tmp_path):
    from ssd_toolkit.integrations.avatar.batch.jobs import read_jobs

    yaml_file = tmp_path / "jobs.yaml"
    yaml_file.write_text("- a robot\n- {name: k1, prompt: a knight, seed: 7, field-hidden: 8}\n")
    jobs = read_jobs(yaml_file)
    assert [(j.name, j.settings) for j in jobs] == [
        ("001-a-robot", {"prompt": "a robot"}),
        ("k1", {"prompt": "a knight", "seed": 7, "field_hidden": 8}),
    ]
    text_file = tmp_path / "jobs.txt"
    text_file.write_text("  A Wooden Robot!  \n# not a job\n\nknight\n")
    assert [(j.name, j.settings["prompt"]) for j in read_jobs(text_file)] == [
        ("001-a-wooden-robot", "A Wooden Robot!"),
        ("002-knight", "knight"),
    ]


def test_a_corrupt_or_locked_job_fails_alone_on_resume(assets, tmp_path, capsys):
    from ssd_toolkit.integrations.avatar.outdir import OutputLock

    jobs = write_jobs(tmp_path / "jobs.json", [{"name": n, "prompt": p} for n, p in
                                               (("a", "a robot"), ("b", "a knight"), ("c", "a clown"))])
    out = tmp_path / "out"
    two = [*SHORT[:1], "2", *SHORT[2:]]
    assert cli.main(["avatar-batch", str(jobs), "--out", str(out), *assets, *two]) == 0
    ckpt = out / "a" / "checkpoints" / "last.pt"
    data = bytearray(ckpt.read_bytes())
    data[100] ^= 0xFF  # one flipped byte: the checksum refuses it
    ckpt.write_bytes(bytes(data))
    with OutputLock(out / "b"):  # another process is using b
        rc = cli.main(["avatar-batch", str(jobs), "--out", str(out), *assets, *SHORT])
    assert rc == 1
    entries = {j["name"]: j for j in summary(out)["jobs"]}
    assert entries["a"]["status"] == "failed" and "does not match its trailer" in entries["a"]["message"]
    assert entries["b"]["status"] == "failed" and "locked by process" in entries["b"]["message"]
    assert entries["c"]["status"] == "done" and entries["c"]["steps"] == 4
    assert ckpt.read_bytes() == bytes(data)  # left as it was


def test_ctrl_c_at_start_up_is_one_line_exit_130(assets, tmp_path, capsys, monkeypatch):
    from ssd_toolkit.integrations.avatar import run

    def interrupt(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(run, "check_inputs", interrupt)  # while the jobs are checked
    jobs = write_jobs(tmp_path / "jobs.json", [{"prompt": "a"}])
    code = cli.main(["avatar-batch", str(jobs), "--out", str(tmp_path / "out"), *assets, *SHORT])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 130 and err[-1] == "ssd-toolkit avatar-batch: interrupted; the last checkpoint, if any, is kept"
