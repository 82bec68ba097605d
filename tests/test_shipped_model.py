"""Shipped diffusion models (improved_diffusion/ship.py, weights/) and the quality curve."""

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from eval_helpers import make_melset, run_script
from tiny_mels import tiny_train_args

from evaluation.classifier import ClassifierConfig, save_classifier, train_classifier
from evaluation.curve import quality_curve
from evaluation.mels import load_melset
from evaluation.pipeline import sample_from_checkpoint, train_from_args
from improved_diffusion import checkpoint
from improved_diffusion.ship import ship
from melcore.errors import UserError

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A tiny run with checkpoints at steps 2 and 4, its mel set and a tiny classifier."""
    root = tmp_path_factory.mktemp("ship")
    mels = make_melset(root / "mels", {"train": 12, "valid": 6, "test": 6}, frames=32)
    torch.manual_seed(0)
    train_from_args(tiny_train_args(mels, root / "run", max_steps=4, save_interval=2, ema_rate="0.5",
                                    num_mels=80), progress=False)
    train = load_melset(mels, "train")
    clf = train_classifier(train.mels, train.labels, train.config, ClassifierConfig(channels=8), max_steps=5,
                           batch_size=8)
    save_classifier(root / "clf", clf, train.config, {})
    return root


def test_ship_fp16_then_sample_by_name(trained, tmp_path, monkeypatch):
    monkeypatch.setattr(checkpoint, "WEIGHTS_DIR", tmp_path / "weights")
    out = ship(trained / "run", tmp_path / "weights" / "tiny-v1", "python scripts/mel_train.py ...", "tiny set",
               fp16=True)
    assert sorted(p.name for p in out.iterdir()) == ["args.json", "ema_0.5_000004.pt", "training.json"]
    args = json.loads((out / "args.json").read_text())
    assert args["data_dir"] is None and args["log_dir"] is None and args["clip_frames"] == 32
    info = json.loads((out / "training.json").read_text())
    assert info["steps"] == 4 and info["dtype"] == "float16" and info["train_seconds"] > 0
    state = torch.load(out / "ema_0.5_000004.pt", weights_only=True)
    assert all(v.dtype == torch.float16 for v in state.values() if v.is_floating_point())
    assert checkpoint.shipped_names() == ["tiny-v1"]

    kw = dict(batch_size=2, seed=3, wav=False, progress=False, sampler="dpmpp2m", steps=4)
    shipped, _ = sample_from_checkpoint("tiny-v1", tmp_path / "a", 2, **kw)  # by name, from any folder
    original, _ = sample_from_checkpoint(trained / "run" / "ema_0.5_000004.pt", tmp_path / "b", 2, **kw)
    assert shipped.shape == (2, 1, 80, 32)  # whole clips: clip_frames survives the shipping
    np.testing.assert_allclose(shipped, original, atol=2e-2)
    assert np.abs(shipped - original).max() > 0  # it really is the fp16 copy
    with pytest.raises(UserError, match="EMA weights only"):
        sample_from_checkpoint(out, tmp_path / "c", 1, use_ema=False, **{**kw, "batch_size": 1})


def test_ship_refuses_missing_step_and_bad_cli(trained, tmp_path):
    with pytest.raises(UserError, match="--step 3: not a complete checkpoint"):
        ship(trained / "run", tmp_path / "x", "cmd", "data", step=3)
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "args.json").write_text((trained / "run" / "args.json").read_text())
    with pytest.raises(UserError, match="no complete checkpoint"):
        ship(empty, tmp_path / "y", "c", "d")


def test_ship_cli_needs_a_name():
    from improved_diffusion.ship import main

    with pytest.raises(SystemExit) as exc:
        main(["--run", "r", "--command", "c", "--data", "d"])
    assert exc.value.code == 2


def test_quality_curve_measures_each_checkpoint_and_resumes(trained, tmp_path):
    out = tmp_path / "curve"
    curve = quality_curve(trained / "run", str(trained / "mels"), str(trained / "clf"), out, num_samples=4,
                          sampler_steps=2, threads=2, progress=False)
    points = curve["points"]
    assert [p["step"] for p in points] == [2, 4]
    assert curve["sampler"] == "dpmpp2m_sde-2"  # mel_sample.py's default sampler, so the curve is what users get
    for p in points:
        assert p["cpu_minutes"] == pytest.approx(2 * p["train_minutes"], abs=0.02)
        assert p["n"] == 4 and 0 <= p["notes"] <= 4 and np.isfinite(p["fd"]) and p["fd"] > 0
    assert points[1]["train_minutes"] >= points[0]["train_minutes"]
    assert json.loads((out / "curve.json").read_text())["points"] == points
    assert (out / "curve.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # a rerun reuses every measured point; --every 2 keeps the last checkpoint
    stamp = (out / "step_000002" / "metrics.json").stat().st_mtime_ns
    again = quality_curve(trained / "run", str(trained / "mels"), str(trained / "clf"), out, num_samples=4,
                          sampler_steps=2, threads=2, every=2, progress=False)
    assert [p["step"] for p in again["points"]] == [4] and again["points"][0] == points[1]
    assert (out / "step_000002" / "metrics.json").stat().st_mtime_ns == stamp


def test_quality_curve_script_errors_name_the_run(tmp_path, capsys):
    code = run_script("quality_curve", ["--run", tmp_path / "nope", "--real", tmp_path, "--classifier", tmp_path,
                                        "--out", tmp_path / "o"])
    assert code == 2
    assert "nope" in capsys.readouterr().err


SHIPPED = Path(checkpoint.WEIGHTS_DIR)


# Every shipped model (none in a checkout without weights/: an empty parameter set is skipped).
@pytest.mark.parametrize("name", checkpoint.shipped_names())
def test_the_shipped_model_loads_offline_and_samples_whole_notes(tmp_path, name):
    folder = SHIPPED / name
    info = json.loads((folder / "training.json").read_text())
    weights = folder / info["checkpoint"]
    assert sum(f.stat().st_size for f in folder.iterdir()) < 30 * 2**20
    torch.load(weights, weights_only=True)  # no pickled code
    samples, _ = sample_from_checkpoint(name, tmp_path / "s", 1, batch_size=1, seed=0, wav=False, progress=False,
                                        sampler="dpmpp2m", steps=2)
    assert samples.shape == (1, 1, 80, 344) and np.isfinite(samples).all()
    assert {"command", "data", "steps", "train_seconds", "curve"} <= set(info)


@pytest.mark.parametrize("name", checkpoint.shipped_names())
def test_the_shipped_model_makes_notes_not_noise(tmp_path, name):
    """Its whole notes pass the per-sample note check (v1: 46 of 64 in its curve, v2: 58 of
    64, real held-out notes 46-53); noise never does."""
    from evaluation.notecheck import check_note

    samples, _ = sample_from_checkpoint(name, tmp_path / "s", 8, batch_size=8, seed=0, wav=False, progress=False)
    config = checkpoint.read_args(name)[1]
    passed = [check_note(config.denormalize(s[0])).is_note for s in samples]
    assert sum(passed) >= 2, passed
    noise = np.random.default_rng(0).uniform(-1, 1, samples[0, 0].shape)
    assert not check_note(config.denormalize(noise)).is_note
