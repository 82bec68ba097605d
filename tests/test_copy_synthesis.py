import json

import numpy as np

from evaluation.copy_synthesis import (
    between_harmonics_db,
    evaluate,
    listening_page,
    make_synthetic_notes,
    mrstft,
)


def test_metrics_on_known_signals(rng):
    t = np.arange(16000) / 16000
    tone = sum(np.sin(2 * np.pi * 200 * k * t) / k for k in range(1, 6)).astype(np.float32)
    assert mrstft(tone, tone) == {"spectral_convergence": 0.0, "log_mag_l1": 0.0}
    noise = rng.standard_normal(16000).astype(np.float32)
    assert mrstft(noise, tone)["spectral_convergence"] > 1.0
    clean = between_harmonics_db(tone, 16000, 200.0)
    noisy = between_harmonics_db(tone + 0.01 * noise, 16000, 200.0)
    assert clean < -80 and -60 < noisy < -20


def test_griffin_lim_copy_synthesis_writes_results(tmp_path):
    mels = make_synthetic_notes(tmp_path / "notes", num=2, preset="16k", seconds=1.0)
    result = evaluate(mels, tmp_path / "out", num=2)
    assert result["notes"] == 2 and list(result["summary"]) == ["griffin-lim"]
    gl = result["summary"]["griffin-lim"]
    # Griffin-Lim from a 16k mel keeps the spectrum roughly (measured ~0.1-0.4) but not exactly.
    assert 0.01 < gl["spectral_convergence"] < 0.8 and 0 < gl["mel_l1"] < 4
    saved = json.loads((tmp_path / "out" / "results.json").read_text())
    assert saved["summary"]["griffin-lim"]["mel_l1"] == gl["mel_l1"]
    assert "| griffin-lim |" in (tmp_path / "out" / "results.md").read_text()
    ids = [r["id"] for r in result["per_note"]]
    for i in ids:
        assert (tmp_path / "out" / "original" / f"{i}.wav").is_file()
        assert (tmp_path / "out" / "griffin-lim" / f"{i}.wav").is_file()
    page = (tmp_path / "out" / "index.html").read_text()
    assert f"griffin-lim/{ids[0]}.wav" in page


def test_listening_page_escapes_names():
    page = listening_page([{"id": "a<b>&c"}], ["universal"])
    assert "a&lt;b&gt;&amp;c" in page and "a<b>" not in page
