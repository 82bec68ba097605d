import json
import subprocess
import sys

import numpy as np
import pytest
from eval_helpers import CONFIG, make_melset, make_sample_dir, run_script, toy_mel

from evaluation import metrics, notecheck
from evaluation.classifier import ClassifierConfig, save_classifier, train_classifier
from evaluation.mels import load_melset
from melcore.mel_config import MelConfig

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def test_inception_score_known_values():
    # Constant prediction: every p(y|x) equals the marginal -> IS = 1.
    const = np.tile([0.2, 0.5, 0.3], (10, 1))
    assert metrics.inception_score(const) == pytest.approx(1.0, abs=1e-9)
    # Confident and uniform over classes -> IS = number of classes.
    onehot = np.eye(5)[np.arange(20) % 5]
    assert metrics.inception_score(onehot) == pytest.approx(5.0, rel=1e-6)
    # Confident but all the same class -> 1.
    assert metrics.inception_score(np.eye(5)[[2] * 8]) == pytest.approx(1.0, abs=1e-6)
    # Two classes half the time each, each prediction 0.9/0.1: exp(KL(p||[.5,.5])).
    p = np.array([[0.9, 0.1], [0.1, 0.9]] * 5)
    kl = 0.9 * np.log(0.9 / 0.5) + 0.1 * np.log(0.1 / 0.5)
    assert metrics.inception_score(p) == pytest.approx(np.exp(kl), rel=1e-6)


def test_entropy_and_histograms():
    assert metrics.entropy_bits(np.array([5, 5, 5, 5])) == pytest.approx(2.0)
    assert metrics.entropy_bits(np.array([7, 0, 0])) == 0.0
    assert metrics.entropy_bits(np.array([1, 1, 2])) == pytest.approx(1.5)
    h = metrics.histogram(np.array([0, 2, 2, 4]), 5)
    assert h.tolist() == [1, 0, 2, 0, 1]
    assert metrics.total_variation(np.array([2, 0]), np.array([0, 3])) == pytest.approx(1.0)
    assert metrics.total_variation(np.array([1, 1]), np.array([4, 4])) == pytest.approx(0.0)


def test_frechet_distance_known_answers(rng):
    a = rng.standard_normal((400, 4))
    assert metrics.frechet_distance(a, a) == pytest.approx(0.0, abs=1e-6)
    # Shift by 3 in every dim: FD ~ |mu diff|^2 = 4 * 9 = 36.
    assert metrics.frechet_distance(a, a + 3.0) == pytest.approx(36.0, rel=1e-6)
    # Scale by 2: covariance 4x -> trace(S) + trace(4S) - 2 trace(2S) = trace(S), plus |mu|^2.
    tr = np.trace(np.cov(a, rowvar=False)) + (a.mean(0) ** 2).sum()
    assert metrics.frechet_distance(a, 2 * a) == pytest.approx(tr, rel=1e-6)
    # Independent Gaussians with known moments: FD = |mu|^2 + sum (s1 - s2)^2 (diagonal).
    x, y = np.diag([1.0, 2.0]), np.diag([3.0, 1.0])
    pts = np.array([[1, 1], [1, -1], [-1, 1], [-1, -1]], float)
    fd = metrics.frechet_distance(pts @ x, pts @ y + [1.0, 0.0])
    var = 4 / 3  # sample variance of +-1 with ddof=1
    assert fd == pytest.approx(1.0 + var * ((1 - 3) ** 2 + (2 - 1) ** 2), rel=1e-9)
    # Fewer samples than dims (singular covariance) still gives a finite number.
    b = rng.standard_normal((5, 20))
    assert np.isfinite(metrics.frechet_distance(b, b + 1)) and metrics.frechet_distance(b, b) < 1e-3


def test_two_proportion_test():
    sig = metrics.two_proportion_significant(np.array([50, 50, 0]), 100, np.array([50, 10, 0]), 100)
    assert sig.tolist() == [False, True, False]


def test_ndb_identical_vs_shifted(rng):
    centres = rng.standard_normal((6, 10)) * 5
    real = np.concatenate([c + rng.standard_normal((60, 10)) for c in centres])
    ndb = metrics.NDB(real, k=6, seed=0)
    assert ndb.k == 6 and ndb.note is None
    assert ndb.score(real)["ndb_k"] == 0.0
    # All samples in one mode: every bin's proportion differs.
    one_mode = centres[0] + rng.standard_normal((200, 10))
    assert ndb.score(one_mode)["ndb_k"] >= 5 / 6
    small = metrics.NDB(real[:30], k=50)
    assert small.k == 3 and "reduced" in small.note


def test_spectral_stats_numbers():
    crops = np.zeros((2, CONFIG.num_mels, 4), np.float32)
    s = metrics.spectral_stats(crops, CONFIG)
    freqs = metrics.mel_bin_frequencies(CONFIG)
    # Flat spectrum: flatness 1, centroid = mean mel-bin frequency.
    assert s["flatness"] == pytest.approx(1.0)
    assert s["centroid_hz"] == pytest.approx(freqs.mean())
    d = metrics.spectral_distance(metrics.spectral_stats(crops + 1.0, CONFIG), s)
    assert d["bin_mean_rmse"] == pytest.approx(1.0) and d["bin_std_rmse"] == pytest.approx(0.0)


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    root = tmp_path_factory.mktemp("metrics")
    mels = make_melset(root / "mels", frames=64)
    train = load_melset(mels, "train")
    model = train_classifier(
        train.mels, train.labels, train.config, ClassifierConfig(channels=8), max_steps=40, batch_size=16
    )
    save_classifier(root / "clf", model, train.config, {})
    return root, mels, train


