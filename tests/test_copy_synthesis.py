import json

import numpy as np
import pytest

from evaluation.copy_synthesis import (
    between_harmonics_db,
    build_vocoders,
    cents,
    estimate_f0,
    evaluate,
    goals,
    listening_page,
    make_synthetic_notes,
    markdown_table,
    midi_to_hz,
    mrstft,
    pick,
    pitch_error_cents,
    summarize,
)
from melcore.errors import UserError
from melcore.mel_config import MelConfig

SR = 16000
T = np.arange(4 * SR) / SR  # a 4 s note, as NSynth's


def test_metrics_on_known_signals(rng):
    t = np.arange(16000) / 16000
    tone = sum(np.sin(2 * np.pi * 200 * k * t) / k for k in range(1, 6)).astype(np.float32)
    assert mrstft(tone, tone) == {"spectral_convergence": 0.0, "log_mag_l1": 0.0}
    noise = rng.standard_normal(16000).astype(np.float32)
    assert mrstft(noise, tone)["spectral_convergence"] > 1.0
    clean = between_harmonics_db(tone, 16000, 200.0)
    noisy = between_harmonics_db(tone + 0.01 * noise, 16000, 200.0)
    assert clean < -80 and -60 < noisy < -20


@pytest.mark.parametrize(
    "true_hz, nominal_midi, weak_fundamental",
    [
        (41.2, 28, False),  # MIDI 28 is 41.20 Hz: a low note, 1.6 s of sustain
        (440.0 * 2 ** (7 / 1200), 69, False),  # 7 cents sharp
        (110.0 * 2 ** (-3 / 1200), 45, True),
        (midi_to_hz(28) * 2 ** (4 / 1200), 28, True),  # a bass: low and with a weak fundamental
        (midi_to_hz(96), 96, False),  # C7
    ],
)
def test_estimate_f0_on_tones_of_known_frequency(rng, true_hz, nominal_midi, weak_fundamental):
    if weak_fundamental:  # harmonics 2-8, the fundamental 50 dB below the second
        y = 0.003 * np.sin(2 * np.pi * true_hz * T) + sum(
            np.sin(2 * np.pi * k * true_hz * T + k) / k for k in range(2, 9) if k * true_hz < 7000)
    else:
        y = np.sin(2 * np.pi * true_hz * T)
    y = y + 1e-3 * rng.standard_normal(T.size)  # -60 dB noise floor
    est = estimate_f0(y, SR, midi_to_hz(nominal_midi))
    assert abs(cents(est, true_hz)) < 0.5
    expected = abs(cents(true_hz, midi_to_hz(nominal_midi)))
    assert pitch_error_cents(y, SR, nominal_midi) == pytest.approx(expected, abs=0.5)


def test_estimate_f0_is_nan_without_a_tone(rng):
    assert np.isnan(estimate_f0(rng.standard_normal(T.size), SR, 440.0))
    assert np.isnan(estimate_f0(rng.standard_normal(T.size), SR, midi_to_hz(28)))
    assert np.isnan(estimate_f0(np.zeros(T.size), SR, 440.0))
    # 70 cents off is outside the +-50-cent search: no pitch near the nominal one
    assert np.isnan(estimate_f0(np.sin(2 * np.pi * 440 * 2 ** (70 / 1200) * T), SR, 440.0))
    # NaN is left out of the means and the median, but the note counts against the share within 10 cents.
    s = summarize([{"pitch_error_cents": 2.0}, {"pitch_error_cents": None}, {"pitch_error_cents": 30.0}], pitched=3)
    assert s["pitch_error_cents_median"] == 16.0 and s["pitch_measured"] == 2
    assert s["pitch_within_10_cents"] == pytest.approx(1 / 3)


def test_pick_spreads_over_the_set():
    assert pick(3, 10) == [0, 1, 2]
    assert pick(100, 3) == [0, 50, 99]


