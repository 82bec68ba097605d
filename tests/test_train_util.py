import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from tiny_mels import make_melset, tiny_train_args, to_flags

from evaluation.pipeline import train_from_args
from improved_diffusion import checkpoint as ckpt
from improved_diffusion.evaluate import batch_losses
from improved_diffusion.image_datasets import load_data
from improved_diffusion.logger import Logger
from improved_diffusion.script_util import create_model_and_diffusion, model_and_diffusion_defaults
from improved_diffusion.train_util import TrainLoop
from melcore.errors import UserError

pytestmark = pytest.mark.usefixtures("one_torch_thread")

ROOT = Path(__file__).resolve().parents[1]




@pytest.fixture(scope="module")
def mels(tmp_path_factory):
    return make_melset(tmp_path_factory.mktemp("mels") / "m")


def _state(path):
    return torch.load(path, weights_only=True)


def _assert_same(a: dict, b: dict):
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k


def _tiny_model(args):
    torch.manual_seed(0)
    keys = model_and_diffusion_defaults().keys()
    return create_model_and_diffusion(**{k: args[k] for k in keys})


def test_loss_decreases_on_fixed_batch(mels, tmp_path):
    args = tiny_train_args(mels, tmp_path / "run")
    model, diffusion = _tiny_model(args)
    x, _ = next(load_data(data_dir=mels, batch_size=8, crop_width=16, num_workers=0))
    before = batch_losses(model, diffusion, x, seed=1)["loss"]

    def fixed():
        while True:
            yield x, {}

    loop = TrainLoop(model=model, diffusion=diffusion, data=fixed(), batch_size=8, lr=2e-3,
                     ema_rate="0.9", log_interval=10, save_interval=1000, max_steps=40,
                     log_dir=str(tmp_path / "run"), progress=False)
    loop.run_loop()
    after = batch_losses(model, diffusion, x, seed=1)["loss"]
    assert after < 0.6 * before, (before, after)
    assert (tmp_path / "run" / "model000040.pt").is_file()


def test_checkpoint_names_keep_last_and_args(mels, tmp_path):
    run = tmp_path / "run"
    train_from_args(tiny_train_args(mels, run, max_steps=8, save_interval=2, keep_checkpoints=2,
                                    ema_rate="0.9,0.99", val_interval=4, sample_interval=8,
                                    sample_count=2, sample_wav=False), progress=False)
    names = sorted(p.name for p in run.glob("*.pt"))
    assert names == [
        "ema_0.99_000006.pt", "ema_0.99_000008.pt", "ema_0.9_000006.pt", "ema_0.9_000008.pt",
        "model000006.pt", "model000008.pt", "opt000006.pt", "opt000008.pt",
    ]
    args, config = ckpt.read_args(run)
    assert args["max_steps"] == 8 and args["num_channels"] == 32 and config.num_mels == 16
    assert "progress.csv" in os.listdir(run) and "log.txt" in os.listdir(run)
    assert any(p.name.startswith("events.out.tfevents") for p in run.iterdir())
    # validation every 4 steps, previews at step 8 (denormalised log-mels + PNGs)
    import csv

    rows = list(csv.DictReader(open(run / "progress.csv")))
    val = [float(r["val_loss"]) for r in rows if r.get("val_loss")]
    assert len(val) == 2 and all(0 < v < 3 for v in val) and "val_mse_q3" in rows[0]
    # Validation rows carry their step (the curves plot them there, not at their row number).
    assert [float(r["step"]) for r in rows if r.get("val_loss")] == [4.0, 8.0]
    previews = sorted(p.name for p in (run / "samples" / "000008").iterdir())
    assert previews == ["mel_config.json", "sample_00000.npy", "sample_00000.png", "sample_00001.npy", "sample_00001.png"]
    mel = np.load(run / "samples" / "000008" / "sample_00000.npy")
    assert mel.shape == (16, 16) and -12 - 1e-4 <= mel.min() and mel.max() <= 3 + 1e-4
    # EMA with rate 0.9 moved further from the start than 0.99, and both differ from the model
    m, e9, e99 = (_state(run / n) for n in ("model000008.pt", "ema_0.9_000008.pt", "ema_0.99_000008.pt"))
    k = "out.2.weight" if "out.2.weight" in m else next(iter(m))
    assert not torch.equal(m[k], e9[k]) and not torch.equal(e9[k], e99[k])
    opt = _state(run / "opt000008.pt")
    assert opt["step"] == 8 and "opt" in opt and "scaler" in opt