def test_identical_sets_near_zero_and_shifted_large(trained):
    root, mels, train = trained
    same = make_sample_dir(root / "same", train.mels)
    m = metrics.run_audio_metrics(str(mels), str(same), str(root / "clf"), k=50)
    assert m["fd"] == pytest.approx(0.0, abs=1e-3)
    assert m["ndb_k"] == 0.0 and m["family_tv"] == 0.0
    assert m["floor"] is not None and m["floor"]["n"] == 24  # valid + test pooled
    assert any("K reduced" in n for n in m["notes"])
    held = m["scalars"]["partial_stability"]
    assert held["generated"] > 0.7 and held["noise"] < 0.5 and held["discriminative"], held
    depth = m["scalars"]["partial_depth"]
    # the toy notes' partials are shallow (real notes: tests/test_notecheck.py); same set, same depth
    assert depth["generated"] == pytest.approx(float(np.median([notecheck.check_note(x).partial_depth
                                                                for x in train.mels])), rel=1e-6), depth
    rng = np.random.default_rng(5)
    shifted = make_sample_dir(root / "shifted", [toy_mel(30, 1, rng, 64, shift=4.0) for _ in range(24)])
    s = metrics.run_audio_metrics(str(mels), str(shifted), str(root / "clf"), k=50)
    assert s["fd"] > 10 * max(m["floor"]["fd"], 1e-3)
    assert s["ndb_k"] >= 0.5
    assert s["pitch_entropy"] < m["pitch_entropy"]
    assert s["spectral"]["bin_mean_rmse"] > 1.0


def test_script_writes_json_and_rejects_config_mismatch(trained, tmp_path, capsys):
    root, mels, train = trained
    out = tmp_path / "m.json"
    assert run_script("audio_metrics", ["--real", mels, "--generated", root / "same", "--classifier",
                                        root / "clf", "--out", out]) == 0
    assert "floor" in capsys.readouterr().out
    m = json.loads(out.read_text())
    for key in ("fd", "is_pitch", "is_family", "pitch_entropy", "ndb_k"):
        assert isinstance(m[key], float) and isinstance(m["floor"][key], float)
    other = make_sample_dir(tmp_path / "other", train.mels[:3], MelConfig.from_preset("16k"))
    code = run_script("audio_metrics", ["--real", mels, "--generated", other, "--classifier", root / "clf",
                                        "--out", tmp_path / "x.json"])
    assert code == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and "mel config mismatch" in lines[0] and "sampling_rate" in lines[0]
    assert not (tmp_path / "x.json").exists()
    r = subprocess.run(
        [sys.executable, "scripts/audio_metrics.py", "--real", str(tmp_path / "nope"), "--generated", str(other),
         "--classifier", str(root / "clf"), "--out", str(tmp_path / "x.json")], capture_output=True, text=True,
    )
    assert r.returncode == 2 and r.stderr.startswith("error:") and "nope" in r.stderr


def test_nearest_train_check_tells_copies_from_new_notes(rng, monkeypatch):
    """Copies of training notes (with a little noise) are flagged; new notes of the same kind
    sit as far from the training set as held-out real notes do; the distance is RMS in [-1, 1]."""
    from evaluation import novelty

    def notes(n, frames=40):
        return [toy_mel(int(p), int(f), rng, frames=frames)
                for p, f in zip(rng.integers(20, 100, n), rng.integers(0, 4, n))]

    monkeypatch.setattr(novelty, "CHUNK", 64)  # several blocks: the running minimum across them
    train, held, fresh = notes(300), notes(32), notes(32)
    copies = [m + rng.normal(0, 0.01, m.shape) for m in train[:32]]
    d, which = novelty.nearest_distances(copies, train, CONFIG, 40)
    assert (which == np.arange(32)).all() and d.max() < 0.01
    exact, _ = novelty.nearest_distances([train[5]], train, CONFIG, 40)
    assert exact[0] == pytest.approx(0.0, abs=1e-6)
    copied = novelty.nearest_train_check(train, held, copies, CONFIG)
    assert copied["copies"] == 32 and copied["copy_share"] == 1.0 and copied["ratio"] < 0.1
    new = novelty.nearest_train_check(train, held, fresh, CONFIG)
    assert new["copies"] == 0 and 0.7 < new["ratio"] < 1.4
    assert new["frames"] == 40 and new["train_clips"] == 300 and new["n"] == 32
    from evaluation.findings import copy_sentence

    assert "ratio" in copy_sentence(new) and "0 of 32 generated closer" in copy_sentence(new)
    # longer generated clips are compared over the shortest clip's frames
    assert novelty.nearest_train_check(train, held, notes(4, frames=64), CONFIG)["frames"] == 40
    assert novelty.nearest_train_check(train, None, fresh, CONFIG)["copies"] is None