def test_two_sets_side_by_side(tmp_path):
    mels = make_synthetic_notes(tmp_path / "notes", num=2, preset="16k", seconds=1.0)
    other = make_synthetic_notes(tmp_path / "other", num=3, preset="16k", seconds=1.0, seed=1,
                                 splits=("train", "valid", "test"))
    result = evaluate(mels, tmp_path / "out", num=3, other_mel_dir=other)
    assert list(result["sets"]) == ["test", "other"]
    test, oth = result["sets"]["test"], result["sets"]["other"]
    assert test["notes"] == 2 and oth["notes"] == 3 and oth["splits"] == ["test", "train", "valid"]
    # evaluation.findings reads the first set's table at the top
    assert result["notes"] == 2 and list(result["summary"]) == ["griffin-lim"]
    orig, gl = test["original"], test["summary"]["griffin-lim"]
    assert orig["mrstft"] == 0 and orig["mel_l1"] < 0.05  # re-analysis reproduces the stored mel
    assert orig["pitch_error_cents_median"] < 1 and orig["pitch_within_10_cents"] == 1.0
    # Griffin-Lim from a 16k mel keeps the spectrum roughly (measured ~0.1-0.4) but not exactly.
    assert 0.01 < gl["spectral_convergence"] < 0.8 and 0 < gl["mel_l1"] < 4
    assert gl["mrstft"] == pytest.approx(gl["spectral_convergence"] + gl["log_mag_l1"])
    # From mel bands ~40 Hz wide Griffin-Lim gets the pitch only roughly (measured 3-40 cents off).
    assert 0 <= gl["pitch_error_cents_median"] < 100 and 0 <= gl["pitch_within_10_cents"] <= 1
    assert gl["x_real_time"] > 0
    saved = json.loads((tmp_path / "out" / "results.json").read_text())
    assert saved["sets"]["other"]["summary"]["griffin-lim"]["mel_l1"] == oth["summary"]["griffin-lim"]["mel_l1"]
    assert saved["speed"]["torch_threads"] >= 1
    md = (tmp_path / "out" / "results.md").read_text()
    assert md.count("| griffin-lim |") == 2 and md.count("| original |") == 2 and "MR-STFT" in md
    assert "not measured: mel L1 at least 30% below Griffin-Lim" in md  # no new vocoder here
    page = (tmp_path / "out" / "index.html").read_text()
    for key, sec in result["sets"].items():
        for r in sec["per_note"]:
            assert (tmp_path / "out" / key / "original" / f"{r['id']}.wav").is_file()
            assert (tmp_path / "out" / key / "griffin-lim" / f"{r['id']}.wav").is_file()
            assert f"{key}/griffin-lim/{r['id']}.wav" in page


def _section(new: dict, gl: dict, uni: dict) -> dict:
    base = {"audio_seconds": 4.0, "vocode_seconds": 0.1}
    return {"original": {"pitch_error_cents_median": 1.0},
            "summary": {"checkpoint0": {**base, **new}, "universal": {**base, **uni}, "griffin-lim": {**base, **gl}}}


def test_goals_state_met_and_not_met_with_numbers():
    good = {"mel_l1": 0.3, "mrstft": 1.0, "between_harmonics_db": -50.0,
            "pitch_error_cents_median": 3.0, "pitch_within_10_cents": 0.9}
    gl = {"mel_l1": 0.5, "mrstft": 2.0}
    uni = {"between_harmonics_db": -40.0}
    result = {"sets": {"test": _section(good, gl, uni),
                       "other": _section({**good, "mel_l1": 0.4, "pitch_error_cents_median": 12.0}, gl, uni)},
              "speed": {"device": "cpu", "torch_threads": 2, "load_average": [1.0, 1.0, 1.0]}}
    g = {x["goal"].split(" ")[0]: x for x in goals(result)}
    assert [x["status"] for x in goals(result)] == ["not met", "met", "met", "not met", "met"]
    assert g["mel"]["vocoder"] == "checkpoint0" and "test: 0.300 vs 0.500 (+40%)" in g["mel"]["detail"]
    assert "other: 0.400 vs 0.500 (+20%)" in g["mel"]["detail"]
    assert "40.0x on cpu with 2 torch thread(s)" in goals(result)[-1]["detail"]
    del result["sets"]["other"]  # one set measured: the both-sets goals cannot be met
    assert goals(result)[1]["status"] == "not measured"
    assert "Goals (issue #13)" in markdown_table({**result, "sets": {}, "goals": goals(result)})


def test_vocoders_flag_refuses_what_does_not_apply():
    config = MelConfig.from_preset("16k")
    assert [n for n, _ in build_vocoders(config, ["griffin-lim"])] == ["griffin-lim"]
    with pytest.raises(UserError, match="universal preset"):
        build_vocoders(config, ["universal"])
    with pytest.raises(UserError, match="unknown"):
        build_vocoders(config, ["wavenet"])
    with pytest.raises(UserError, match="nothing to measure"):
        build_vocoders(config, [])


def test_listening_page_escapes_names():
    page = listening_page({"test": {"title": "t", "per_note": [{"id": "a<b>&c"}]}}, ["universal"])
    assert "a&lt;b&gt;&amp;c" in page and "a<b>" not in page
