import json

import numpy as np
import pytest
from eval_helpers import SMALL, make_melset, make_tiny_run, run_script

from evaluation import losses

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def test_read_progress_and_plot(tmp_path):
    (tmp_path / "progress.csv").write_text(
        "step,loss,mse,val_loss,val_loss_q0\n1,2.0,1.5,,\n2,1.0,0.8,1.2,0.3\n3,0.5,0.4,,\n")
    s = losses.read_progress(tmp_path)
    assert s["loss"][0].tolist() == [1, 2, 3] and s["loss"][1].tolist() == [2.0, 1.0, 0.5]
    assert s["val_loss"][0].tolist() == [2] and s["val_loss"][1].tolist() == [1.2]
    png = losses.plot_curves(tmp_path, tmp_path / "c.png")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert losses.plot_curves(tmp_path / "nothing", tmp_path / "d.png") is None


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("losses")
    mels = make_melset(root / "mels", {"train": 4, "valid": 2, "test": 2}, frames=20, config=SMALL)
    other = make_melset(root / "other", {"train": 2, "test": 2}, frames=20, config=SMALL, shift=3.0, seed=7)
    run = make_tiny_run(root / "run")
    return root, mels, other, run


def test_checkpoint_losses_raw_and_ema(setup):
    _, mels, _, run = setup
    res = losses.checkpoint_losses(run, mels, splits=("train", "valid"), limit=2, bpd_limit=1)
    assert set(res["weights"]) == {"raw", "ema"} and res["step"] == 0 and res["diffusion_steps"] == 20
    v = res["weights"]["ema"]["splits"]["valid"]
    # learned sigma: loss = mse + vb; bpd is the sum of the bound's terms plus the prior
    assert v["loss"] == pytest.approx(v["mse"] + v["vb"], rel=1e-5)
    assert v["bpd"] == pytest.approx(v["vb_terms_bpd"] + v["prior_bpd"], rel=1e-5)
    qs = [v.get(f"loss_q{i}") for i in range(4)]
    assert sum(q is not None for q in qs) >= 2
    # same weights in both files here, so raw and EMA give the same numbers
    assert res["weights"]["raw"]["splits"]["valid"]["loss"] == pytest.approx(v["loss"])


def test_script_with_zero_shot(setup, capsys):
    root, mels, other, run = setup
    (run / "progress.csv").write_text("step,loss\n1,1.0\n2,0.9\n")
    code = run_script("eval_losses", ["--model_path", run, "--data_dir", mels, "--splits", "valid,test", "--weights", "ema",
                                      "--limit", "2", "--bpd_limit", "1", "--zero_shot", other])
    assert code == 0
    out = capsys.readouterr().out
    assert "ema valid loss" in out and "zero-shot other" in out
    res = json.loads((run / "losses.json").read_text())
    assert set(res["weights"]) == {"ema"} and set(res["weights"]["ema"]["splits"]) == {"valid", "test"}
    assert res["curves"] == "curves.png" and (run / "curves.png").is_file()
    z = json.loads((run / "zero_shot.json").read_text())
    assert z["split"] == "test" and z["other"]["data_dir"] == str(other)
    # the other set is shifted by +3 log units: its bits/dim differ from the own set's
    assert np.isfinite(z["own"]["bpd"]) and z["own"]["bpd"] != pytest.approx(z["other"]["bpd"], rel=1e-3)


def test_bad_inputs(setup, tmp_path, capsys):
    _, mels, _, run = setup
    (tmp_path / "model000001.pt").write_bytes(b"x")
    for path in (tmp_path / "missing", tmp_path / "model000001.pt"):
        assert run_script("eval_losses", ["--model_path", path, "--data_dir", mels]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and err[0].startswith("error: ") and str(path) in err[0]
    with pytest.raises(Exception, match="mel config mismatch"):
        other = make_melset(tmp_path / "m80", {"valid": 1}, frames=20)
        losses.checkpoint_losses(run, other, splits=("valid",), weights=("ema",), limit=1, bpd_limit=0)
