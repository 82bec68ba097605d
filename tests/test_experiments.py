import json
import subprocess
import sys

import pytest
from eval_helpers import SMALL, make_melset, run_script

from evaluation import experiments as ex
from melcore.errors import UserError

pytestmark = pytest.mark.usefixtures("one_torch_thread")

TINY = {"num_channels": 32, "num_res_blocks": 1, "channel_mult": "1,1", "attention_resolutions": "",
        "num_heads": 1, "diffusion_steps": 10, "noise_schedule": "cosine", "crop_width": 16, "num_mels": 16, "batch_size": 2,
        "log_interval": 1}


def test_expand_and_grid_errors(tmp_path):
    runs = ex.expand({"grid": {"noise_schedule": ["linear", "cosine"], "learn_sigma": [True, False]}})
    assert [n for n, _ in runs] == ["noise_schedule=linear-learn_sigma=true", "noise_schedule=linear-learn_sigma=false",
                                    "noise_schedule=cosine-learn_sigma=true", "noise_schedule=cosine-learn_sigma=false"]
    assert runs[3][1] == {"noise_schedule": "cosine", "learn_sigma": False}
    assert ex.expand({"grid": {}}) == [("base", {})]
    bad = tmp_path / "g.json"
    bad.write_text(json.dumps({"data_dir": "m", "max_steps": 1, "grid": {"lr": 1e-4}}))
    with pytest.raises(UserError, match="non-empty lists"):
        ex.load_grid(bad)
    bad.write_text("{not json")
    with pytest.raises(UserError, match="cannot parse"):
        ex.load_grid(bad)
    (tmp_path / "g.yaml").write_text("data_dir: m\nmax_steps: 2\ngrid: {lr: [0.1]}\n")
    assert ex.load_grid(tmp_path / "g.yaml")["data_dir"] == str(tmp_path / "m")
    with pytest.raises(UserError, match="unknown training flags"):
        ex.run_flags({"data_dir": "m", "max_steps": 1, "base": {"no_such_flag": 1}}, {}, tmp_path)


def test_did_not_work_notes():
    ok = {"status": "ok", "eval": {"losses": {"weights": {"ema": {"splits": {"valid": {"loss": 1.0}}}}}}}
    worse = {"status": "ok", "eval": {"losses": {"weights": {"ema": {"splits": {"valid": {"loss": 2.0}}}}}}}
    notes = ex.what_did_not_work({"a": ok, "b": worse, "c": {"status": "failed", "error": "boom"}})
    assert notes[0] == "c: failed (boom)"
    assert any(n.startswith("b: validation loss 2 is 2.00x the best with the same loss (a") for n in notes)
    # Another target (v-prediction) measures another quantity: its loss is not compared.
    v_pred = {**worse, "flags": {"predict_v": True}}
    notes = ex.what_did_not_work({"a": ok, "b": v_pred})
    assert not any("validation loss" in n for n in notes)


def test_tiny_grid_runs(tmp_path, capsys):
    make_melset(tmp_path / "mels", {"train": 6, "valid": 2}, frames=20, config=SMALL)
    grid = {"data_dir": "mels", "max_steps": 2, "base": TINY, "grid": {"learn_sigma": [True, False]},
            "num_samples": 2, "loss_clips": 2, "bpd_clips": 1}
    (tmp_path / "grid.json").write_text(json.dumps(grid))
    out = tmp_path / "exp"
    assert run_script("run_experiments", [tmp_path / "grid.json", "--out", out]) == 0
    assert "| learn_sigma=false | ok |" in capsys.readouterr().out
    summary = json.loads((out / "experiments.json").read_text())
    assert [row["name"] for row in summary["rows"]] == ["learn_sigma=true", "learn_sigma=false"]
    assert all(run["status"] == "ok" for run in summary["runs"].values()), summary["runs"]
    rows = (out / "summary.csv").read_text().splitlines()
    assert rows[0].startswith("name,status,step,train_loss") and len(rows) == 3
    for name in summary["runs"]:
        assert (out / name / "model000002.pt").is_file()
        assert len(list((out / name / "samples").glob("sample_*.npy"))) == 2
        losses = json.loads((out / name / "losses.json").read_text())
        v = losses["weights"]["ema"]["splits"]["valid"]
        assert v["loss"] > 0 and v["bpd"] > 0
    # learn_sigma adds the vb term to the loss; without it loss == mse
    sig = summary["runs"]["learn_sigma=true"]["eval"]["losses"]["weights"]["ema"]["splits"]["valid"]
    nosig = summary["runs"]["learn_sigma=false"]["eval"]["losses"]["weights"]["ema"]["splits"]["valid"]
    assert "vb" in sig and "vb" not in nosig and nosig["loss"] == pytest.approx(nosig["mse"])
    assert "| learn_sigma=true | ok | 2 |" in (out / "summary.md").read_text()


