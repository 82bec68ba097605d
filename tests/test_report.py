import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
from eval_helpers import (
    SMALL,
    make_melset,
    make_sample_dir,
    make_tiny_run,
    run_script,
    toy_mel,
)

from evaluation.report import make_report
from melcore.atomic import write_json
from melcore.audio import write_wav
from melcore.errors import UserError

pytestmark = pytest.mark.usefixtures("one_torch_thread")

EVIL = "<b>&x\"'"


def _refs(html: str) -> list[str]:
    return re.findall(r'(?:src|href)="([^"]+)"', html)


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    root = tmp_path_factory.mktemp("report")
    mels = make_melset(root / "mels", {"train": 4, "valid": 3}, frames=20, config=SMALL)
    write_json(mels / "stats.json", {"mean": -5.0, "std": 2.0, "splits": {"train": {"clips": 4, "mean": -5.1}}})
    run = make_tiny_run(root / f"run {EVIL}", data_dir=str(mels), max_steps=5)
    (run / "progress.csv").write_text("step,loss,val_loss\n1,1.0,\n2,0.8,0.9\n")
    v = {"loss": 0.5, "mse": 0.4, "vb": 0.1, "bpd": 3.0, "prior_bpd": 0.0, "loss_q0": 0.9}
    write_json(run / "losses.json", {"step": 5, "weights": {"ema": {"file": "e.pt", "splits": {
        "train": v, "valid": {**v, "loss": 0.9}}}}})
    write_json(run / "metrics.json", {"fd": 10.0, "is_pitch": 1.5, "is_family": 1.2, "pitch_entropy": 1.0,
                                      "ndb_k": 0.5, "family_tv": 0.2, "n": 4, "n_real": 4, "notes": [f"note {EVIL}"],
                                      "floor": {"fd": 1.0, "is_pitch": 2.5, "is_family": 1.9, "pitch_entropy": 1.5,
                                                "ndb_k": 0.0, "family_tv": 0.0}})
    rng = np.random.default_rng(0)
    samples = make_sample_dir(run / "samples", [toy_mel(50, 0, rng, 16, num_mels=16) for _ in range(3)], SMALL)
    for i in range(3):
        write_wav(samples / f"sample_{i:05d}.wav", np.zeros(1600, np.float32), 16000)
    write_json(samples / "sample_info.json", {"sampler": "dpmpp2m_sde", "steps": 20, "seed": 0,
                                              "guide": str(run / "ema_0.995_000400.pt"), "guide_step": 400,
                                              "guidance": 2.0, "guidance_interval": 0.7})
    (run / "interp").mkdir()
    shutil.copyfile(run / "curves.png" if (run / "curves.png").exists() else _png(root), run / "interp" / "grid.png")
    write_wav(run / "interp" / "interp_00.wav", np.zeros(800, np.float32), 16000)
    bare = make_tiny_run(root / "bare", data_dir=str(mels))
    exp = root / "exp"
    write_json(exp / "experiments.json", {"grid": {"max_steps": 3, "base": {"lr": EVIL}},
                                          "rows": [{"name": EVIL, "status": "failed"}],
                                          "did_not_work": [f"{EVIL}: failed (boom)"]})
    out = root / "out"
    make_report([run, bare], out, experiments=exp, griffin_lim=True)
    return out, run


def _png(root: Path) -> Path:
    from evaluation.generation import mel_grid_png

    return mel_grid_png([[np.zeros((16, 16))]], root / "g.png")


def test_every_reference_exists_and_is_inside(report):
    out, _ = report
    html = (out / "index.html").read_text()
    refs = _refs(html)
    assert len(refs) >= 8
    for ref in refs:
        assert not ref.startswith(("/", "http")) and ".." not in ref
        assert (out / ref).is_file(), ref
    assert sum(r.endswith(".wav") for r in refs) >= 3 + 3 + 1  # copy-synthesis, generated, interpolation
    assert any("grid_0" in r for r in refs) and any("curves_0" in r for r in refs)


def test_grid_caption_gives_each_generated_samples_partial_depth(report):
    from datasets.curation import partial_depth

    out, run = report
    html = (out / "index.html").read_text()
    depths = [partial_depth(np.load(p)) for p in sorted((run / "samples").glob("sample_*.npy"))]
    assert len(depths) == 3 and len({f"{d:.2f}" for d in depths}) > 1  # the numbers differ per sample
    assert "generated " + ", ".join(f"{d:.2f}" for d in depths) in html
    assert "Under 0.35 a sound shows no gaps between its partials" in html


