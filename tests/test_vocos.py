"""The Fourier-head note vocoder: its inverse STFT, its training path, and vocoder selection."""

import json
import warnings

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from hifigan.inference import (
    NOTES_NAME,
    UNIVERSAL_NAME,
    checkpoint_vocoder,
    notes_weights,
    read_hifigan_config,
    vocoder_for,
)
from hifigan.meldataset import mel_spectrogram
from hifigan.models import Generator, architecture_keys, build_generator
from hifigan.stft_loss import multi_resolution_stft_loss
from hifigan.train import parse_args, train
from hifigan.utils import scan_checkpoint
from hifigan.vocos import VocosGenerator, overlap_add_istft
from melcore.checkpoint_io import load_checkpoint
from melcore.errors import UserError
from melcore.mel_config import MelConfig

TINY_VOCOS = {
    "generator": "vocos", "vocos_dim": 32, "vocos_intermediate_dim": 64, "vocos_layers": 2,
    "vocos_mel_prior": True, "adversarial": False, "stft_loss_weight": 2.5, "batch_size": 2, "learning_rate": 0.002,
    "adam_b1": 0.8, "adam_b2": 0.99, "lr_decay": 0.999, "seed": 1234, "segment_size": 2048,
    "num_mels": 80, "n_fft": 1024, "hop_size": 256, "win_size": 1024, "sampling_rate": 16000,
    "fmin": 0, "fmax": 8000, "fmax_for_loss": None, "num_workers": 0,
}


def test_inverse_stft_inverts_the_mel_analysis_exactly():
    """Frames taken as hifigan's mel_spectrogram takes them (reflect pad (n_fft-hop)/2, no
    centring) come back as the same T * hop samples."""
    n_fft, hop = 1024, 256
    y = torch.randn(2, hop * 40, generator=torch.Generator().manual_seed(0))
    pad = (n_fft - hop) // 2
    padded = F.pad(y[:, None], (pad, pad), mode="reflect")[:, 0]
    window = torch.hann_window(n_fft)
    spec = torch.stft(padded, n_fft, hop, n_fft, window, center=False, return_complex=True)
    assert spec.shape[-1] == 40
    back = overlap_add_istft(spec, n_fft, hop, window)
    assert back.shape == y.shape
    assert torch.max(torch.abs(back - y)) < 1e-5


def test_generator_shapes_dispatch_and_arch_keys():
    g = build_generator(TINY_VOCOS)
    assert isinstance(g, VocosGenerator) and g.hop_size == 256
    x = torch.randn(3, 80, 17) - 5
    y = g(x)
    assert y.shape == (3, 1, 17 * 256) and torch.isfinite(y).all()
    g.remove_weight_norm()  # a no-op every loader may call
    assert architecture_keys(TINY_VOCOS) == ("generator", "vocos_dim", "vocos_intermediate_dim", "vocos_layers",
                                             "vocos_mel_prior", "vocos_phase", "n_fft", "num_mels")
    hifigan_cfg = json.load(open("hifigan/configs/config_v3.json"))
    assert isinstance(build_generator(hifigan_cfg), Generator)
    assert "upsample_rates" in architecture_keys(hifigan_cfg)


def test_mel_prior_starts_from_the_envelope_the_mel_implies():
    """Untrained, the prior's magnitudes already give the mel back far better than the bare
    head (measured on the note config: mel L1 0.89 vs 4.2 before any training)."""
    cfg = MelConfig.from_preset("universal")
    t = torch.arange(22050) / 22050
    y = 0.3 * sum(torch.sin(2 * np.pi * k * 262 * t) / k for k in range(1, 6))[None]
    mel = mel_spectrogram(y, **cfg.mel_kwargs())
    errors = {}
    for prior in (True, False):
        torch.manual_seed(0)
        g = build_generator({**TINY_VOCOS, "vocos_mel_prior": prior, "sampling_rate": 22050})
        with torch.no_grad():
            again = mel_spectrogram(g(mel)[:, 0], **cfg.mel_kwargs())
        errors[prior] = float(torch.mean(torch.abs(again - mel)))
    assert errors[True] < 1.2 and errors[False] > 2.5


