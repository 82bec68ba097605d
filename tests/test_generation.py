import json
import math

import numpy as np
import pytest
import torch
from eval_helpers import SMALL, make_tiny_run, run_script, toy_mel

from evaluation import generation as gen
from improved_diffusion.checkpoint import load_model

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def test_slerp_numbers():
    a = torch.tensor([[1.0, 0.0]])
    b = torch.tensor([[0.0, 1.0]])
    mid = gen.slerp(a, b, 0.5)
    assert torch.allclose(mid, torch.tensor([[math.sqrt(0.5), math.sqrt(0.5)]]), atol=1e-6)
    assert torch.allclose(gen.slerp(a, b, 0.0), a) and torch.allclose(gen.slerp(a, b, 1.0), b)
    # Norm is preserved along the arc between equal-norm vectors (lerp would dip to 0.707).
    for al in (0.1, 0.3, 0.7):
        assert float(gen.slerp(3 * a, 3 * b, al).norm()) == pytest.approx(3.0, rel=1e-6)
    third = gen.slerp(a, b, 1 / 3)
    assert torch.allclose(third, torch.tensor([[math.cos(math.pi / 6), math.sin(math.pi / 6)]]), atol=1e-6)
    # Parallel vectors: lerp.
    assert torch.allclose(gen.slerp(a, 2 * a, 0.5), 1.5 * a)


def test_frame_mask_and_errors():
    m = gen.frame_mask((1, 1, 4, 8), 2, 5)
    assert m[0, 0, 0].tolist() == [0, 0, 1, 1, 1, 0, 0, 0]
    with pytest.raises(Exception, match="do not fit"):
        gen.frame_mask((1, 1, 4, 8), 5, 9)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    root = tmp_path_factory.mktemp("gen")
    run = make_tiny_run(root / "run")
    # The untrained UNet's output layer is zero (eps = 0); give it weights so inversion is tested.
    loaded = load_model(run, overrides={"timestep_respacing": "ddim10"})
    torch.manual_seed(1)
    with torch.no_grad():
        for p in loaded.model.out.parameters():
            p.normal_(0, 0.02)
    rng = np.random.default_rng(0)
    a = SMALL.normalize(toy_mel(40, 0, rng, 16, num_mels=16)).clip(-1, 1)
    b = SMALL.normalize(toy_mel(80, 2, rng, 16, num_mels=16)).clip(-1, 1)
    return root, loaded, torch.from_numpy(a)[None, None], torch.from_numpy(b)[None, None]


def test_interpolation_endpoints_reconstruct(tiny):
    _, loaded, a, b = tiny
    mels, alphas = gen.interpolate(loaded.model, loaded.diffusion, a, b, steps=3)
    assert alphas.tolist() == [0.0, 0.5, 1.0]
    ab = float((a - b).abs().mean())
    err_a, err_b = float((mels[0] - a[0]).abs().mean()), float((mels[-1] - b[0]).abs().mean())
    assert err_a < 0.1 * ab and err_b < 0.1 * ab
    mid = mels[1]
    assert float((mid - a[0]).abs().mean()) > 2 * err_a and float((mid - b[0]).abs().mean()) > 2 * err_b


def test_inpainting_keeps_known_frames_and_variation_strength(tiny):
    _, loaded, a, _ = tiny
    m, d = loaded.model, loaded.diffusion
    out = gen.continuation(m, d, a, keep_frames=6, n=2, seed=0)
    assert torch.equal(out[:, :, :, :6], a.expand(2, -1, -1, -1)[:, :, :, :6])
    assert float((out[:, :, :, 6:] - a[:, :, :, 6:]).abs().mean()) > 0.05
    weak = gen.variations(m, d, a, strength=0.05, n=2, seed=0)
    strong = gen.variations(m, d, a, strength=1.0, n=2, seed=0)
    assert float((weak - a).abs().mean()) < float((strong - a).abs().mean())
    with pytest.raises(Exception, match="strength"):
        gen.variations(m, d, a, strength=0.0)