def test_the_spectrograms_say_how_the_samples_were_drawn(report):
    from evaluation.report import Run, sampling_words

    out, run = report
    html = (out / "index.html").read_text()
    assert ("dpmpp2m_sde, 20 steps, autoguided (Karras et al. 2024) by the step-400 checkpoint "
            "ema_0.995_000400.pt with weight 2.0 over the lower 0.7 of the noise schedule, seed 0.") in html
    bare = Run(run.parent / "bare", {}, {}, "bare", None, None, None)
    assert sampling_words(bare) is None  # no samples, no sentence


def test_escaping_and_not_computed(report):
    out, _ = report
    html = (out / "index.html").read_text()
    assert EVIL not in html and "<b>&x" not in html
    assert "&lt;b&gt;&amp;x&quot;&#x27;" in html
    assert "not computed" in html  # the bare run has no metrics/losses/samples
    # the metric table holds generated and floor values
    assert "<td>fd</td><td>10</td><td>1</td>" in html
    md = (out / "report.md").read_text()
    assert "## What did not work" in md and "failed (boom)" in md and "fd 10 is far from" in md
    assert len(md.splitlines()) < 120  # "at most two pages"


def test_bad_inputs(tmp_path, capsys):
    with pytest.raises(UserError, match="does not exist"):
        make_report([tmp_path / "nope"], tmp_path / "o")
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "model000001.pt").write_bytes(b"")
    assert run_script("make_report", [tmp_path / "run" / "model000001.pt", "--out", tmp_path / "o"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "no args.json" in err[0]


CHROMIUM = Path("/usr/bin/chromium")


@pytest.mark.skipif(not CHROMIUM.exists(), reason="needs /usr/bin/chromium")
def test_page_loads_in_headless_chromium(report, tmp_path):
    out, _ = report
    r = subprocess.run([str(CHROMIUM), "--headless", "--no-sandbox", "--disable-gpu", "--enable-logging=stderr",
                        "--v=0", "--dump-dom", (out / "index.html").as_uri()],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0
    assert "What did not work" in r.stdout
    bad = [line for line in r.stderr.splitlines() if "CONSOLE" in line and ("Error" in line or "Uncaught" in line)]
    assert not bad, bad
    assert "ERR_FILE_NOT_FOUND" not in r.stderr


def test_findings_verdict_and_report_json(tmp_path):
    import json

    from evaluation.metrics import SCALARS

    mels = make_melset(tmp_path / "mels", {"train": 4, "valid": 3}, frames=20, config=SMALL)
    run = make_tiny_run(tmp_path / "run", data_dir=str(mels))
    rows = {"generated": 9.0, "floor": 1.0, "noise": 10.0, "mean_spectrum": 6.0}
    scalars = {k: {**rows, "floor_sd": 0.2, "discriminative": k != "flatness"} for k in SCALARS}
    scalars["note_share"].update(generated=0.0, floor=63 / 64, noise=0.0, floor_sd=0.02)  # position 1
    note_check = {"n": 64, "notes": 0, "note_share": 0.0, "reasons": {"jittery": 64}}
    write_json(run / "metrics.json", {
        "n": 64, "n_real": 64, "fd": 9.0, "note_share": 0.0, "note_check": note_check, "scalars": scalars,
        "headline": [k for k in SCALARS if k != "flatness"], "notes": [],
        "references": {"noise": "uniform", "mean_spectrum": "mean"},
        "floor": {"n": 64, "note_check": {"n": 64, "notes": 63}}, "noise": {"note_check": {"n": 64, "notes": 0}},
        "mean_spectrum": {"note_check": {"n": 64, "notes": 0}}})
    rng = np.random.default_rng(0)
    samples = make_sample_dir(run / "samples", [toy_mel(50, 0, rng, 16, num_mels=16)], SMALL)
    write_wav(samples / "sample_00000.wav", np.ones(1600, np.float32), 16000)
    write_json(tmp_path / "cs.json", {"notes": 2, "summary": {"universal": {"mel_l1": 2.0},
                                                               "griffin-lim": {"mel_l1": 1.0}}})
    out = tmp_path / "out"
    make_report([run], out, vocode_real=False, copy_synthesis_results=tmp_path / "cs.json")
    found = json.loads((out / "report.json").read_text())
    assert found["verdicts"] == {"run": "near noise"}
    assert found["runs"][0]["median_position"] == pytest.approx(8 / 9)
    assert found["runs"][0]["positions"]["note_share"] == pytest.approx(1.0)
    md = (out / "report.md").read_text()
    assert "run: The samples are near noise" in md and "0 of 64 samples pass the note check (real: 63/64" in md
    dnw = md.split("## What did not work")[1]
    for text in ("sit at the noise row", "only 0 of 64 samples pass", "1 of 1 generated WAVs clip",
                 "universal is worse than Griffin-Lim"):
        assert text in dnw
    html = (out / "index.html").read_text()
    assert "Not discriminative at this N" in html and "spectral flatness" in html


def _pdf_pages(path: Path) -> list[str]:
    pypdf = pytest.importorskip("pypdf")
    return [p.extract_text() for p in pypdf.PdfReader(str(path)).pages]


def test_pdf_two_pages_before_references(report):
    out, _ = report
    html = (out / "index.html").read_text()
    assert 'href="report.pdf"' in html
    pages = _pdf_pages(out / "report.pdf")
    ref_page = next(i for i, t in enumerate(pages) if t.lstrip().startswith("References"))
    assert 1 <= ref_page <= 2 and ref_page == len(pages) - 1
    body = " ".join(" ".join(pages[:ref_page]).split())
    assert "Losses per split" in body and "What did not work" in body and "failed (boom)" in body
    assert "Heusel" in pages[-1] and "Nichol" in pages[-1]
    # the long tables moved to the end of the appendix
    assert html.index("What did not work") < html.index("<h2>Setup</h2>") < html.index("stats.json")


def test_pdf_says_the_verdict(tmp_path):
    from evaluation.report_pdf import PdfContent, write_pdf

    verdict = "run: The samples are near noise: on the 9 discriminative metrics their median position is 0.89."
    c = PdfContent("t", ["design " * 30], ["run", "split", "loss"], [["r", "train", "0.5"]], findings=[verdict])
    pages = _pdf_pages(write_pdf(c, tmp_path / "r.pdf"))
    assert verdict in " ".join(" ".join(pages).split()) and pages[-1].lstrip().startswith("References")


def _overlap(a, b) -> bool:
    return a[0] < b[2] and b[0] < a[2] and a[1] < b[3] and b[1] < a[3]


def test_pdf_layout_fits_and_cuts_at_two_pages():
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    from evaluation import report_pdf as rp

    rng = np.random.default_rng(0)
    mel = [rng.uniform(-12, 3, (16, 32)) for _ in range(8)]
    long = "A finding with a_very_long_path/" + "x" * 200 + " and many words " * 40
    c = rp.PdfContent("title " * 5, [long] * 4, ["run", "split", "loss"], [["r" * 90, "train", "0.5"]] * 6,
                      curves=[("r", {"loss": (np.arange(1, 5), np.array([1.0, 0.8, 0.7, 0.6]))})],
                      real=mel[:4], generated=mel, interp=mel[:7], interp_titles=[str(i) for i in range(7)],
                      findings=[long] * 3, did_not_work=[long] * 40)
    flow = rp.layout(c)
    assert len(flow.pages) == rp.MAX_BODY_PAGES + 1  # cut, then the references page
    body_text = [t.get_text() for f in flow.pages[:-1] for t in f.texts]
    assert "(the rest is in index.html)" in body_text
    for fig, boxes in zip(flow.pages, flow.boxes):
        for i, b in enumerate(boxes):
            assert rp.MARGIN - 1e-6 <= b[0] and b[2] <= rp.PAGE_W - rp.MARGIN + 1e-6
            assert rp.MARGIN - 1e-6 <= b[1] and b[3] <= rp.PAGE_H - rp.MARGIN + 1e-6
            assert not any(_overlap(b, o) for o in boxes[:i]), (b, boxes)
        renderer = FigureCanvasAgg(fig).get_renderer()
        page = fig.bbox
        extents = [t.get_window_extent(renderer) for t in fig.texts if t.get_text()]
        for e in extents:  # what the renderer draws stays on the page, inside the margins
            assert e.x0 >= page.x0 + 0.5 * rp.MARGIN * fig.dpi and e.x1 <= page.x1 - 0.5 * rp.MARGIN * fig.dpi
        for i, e in enumerate(extents):
            assert not any(e.overlaps(o) and e.intersection(e, o).height > 1 for o in extents[:i])