def test_integrated_phase_turns_one_bin_into_a_steady_sinusoid_at_its_frequency():
    """Zero deviation, zero offset, one loud bin: the output is a sinusoid at that bin's centre
    frequency with a constant amplitude (coherent from frame to frame)."""
    h = {**TINY_VOCOS, "vocos_mel_prior": False, "vocos_phase": "integrated"}
    g = build_generator(h)
    bins, k = h["n_fft"] // 2 + 1, 40
    with torch.no_grad():
        g.head.weight.zero_()
        g.head.bias.zero_()
        g.head.bias[:bins] = -30.0  # every bin silent ...
        g.head.bias[k] = 0.0  # ... but bin k
    y = g(torch.zeros(1, 80, 60))[0, 0].detach().numpy()
    middle = y[2048:-2048]  # a whole number of 256-sample frames
    spectrum = np.abs(np.fft.rfft(middle * np.hanning(len(middle))))
    peak_hz = np.argmax(spectrum) * h["sampling_rate"] / len(middle)
    assert abs(peak_hz - k * h["sampling_rate"] / h["n_fft"]) < 2.0
    envelope = np.abs(middle).reshape(-1, 256).max(axis=1)
    assert envelope.min() > 0.9 * envelope.max()  # no beating between frames


def test_stft_loss_is_zero_for_identical_audio_and_grows_with_noise():
    y = torch.sin(torch.arange(8000) / 16000 * 2 * np.pi * 440)[None]
    assert float(multi_resolution_stft_loss(y, y)) < 1e-3
    small = float(multi_resolution_stft_loss(y + 0.01 * torch.randn_like(y), y))
    large = float(multi_resolution_stft_loss(y + 0.3 * torch.randn_like(y), y))
    assert 0 < small < large


def test_config_reader_wants_the_vocos_keys(tmp_path):
    bad = dict(TINY_VOCOS)
    del bad["vocos_layers"]
    path = tmp_path / "config.json"
    path.write_text(json.dumps(bad))
    with pytest.raises(UserError, match="vocos_layers"):
        read_hifigan_config(path)
    path.write_text(json.dumps(TINY_VOCOS))
    assert read_hifigan_config(path)["generator"] == "vocos"


@pytest.fixture
def tone_set(tmp_path):
    """A tiny prepared mel set whose manifest points at harmonic tones."""
    from melcore.audio import write_wav

    root, audio = tmp_path / "mels", tmp_path / "audio"
    root.mkdir()
    MelConfig.from_preset("16k").save(root / "mel_config.json")
    t = np.arange(8000) / 16000
    lines = []
    for i, f0 in enumerate((220.0, 330.0, 262.0, 392.0, 294.0)):
        y = sum(np.sin(2 * np.pi * k * f0 * t) / k for k in range(1, 6)) * np.exp(-2 * t)
        write_wav(audio / f"note{i}.wav", 0.3 * y, 16000)
        lines.append(json.dumps({"id": f"note{i}", "split": "valid" if i == 4 else "train",
                                 "source": f"note{i}.wav", "frames": 31}))
    (root / "manifest.jsonl").write_text("\n".join(lines) + "\n")
    config = tmp_path / "tiny_vocos.json"
    config.write_text(json.dumps(TINY_VOCOS))
    return root, audio, config


def _args(tone_set, run, steps):
    root, audio, config = tone_set
    return parse_args(["--mel_dir", str(root), "--audio_root", str(audio), "--config", str(config),
                       "--checkpoint_path", str(run), "--max_steps", str(steps), "--validation_interval",
                       "1000", "--stdout_interval", "1", "--valid_clips", "1", "--device", "cpu"])


def test_spectral_training_lowers_its_losses_resumes_and_vocodes(tone_set, tmp_path):
    run = tmp_path / "run"
    s = train(_args(tone_set, run, 30))
    mel = s["mel_spec_error"]
    assert len(mel) == 30 and all(np.isfinite(mel))
    assert np.mean(mel[-5:]) < 0.8 * np.mean(mel[:5])
    (_, v0), (_, v1) = s["validation"]
    assert v1 < v0
    # No discriminators: the do_ file holds only the generator's optimiser and the counters.
    do = load_checkpoint(scan_checkpoint(run, "do_"))
    assert set(do) == {"optim_g", "steps", "epoch"} and do["steps"] == 29
    s2 = train(_args(tone_set, run, 32))
    assert s2["start_step"] == 30 and s2["last_step"] == 31
    assert s2["mel_spec_error"][0] < np.mean(mel[:5])
    voc = checkpoint_vocoder(run)
    assert voc.config.preset == "16k"
    mels = np.random.default_rng(0).uniform(-8, 0, (2, 80, 12)).astype(np.float32)
    audio = voc(mels)
    assert audio.shape == (2, 12 * 256) and np.isfinite(audio).all()