@pytest.mark.parametrize("sampler", ["uniform", "loss-second-moment"])
def test_resume_equals_uninterrupted(mels, tmp_path, sampler):
    full, part = tmp_path / "full", tmp_path / "part"
    kw = dict(schedule_sampler=sampler, dropout=0.1)  # dropout masks must replay too
    train_from_args(tiny_train_args(mels, full, max_steps=6, **kw), progress=False)
    train_from_args(tiny_train_args(mels, part, max_steps=3, **kw), progress=False)
    # The same command with a later --max_steps continues from model000003.pt
    loop = train_from_args(tiny_train_args(mels, part, max_steps=6, **kw), progress=False)
    assert loop.step == 6
    for name in ("model000006.pt", "ema_0.9999_000006.pt"):
        _assert_same(_state(full / name), _state(part / name))
    assert _state(full / "opt000006.pt")["opt"]["state"].keys() == _state(part / "opt000006.pt")["opt"]["state"].keys()


def test_changed_model_flag_in_same_run_dir_refused(mels, tmp_path):
    run = tmp_path / "run"
    train_from_args(tiny_train_args(mels, run, max_steps=1, save_interval=1), progress=False)
    with pytest.raises(UserError, match=r"--num_res_blocks 2 contradicts .*num_res_blocks=1"):
        train_from_args(tiny_train_args(mels, run, max_steps=2, num_res_blocks=2), progress=False)


def _wait_for(path, proc, seconds=180):
    deadline = time.time() + seconds
    while not path.exists() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.05)


def test_sigkill_and_group_sigterm_then_rerun_reach_same_params(mels, tmp_path):
    args = dict(max_steps=12, save_interval=2, log_interval=2, num_workers=1)
    train_from_args(tiny_train_args(mels, tmp_path / "ref", **args), progress=False)
    run = tmp_path / "killed"
    cmd = [sys.executable, str(ROOT / "scripts" / "mel_train.py"),
           *to_flags(tiny_train_args(mels, run, **args))]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    # 1) kill -9 at an arbitrary moment after the first checkpoints
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _wait_for(run / "model000004.pt", proc)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL, proc.stderr.read().decode()[-2000:]
    latest = ckpt.find_latest(run, [0.9999])
    assert latest is not None and latest < 12
    # 2) rerun, then SIGTERM to the whole process group (trainer and its DataLoader worker),
    #    as Ctrl-C or a job scheduler does: it saves and exits cleanly
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            start_new_session=True)
    _wait_for(run / ckpt.model_name(latest + 2), proc)
    os.killpg(proc.pid, signal.SIGTERM)
    assert proc.wait(timeout=120) == 0, proc.stderr.read().decode()[-2000:]
    log = (run / "log.txt").read_text()
    assert f"resuming from {run / ckpt.model_name(latest)}" in log and "stopped by signal 15" in log
    stopped = ckpt.find_latest(run, [0.9999])
    assert stopped > latest
    # 3) the same command finishes the run
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    if stopped < 12:
        assert f"resuming from {run / ckpt.model_name(stopped)}" in (run / "log.txt").read_text()
    for name in ("model000012.pt", "ema_0.9999_000012.pt"):
        _assert_same(_state(tmp_path / "ref" / name), _state(run / name))


class _Batches:
    """Real batches, with NaN at chosen steps and an optional signal sent at one step."""

    def __init__(self, data, nan_steps=(), signal_at=None):
        self.data, self.nan_steps, self.signal_at, self.i = data, set(nan_steps), signal_at, 0

    def __next__(self):
        x, cond = next(self.data)
        if self.i == self.signal_at:
            os.kill(os.getpid(), signal.SIGTERM)
        if self.i in self.nan_steps or "all" in self.nan_steps:
            x = torch.full_like(x, float("nan"))
        self.i += 1
        return x, cond


def _loop(mels, tmp_path, batches, **kw):
    args = tiny_train_args(mels, tmp_path)
    model, diffusion = _tiny_model(args)
    data = load_data(data_dir=mels, batch_size=4, crop_width=16, num_workers=0)
    return TrainLoop(model=model, diffusion=diffusion, data=_Batches(data, **batches), batch_size=4,
                     lr=1e-3, log_interval=2, log_dir=str(tmp_path), progress=False,
                     logger=Logger(tmp_path, formats=("log",)), **kw)