def test_script_bad_grid_is_one_line_error(tmp_path):
    (tmp_path / "g.json").write_text(json.dumps({"max_steps": 1}))
    r = subprocess.run([sys.executable, "scripts/run_experiments.py", str(tmp_path / "g.json"), "--out",
                        str(tmp_path / "o")], capture_output=True, text=True)
    assert r.returncode == 2 and r.stderr.strip() == f"error: {tmp_path / 'g.json'}: missing 'data_dir'"


# -- named arms, the time budget, resume ---------------------------------------------------------------
ARMS = {"eps": {"learn_sigma": True}, "v": {"predict_v": True, "snr_gamma": 5.0}}


def arms_grid(tmp_path, **extra) -> dict:
    make_melset(tmp_path / "mels", {"train": 6, "valid": 2, "test": 2}, frames=20, config=SMALL)
    make_melset(tmp_path / "other", {"train": 4, "valid": 2, "test": 2}, frames=20, config=SMALL, shift=1.5, seed=3)
    grid = {"data_dir": "mels", "max_train_seconds": 1.0, "base": {**TINY, "save_interval": 1}, "arms": ARMS,
            "num_samples": 2, "loss_clips": 2, "bpd_clips": 1, "zero_shot": {"data_dir": "other", "split": "test"},
            **extra}
    (tmp_path / "grid.json").write_text(json.dumps(grid))
    return grid