def test_resuming_with_another_generator_is_refused(tone_set, tmp_path):
    run = tmp_path / "run"
    train(_args(tone_set, run, 1))
    root, audio, config = tone_set
    other = tmp_path / "wider.json"
    other.write_text(json.dumps({**TINY_VOCOS, "vocos_dim": 48}))
    with pytest.raises(UserError, match="vocos_dim"):
        train(parse_args(["--mel_dir", str(root), "--audio_root", str(audio), "--config", str(other),
                          "--checkpoint_path", str(run), "--max_steps", "2", "--device", "cpu"]))


def test_universal_fine_tuning_needs_a_hifigan_generator(tone_set, tmp_path):
    root, audio, config = tone_set
    with pytest.raises(UserError, match="HiFi-GAN generator"):
        train(parse_args(["--mel_dir", str(root), "--audio_root", str(audio), "--config", str(config),
                          "--checkpoint_path", str(tmp_path / "ft"), "--max_steps", "1", "--device", "cpu",
                          "--fine_tune_from", "universal"]))


# -- the shipped note vocoder and the choice of vocoder ---------------------------------------
def test_shipped_note_vocoder_loads_offline_with_weights_only():
    folder = notes_weights()
    assert folder is not None, "hifigan/weights/notes-vocos-v1 must ship with the repository"
    for name in ("config.json", "mel_config.json", "training.json"):
        assert (folder / name).is_file()
    weights = scan_checkpoint(folder, "g_")
    size = sum(p.stat().st_size for p in folder.iterdir())
    assert size < 30 * 2**20
    state = torch.load(weights, map_location="cpu", weights_only=True)  # no pickled code
    assert set(state) == {"generator"}
    training = json.loads((folder / "training.json").read_text())
    for key in ("command", "data", "steps", "seed", "measured"):
        assert key in training


def test_default_vocoder_for_universal_mels_is_the_note_vocoder_and_universal_stays_selectable():
    universal = MelConfig.from_preset("universal")
    voc = vocoder_for(universal)
    assert voc.name == NOTES_NAME and not voc.is_fallback and voc.sampling_rate == 22050
    # It turns a harmonic tone's mel back into that tone: the mel of its output is close.
    t = np.arange(22050) / 22050
    y = 0.3 * sum(np.sin(2 * np.pi * k * 262.0 * t) / k for k in range(1, 6)).astype(np.float32)
    kw = universal.mel_kwargs()
    mel = mel_spectrogram(torch.from_numpy(y)[None], **kw)[0].numpy()
    out = voc(mel)[0]
    again = mel_spectrogram(torch.from_numpy(out)[None], **kw)[0].numpy()
    assert out.shape == (mel.shape[1] * 256,)
    loud = mel > -6  # where the tone is; silence is compared with its own floor elsewhere
    assert np.mean(np.abs(again - mel)[loud]) < 0.5
    assert vocoder_for(universal, checkpoint="universal").name == UNIVERSAL_NAME
    assert vocoder_for(universal, checkpoint="griffin-lim").is_fallback
    assert vocoder_for(universal, griffin_lim=True).is_fallback


def test_named_vocoders_refuse_other_analyses_and_unknown_presets_fall_back():
    sixteen = MelConfig.from_preset("16k")
    with pytest.raises(UserError, match="notes"):
        vocoder_for(sixteen, checkpoint="notes")
    with pytest.raises(UserError, match="universal"):
        vocoder_for(sixteen, checkpoint="universal")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        voc = vocoder_for(sixteen)
    assert voc.is_fallback and any("Griffin-Lim" in str(w.message) for w in caught)


def test_missing_shipped_weights_fall_back_to_the_universal_vocoder(monkeypatch, tmp_path):
    import hifigan.inference as inference

    monkeypatch.setattr(inference, "WEIGHTS_DIR", tmp_path / "none")
    assert inference.notes_weights() is None
    assert vocoder_for(MelConfig.from_preset("universal")).name == UNIVERSAL_NAME
    with pytest.raises(UserError, match="missing"):
        vocoder_for(MelConfig.from_preset("universal"), checkpoint="notes")
