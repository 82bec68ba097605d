import pytest

from melcore.errors import UserError
from melcore.mel_config import MelConfig, require_match


def test_universal_preset_is_the_pretrained_vocoders_analysis():
    cfg = MelConfig.from_preset("universal")
    assert (cfg.sampling_rate, cfg.n_fft, cfg.hop_size, cfg.win_size) == (22050, 1024, 256, 1024)
    assert (cfg.num_mels, cfg.fmin, cfg.fmax, cfg.mel_min, cfg.mel_max) == (80, 0, 8000, -12, 3)
    assert MelConfig() == cfg


def test_16k_preset_differs_only_in_rate():
    a, b = MelConfig.from_preset("universal"), MelConfig.from_preset("16k")
    assert a.differences(b) == {"sampling_rate": (22050, 16000)}


def test_json_round_trip(tmp_path):
    cfg = MelConfig(sampling_rate=16000, fmax=None, peak_normalize=None, preset="16k")
    assert MelConfig.from_json(cfg.to_json()) == cfg
    cfg.save(tmp_path / "mel_config.json")
    assert MelConfig.load(tmp_path) == cfg


def test_normalize_maps_range_to_unit_interval():
    cfg = MelConfig()
    assert cfg.normalize(-12.0) == -1.0 and cfg.normalize(3.0) == 1.0
    assert cfg.denormalize(cfg.normalize(-4.2)) == pytest.approx(-4.2)


@pytest.mark.parametrize(
    "text, message",
    [
        ("[1]", "JSON object"),
        ("{bad", "not valid JSON"),
        ('{"sampling_rate": 16000}', "lacks"),
        ('{"sampling_rate": 1, "n_fft": 1, "num_mels": 1, "hop_size": 1, "win_size": 1, "fmin": 0, "fmax": 1, "colour": 2}', "unknown"),
        ('{"sampling_rate": 16000, "n_fft": 512, "num_mels": 80, "hop_size": 256, "win_size": 1024, "fmin": 0, "fmax": 8000}', "win_size"),
        ('{"sampling_rate": 16000, "n_fft": 1024, "num_mels": 80, "hop_size": 256, "win_size": 1024, "fmin": 0, "fmax": 11025}', "Nyquist"),
    ],
)
def test_bad_json_is_a_user_error(text, message):
    with pytest.raises(UserError, match=message):
        MelConfig.from_json(text, "x.json")


def test_missing_file_names_it(tmp_path):
    with pytest.raises(UserError, match="missing mel_config.json"):
        MelConfig.load(tmp_path)


def test_unknown_preset():
    with pytest.raises(UserError, match="unknown mel preset"):
        MelConfig.from_preset("48k")


def test_require_match_shows_both_values():
    with pytest.raises(UserError, match=r"sampling_rate: 22050 vs 16000"):
        require_match(MelConfig(), MelConfig.from_preset("16k"), "model", "data")
    require_match(MelConfig(), MelConfig(preset="renamed"), "a", "b")