def test_interpolate_script(tiny, tmp_path, capsys):
    root, _, a, b = tiny
    for name, x in (("a", a), ("b", b)):
        np.save(tmp_path / f"{name}.npy", SMALL.denormalize(x[0, 0].numpy()))
    out = tmp_path / "interp"
    cmd = ["--model_path", str(root / "run"), "--a", str(tmp_path / "a.npy"),
           "--b", str(tmp_path / "b.npy"), "--steps", "3", "--out_dir", str(out), "--timestep_respacing", "ddim5",
           "--griffin_lim"]
    assert run_script("interpolate", cmd) == 0
    info = json.loads((out / "interpolation.json").read_text())
    assert info["files"] == ["interp_00", "interp_01", "interp_02"]
    for f in info["files"]:
        assert np.load(out / f"{f}.npy").shape == (16, 16) and (out / f"{f}.wav").is_file()
    assert (out / "grid.png").stat().st_size > 1000 and (out / "mel_config.json").is_file()
    capsys.readouterr()
    assert run_script("interpolate", [*cmd[:3], tmp_path / "missing.npy", *cmd[4:]]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "missing.npy" in err[0]


def test_variations_script_continue(tiny, tmp_path):
    root, _, a, _ = tiny
    np.save(tmp_path / "a.npy", SMALL.denormalize(a[0, 0].numpy()))
    assert run_script("variations", ["continue", "--model_path", root / "run", "--mel", tmp_path / "a.npy",
                                      "--keep", "8", "--n", "2", "--out_dir", tmp_path / "o",
                                      "--timestep_respacing", "5", "--no_audio"]) == 0
    out = np.load(tmp_path / "o" / "continue_01.npy")
    np.testing.assert_allclose(out[:, :8], SMALL.denormalize(a[0, 0].numpy())[:, :8], atol=1e-4)


def test_pick_endpoints(tmp_path):
    from eval_helpers import make_melset

    from melcore.errors import UserError

    # pitches cycle 40, 60, 80; families 0 for the first three clips, then 2
    root = make_melset(tmp_path / "m", {"train": 2, "test": 6}, config=SMALL, frames=16)
    a, b = gen.pick_endpoints(root)
    assert (a.name, b.name) == ("test_000.npy", "test_004.npy")  # test_003 shares test_000's pitch
    assert a.is_file() and b.is_file() and gen.pick_endpoints(root) == (a, b)
    assert gen.pick_endpoints(root, min_semitones=40)[1].name == "test_005.npy"
    one_family = make_melset(tmp_path / "one", {"test": 3}, families=(1,), config=SMALL, frames=16)
    with pytest.raises(UserError, match="no two clips differ"):
        gen.pick_endpoints(one_family)
    # A small set whose test split is one instrument (NSynth-GM tiny): the pair comes from valid.
    one_test_family = make_melset(tmp_path / "tiny", {"test": 3, "valid": 6}, config=SMALL, frames=16)
    (tmp_path / "tiny" / "manifest.jsonl").write_text("".join(
        line for line in (tmp_path / "tiny" / "manifest.jsonl").read_text().splitlines(keepends=True)
        if '"test"' not in line or '"instrument_family": 0' in line))
    a, b = gen.pick_endpoints(one_test_family)
    assert (a.parent.name, a.name, b.name) == ("valid", "valid_000.npy", "valid_004.npy")


def test_interpolate_script_picks_endpoints(tiny, tmp_path, capsys):
    from eval_helpers import make_melset

    root = tiny[0]
    mels = make_melset(tmp_path / "m", {"test": 6}, config=SMALL, frames=16)
    out = tmp_path / "interp"
    cmd = ["--model_path", str(root / "run"), "--data_dir", str(mels), "--pick_endpoints", "--steps", "3",
           "--out_dir", str(out), "--timestep_respacing", "ddim5", "--griffin_lim"]
    assert run_script("interpolate", cmd) == 0
    info = json.loads((out / "interpolation.json").read_text())
    assert info["endpoints"] == {"a": "test_000", "b": "test_004"}
    capsys.readouterr()
    assert run_script("interpolate", cmd[:2] + ["--steps", "3", "--out_dir", str(out)]) == 2
    assert "--pick_endpoints" in capsys.readouterr().err
