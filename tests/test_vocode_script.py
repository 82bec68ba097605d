import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import soundfile as sf

from hifigan.env import AttrDict
from hifigan.meldataset import audio_to_mel
from hifigan.models import Generator
from hifigan.utils import save_checkpoint
from melcore.mel_config import MelConfig

ROOT = Path(__file__).resolve().parents[1]


def run(*args):
    """The script as a user runs it (a fresh process)."""
    return subprocess.run([sys.executable, str(ROOT / "scripts" / "vocode.py"), *map(str, args)],
                          capture_output=True, text=True, cwd=ROOT)


def run_inline(capsys, *args):
    """The same script's main() in this process (fast); returns (exit code, stderr)."""
    spec = importlib.util.spec_from_file_location("vocode_script", ROOT / "scripts" / "vocode.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    capsys.readouterr()
    try:
        mod.main([str(a) for a in args])
        code = 0
    except SystemExit as exc:
        code = exc.code
    return code, capsys.readouterr().err


def tone(f0, n=8000):
    t = np.arange(n) / 16000
    return (0.4 * np.sin(2 * np.pi * f0 * t)).astype(np.float32)


def test_npy_and_npz_to_wav_at_out_rate(tmp_path):
    cfg = MelConfig.from_preset("universal")
    mels = tmp_path / "mels"
    mels.mkdir()
    cfg.save(mels / "mel_config.json")
    a, b = audio_to_mel(tone(700, 4000), cfg), audio_to_mel(tone(1200, 3000), cfg)
    np.save(mels / "a.npy", a)
    batch = np.full((2, 1, 80, a.shape[1]), -1.0, dtype=np.float32)
    batch[0, 0] = cfg.normalize(a)
    batch[1, 0, :, : b.shape[1]] = cfg.normalize(b)
    np.savez(mels / "samples.npz", batch)
    out = tmp_path / "wav"
    r = run("--input_dir", mels, "--output_dir", out, "--out_rate", 16000, "--batch_size", 2)
    assert r.returncode == 0, r.stderr
    names = sorted(p.name for p in out.glob("*.wav"))
    assert names == ["a.wav", "samples_0000.wav", "samples_0001.wav"]
    y, sr = sf.read(out / "a.wav")
    assert sr == 16000 and len(y) == round(a.shape[1] * 256 * 16000 / 22050)
    # The npz item 0 is the same mel as a.npy, so it sounds the same.
    y0, _ = sf.read(out / "samples_0000.wav")
    assert np.corrcoef(y, y0)[0, 1] > 0.99
    info = json.loads((out / "vocoder.json").read_text())
    assert info["name"] == "notes-vocos-v1" and info["is_fallback"] is False  # the default for universal mels
    assert info["out_rate"] == 16000 and info["resampled"] is True


def test_griffin_lim_is_labelled_fallback(tmp_path, capsys):
    cfg = MelConfig.from_preset("16k")
    mels = tmp_path / "mels"
    mels.mkdir()
    cfg.save(mels / "mel_config.json")
    np.save(mels / "x.npy", audio_to_mel(tone(440, 4000), cfg))
    code, err = run_inline(capsys, "--input_dir", mels, "--output_dir", tmp_path / "wav")
    assert code == 0, err
    assert "Griffin-Lim" in err and "FALLBACK" in err
    assert json.loads((tmp_path / "wav" / "vocoder.json").read_text())["is_fallback"] is True
    assert sf.info(str(tmp_path / "wav" / "x.wav")).samplerate == 16000


def test_mismatch_exits_2_with_both_configs(tmp_path):
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    h = AttrDict(resblock="2", upsample_rates=[8, 8, 4], upsample_kernel_sizes=[16, 16, 8],
                 upsample_initial_channel=8, resblock_kernel_sizes=[3], resblock_dilation_sizes=[[1, 2]],
                 num_mels=80, n_fft=1024, hop_size=256, win_size=1024, sampling_rate=16000, fmin=0, fmax=8000)
    (run_dir / "config.json").write_text(json.dumps(h))
    save_checkpoint(run_dir / "g_00000001", {"generator": Generator(h).state_dict()})
    mels = tmp_path / "mels"
    mels.mkdir()
    MelConfig.from_preset("universal").save(mels / "mel_config.json")
    np.save(mels / "x.npy", np.full((80, 4), -5.0, dtype=np.float32))
    r = run("--input_dir", mels, "--output_dir", tmp_path / "wav", "--checkpoint", run_dir)
    assert r.returncode == 2
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: mel config mismatch")
    assert "sampling_rate: 22050 vs 16000" in lines[0]
    assert not (tmp_path / "wav" / "x.wav").exists()


def test_bad_files_name_the_file(tmp_path, capsys):
    cfg = MelConfig.from_preset("universal")
    cases = {
        "ints.npy": np.zeros((80, 4), dtype=np.int16),
        "bins.npy": np.zeros((64, 4), dtype=np.float32),
        "nan.npy": np.full((80, 4), np.nan, dtype=np.float32),
        "empty.npy": np.zeros((80, 0), dtype=np.float32),
    }
    for name, arr in cases.items():
        d = tmp_path / name
        d.mkdir()
        cfg.save(d / "mel_config.json")
        np.save(d / name, arr)
        code, err = run_inline(capsys, "--input_dir", d, "--output_dir", tmp_path / "out")
        assert code == 2, name
        assert err.startswith("error:") and name in err and len(err.splitlines()) == 1
    d = tmp_path / "noconfig"
    d.mkdir()
    np.save(d / "x.npy", np.zeros((80, 4), dtype=np.float32))
    code, err = run_inline(capsys, "--input_dir", d, "--output_dir", tmp_path / "out")
    assert code == 2 and "mel_config.json" in err