def test_arms_expand_with_grid_and_list(tmp_path, capsys):
    runs = ex.expand({"arms": ARMS, "grid": {"lr": [1e-3, 1e-4]}})
    assert [n for n, _ in runs] == ["eps-lr=0.001", "eps-lr=0.0001", "v-lr=0.001", "v-lr=0.0001"]
    assert runs[2][1] == {"predict_v": True, "snr_gamma": 5.0, "lr": 1e-3}
    assert [n for n, _ in ex.expand({"arms": ARMS})] == ["eps", "v"]
    (tmp_path / "g.json").write_text(json.dumps({"data_dir": "m", "max_train_seconds": 5, "arms": {"a/b": {}}}))
    with pytest.raises(UserError, match="arm names"):
        ex.load_grid(tmp_path / "g.json")
    args = ex.run_flags({"data_dir": "m", "max_train_seconds": 5, "seed": 3}, ARMS["v"], tmp_path)
    assert args["max_train_seconds"] == 5.0 and args["max_steps"] == 0 and args["seed"] == 3 and args["predict_v"]
    # the preset: three arms at one wall-time budget, listed without running anything
    assert run_script("run_experiments", ["--list", "--soundfont", "none"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("3 runs, 600 s of training each, seed 0")
    assert "zero-shot: the held-out test-split instruments" in out
    for arm in ("upstream", "notes", "notes-eps"):
        assert f"  {arm}: " in out


def test_arms_run_record_and_rerun_skips_finished(tmp_path, capsys):
    arms_grid(tmp_path, arms={**ARMS, "bad": {"noise_schedule": "no-such-schedule"}})
    out = tmp_path / "exp"
    assert run_script("run_experiments", [tmp_path / "grid.json", "--out", out]) == 0
    summary = json.loads((out / "experiments.json").read_text())
    assert summary["complete"] and summary["budget"] == "1 s of training each"
    assert {n: r["status"] for n, r in summary["runs"].items()} == {"eps": "ok", "v": "ok", "bad": "failed"}
    assert "no-such-schedule" in summary["runs"]["bad"]["error"] and (out / "bad" / "error.txt").is_file()
    for name in ("eps", "v"):
        r = json.loads((out / name / "result.json").read_text())
        assert r["status"] == "ok" and r["flags"] == ARMS[name] and r["seed"] == 0 and r["train_seconds"] >= 1.0
        assert r["config"]["max_train_seconds"] == 1.0 and r["eval"]["zero_shot"]["other"]["data_dir"].endswith("other")
        zs = json.loads((out / name / "zero_shot.json").read_text())
        assert zs["kind"] == "data_dir" and zs["own"]["loss"] > 0 and zs["other"]["loss"] > 0
    row = {r["name"]: r for r in summary["rows"]}["v"]
    assert row["train_s"] >= 1.0 and row["zs_other_loss"] > 0 and row["valid_bpd"] > 0
    # no classifier: the winner is picked on valid bits/dim, and the findings say so
    assert summary["findings"]["criterion"] == "valid bits/dim"
    assert summary["findings"]["sentences"][0].startswith("Experiments (1 s of training each, seed 0): ")
    assert (out / "report" / "report.json").is_file() and summary["report"] == "report/index.html"
    report = json.loads((out / "report" / "report.json").read_text())
    assert summary["findings"]["sentences"][0] in report["sentences"]
    stamp = {n: (out / n / "result.json").read_bytes() for n in ("eps", "v")}
    models = {p: p.stat().st_mtime_ns for p in out.glob("*/model*.pt")}
    capsys.readouterr()
    assert run_script("run_experiments", [tmp_path / "grid.json", "--out", out]) == 0
    assert {n: (out / n / "result.json").read_bytes() for n in ("eps", "v")} == stamp
    assert {p: p.stat().st_mtime_ns for p in out.glob("*/model*.pt")} == models
    again = json.loads((out / "experiments.json").read_text())
    assert again["runs"]["eps"]["reused"] and again["runs"]["bad"]["status"] == "failed"


@pytest.mark.slow
def test_sigkill_at_random_moments_then_rerun_resumes(tmp_path):
    """SIGKILL of the whole process group at seeded random moments (once anywhere, once after the
    first arm finished); the rerun keeps the finished arm as it was, resumes the other from its
    checkpoint and completes. A second job on the same folder is refused while one runs."""
    import os
    import signal
    import time

    import numpy as np
    from hardening_fixtures import script_cmd, script_env, temp_files

    arms_grid(tmp_path)
    out = tmp_path / "exp"
    cmd = script_cmd("run_experiments.py", tmp_path / "grid.json", "--out", out)
    rng = np.random.default_rng(20261212)

    logs = []

    def start():
        logs.append(tmp_path / f"attempt{len(logs)}.log")
        with open(logs[-1], "w") as log:
            return subprocess.Popen(cmd, env=script_env(), stdout=log, stderr=subprocess.STDOUT, start_new_session=True)

    def holder() -> int | None:
        try:
            return json.loads((out / ".lock").read_text())["pid"]
        except (OSError, ValueError, KeyError):
            return None

    def kill(proc):
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(30)

    def wait_for(cond, proc, timeout=300.0):
        end = time.monotonic() + timeout
        while time.monotonic() < end and not cond() and proc.poll() is None:
            time.sleep(0.02)
        return cond()

    proc = start()  # 1: a kill anywhere in the first ~4 s (import, data, the first arm)
    time.sleep(rng.uniform(0.5, 4.0))
    kill(proc)
    proc = start()  # 2: after the first arm finished, at a random moment of the second
    assert wait_for(lambda: (out / "eps" / "result.json").is_file(), proc), logs[-1].read_text()[-3000:]
    first = (out / "eps" / "result.json").read_bytes()
    models = {p: p.stat().st_mtime_ns for p in (out / "eps").glob("model*.pt")}
    time.sleep(rng.uniform(0.0, 1.5))
    if proc.poll() is None:
        kill(proc)
    final = start()
    if wait_for(lambda: holder() == final.pid, final):  # not the killed run's lock file
        second = subprocess.run(cmd, env=script_env(), capture_output=True, text=True, timeout=120)
        assert second.returncode == 2 and "in use by pid" in second.stderr, second.stderr
    assert final.wait(300) == 0, logs[-1].read_text()[-3000:]
    assert (out / "eps" / "result.json").read_bytes() == first  # not retrained, not re-evaluated
    assert {p: p.stat().st_mtime_ns for p in (out / "eps").glob("model*.pt")} == models
    summary = json.loads((out / "experiments.json").read_text())
    assert summary["complete"] and all(x["status"] == "ok" for x in summary["runs"].values()), summary["runs"]
    assert summary["runs"]["v"]["train_seconds"] >= 1.0 and not temp_files(out)