def test_nan_steps_skipped_then_stop(mels, tmp_path):
    loop = _loop(mels, tmp_path / "a", {"nan_steps": (2, 3)}, save_interval=100, max_steps=5, max_bad_steps=3)
    for _ in range(2):
        loop.run_step(*next(loop.data))
    before = [p.detach().clone() for p in loop.params]
    ema_before = [e.clone() for e in loop.ema_params[0]]
    for _ in range(2):
        loop.run_step(*next(loop.data))
    assert loop.bad_steps == 2 and loop.step == 4
    assert all(torch.equal(a, b) for a, b in zip(before, loop.params))
    assert all(torch.equal(a, b) for a, b in zip(ema_before, loop.ema_params[0]))
    loop.run_step(*next(loop.data))  # a finite batch trains again
    assert loop.bad_steps == 0 and not torch.equal(before[0], loop.params[0])
    assert all(torch.isfinite(p).all() for p in loop.params)

    stop = _loop(mels, tmp_path / "b", {"nan_steps": ("all",)}, save_interval=2, max_steps=50, max_bad_steps=3)
    stop.save()  # a good checkpoint at step 0 must survive the failure
    good = _state(tmp_path / "b" / "model000000.pt")
    with pytest.raises(UserError, match="3 consecutive steps with non-finite"):
        stop.run_loop()
    # steps 1-2 were skipped, step 2 saved unchanged weights, step 3 stopped the run
    _assert_same(good, _state(tmp_path / "b" / "model000002.pt"))
    assert not (tmp_path / "b" / "model000003.pt").exists()


def test_sigterm_saves_and_exits(mels, tmp_path):
    loop = _loop(mels, tmp_path, {"signal_at": 2}, save_interval=100, max_steps=50)
    loop.run_loop()
    assert loop.step == 3 and loop.stop_signal == signal.SIGTERM
    assert ckpt.find_latest(tmp_path, [0.9999]) == 3
    assert "stopped by signal" in (tmp_path / "log.txt").read_text()
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL


def test_run_stops_where_lr_anneal_reaches_zero(mels, tmp_path):
    # A --max_steps past --lr_anneal_steps once trained on with a negative learning rate.
    loop = _loop(mels, tmp_path, {}, save_interval=100, max_steps=50, lr_anneal_steps=4)
    lrs = []
    for _ in range(4):
        loop.run_step(*next(loop.data))
        lrs.append(loop.opt.param_groups[0]["lr"])
    np.testing.assert_allclose(lrs, [1e-3, 7.5e-4, 5e-4, 2.5e-4])
    loop.step = 6  # a resumed run past the end: the rate stays at 0, never below
    loop._anneal_lr()
    assert loop.opt.param_groups[0]["lr"] == 0.0
    loop.step = 0
    loop.run_loop()
    assert loop.step == 4
    assert "training stops at step 4" in (tmp_path / "log.txt").read_text()


@pytest.mark.parametrize("precision", ["bf16", "fp16"])
def test_mixed_precision_trains_and_resumes(mels, tmp_path, precision):
    args = dict(max_steps=2, save_interval=1, precision=precision, grad_clip=1.0)
    loop = train_from_args(tiny_train_args(mels, tmp_path / "a", **args), progress=False)
    assert loop.step == 2 and loop.bad_steps == 0
    assert all(torch.isfinite(p).all() and p.dtype == torch.float32 for p in loop.params)
    opt = _state(tmp_path / "a" / "opt000002.pt")
    if precision == "fp16":  # the grad scaler's state travels with the optimizer
        assert opt["scaler"]["scale"] > 0
    train_from_args(tiny_train_args(mels, tmp_path / "b", **{**args, "max_steps": 1}), progress=False)
    train_from_args(tiny_train_args(mels, tmp_path / "b", **args), progress=False)
    _assert_same(_state(tmp_path / "a" / "model000002.pt"), _state(tmp_path / "b" / "model000002.pt"))


@pytest.mark.parametrize("units", ["", "amx"])
def test_auto_precision_is_stored_resolved(mels, tmp_path, monkeypatch, units):
    """--precision auto (the default) trains in the device's fastest precision and args.json
    and log.txt say which: bf16 + channels_last on an AMX CPU, fp32 on one without bf16."""
    import json

    from improved_diffusion import fast

    monkeypatch.setattr(fast, "cpu_bf16_units", lambda: units)
    args = tiny_train_args(mels, tmp_path / "r", max_steps=1, save_interval=1, precision="auto")
    loop = train_from_args(args, progress=False)
    want = "bf16" if units else "fp32"
    assert loop.precision == want and loop.speed_mode.channels_last is bool(units)
    assert json.loads((tmp_path / "r" / "args.json").read_text())["precision"] == want
    assert f"(--precision {want})" in (tmp_path / "r" / "log.txt").read_text()


def test_bad_flags_are_user_errors(mels, tmp_path):
    for bad, msg in ((dict(batch_size=0), "--batch_size"), (dict(precision="fp8"), "--precision"),
                     (dict(crop_width=64), "--crop_width 64: wider than every clip"),
                     (dict(num_mels=80), "--num_mels 80: the mel set")):
        with pytest.raises(UserError, match=msg):
            train_from_args(tiny_train_args(mels, tmp_path / "r", **bad), progress=False)


@pytest.mark.gpu
@pytest.mark.parametrize("precision", ["bf16", "fp16"])
def test_cuda_fused_adamw_trains_and_resumes(mels, tmp_path, precision):
    args = dict(max_steps=4, save_interval=2, precision=precision, num_workers=1)
    loop = train_from_args(tiny_train_args(mels, tmp_path / "a", **args), progress=False)
    assert loop.opt.defaults["fused"] and loop.params[0].device.type == "cuda"
    assert loop.bad_steps == 0 and all(torch.isfinite(p).all() for p in loop.params)
    train_from_args(tiny_train_args(mels, tmp_path / "b", **{**args, "max_steps": 2}), progress=False)
    train_from_args(tiny_train_args(mels, tmp_path / "b", **args), progress=False)
    a, b = (_state(tmp_path / d / "model000004.pt") for d in "ab")
    # cuDNN may pick different kernels after a restart: equal to float tolerance on GPU
    assert all(torch.allclose(a[k], b[k], atol=1e-5) for k in a)


def test_preview_callback_gets_the_step_and_an_ema_copy(mels, tmp_path):
    seen = []

    def preview(step, model):
        seen.append((step, model))

    loop = _loop(mels, tmp_path, {}, save_interval=100, max_steps=4, sample_interval=2, preview=preview)
    loop.run_loop()
    assert [s for s, _ in seen] == [2, 4]
    step4 = seen[-1][1]
    assert step4 is not loop.model and not step4.training
    for p, e in zip(step4.parameters(), loop.ema_params[0]):
        assert torch.equal(p.detach(), e)


def test_max_train_seconds_stops_with_a_checkpoint_and_resume_spends_only_the_rest(mels, tmp_path):
    """A wall-time budget ends training cleanly (checkpoint written, seconds recorded in the opt
    file); a rerun whose budget is spent trains nothing; a larger budget goes on from there."""
    run = tmp_path / "run"
    args = tiny_train_args(mels, run, max_steps=0, save_interval=1000, max_train_seconds=0.5)
    loop = train_from_args(args, progress=False)
    assert loop.time_up and loop.step >= 1 and 0.5 <= loop.train_seconds < 30
    step = loop.step
    opt = torch.load(run / ckpt.opt_name(step), weights_only=True)
    assert (run / ckpt.model_name(step)).is_file() and opt["train_seconds"] >= 0.5
    again = train_from_args(args, progress=False)
    assert again.step == step and ckpt.find_latest(run, again.ema_rate) == step
    more = train_from_args({**args, "max_train_seconds": opt["train_seconds"] + 0.5}, progress=False)
    assert more.step > step and more.train_seconds >= opt["train_seconds"] + 0.5
    # default 0 is upstream's behaviour: no budget, max_steps alone decides
    plain = train_from_args(tiny_train_args(mels, tmp_path / "plain"), progress=False)
    assert plain.step == 6 and not plain.time_up
    with pytest.raises(UserError, match="max_train_seconds"):
        train_from_args({**args, "max_train_seconds": -1}, progress=False)
