"""The report: one self-contained folder (index.html + assets/ + report.md) from run dirs.

Each run dir is read by convention (what the other scripts write there): args.json
(required), progress.csv, losses.json (eval_losses.py), metrics.json (audio_metrics.py),
samples/ (mel_sample.py: sample_*.npy/.wav), interp/ (interpolate.py), variations/
(variations.py), zero_shot.json (eval_losses.py --zero_shot). The mel set comes from
args.json's data_dir (or --data_dir) for stats.json and real clips; --experiments adds the
grid table and the "what did not work" list; --copy_synthesis a copy_synthesis.py results.json.
Findings (evaluation.findings: a verdict per run, sentences, "what did not work") open the
report and go to report.json beside index.html. Every missing piece renders as "not computed".
Every name or text that comes from data or flags goes through html.escape.
"""

from __future__ import annotations

import json
import math
import os
import re
import shutil
from dataclasses import dataclass, field
from html import escape
from pathlib import Path
from typing import Any

import numpy as np

from evaluation import findings as fnd
from melcore.atomic import write_json, write_text
from melcore.errors import UserError

NOT_COMPUTED = '<p class="nc">not computed</p>'
SPLIT_ORDER = ("train", "valid", "test")
METRIC_KEYS = ("fd", "is_pitch", "is_family", "pitch_entropy", "ndb_k", "family_tv")
LOSS_KEYS = ("loss", "mse", "vb", "bpd", "prior_bpd")
SETUP_KEYS = ("num_channels", "num_res_blocks", "channel_mult", "attention_resolutions", "learn_sigma",
              "noise_schedule", "diffusion_steps", "crop_width", "batch_size", "lr", "max_steps", "ema_rate",
              "precision", "seed")


def _safe(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]", "_", name)[:80] or "x"


def _fmt(v: Any) -> str:
    if v is None:
        return "not computed"
    if isinstance(v, float):
        return "nan" if math.isnan(v) else f"{v:.4g}"
    return str(v)


def _read_json(path: Path) -> Any:
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text())
    except (json.JSONDecodeError, OSError):
        return None


def table(header: list[str], rows: list[list[Any]]) -> str:
    head = "".join(f"<th>{escape(str(h))}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{escape(_fmt(c))}</td>" for c in r) + "</tr>" for r in rows)
    return f"<table><tr>{head}</tr>{body}</table>"


def md_table(header: list[str], rows: list[list[Any]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(_fmt(c).replace("|", "/") for c in r) + " |" for r in rows]
    return "\n".join(lines) + "\n"


@dataclass
class Run:
    path: Path
    args: dict
    mel_config: dict
    label: str
    losses: dict | None = None
    metrics: dict | None = None
    zero_shot: dict | None = None
    assets: dict = field(default_factory=dict)


def load_run(path: str | os.PathLike) -> Run:
    path = Path(path)
    if path.is_file():  # a checkpoint: its run dir
        path = path.parent
    if not path.is_dir():
        raise UserError(f"{path}: run dir does not exist")
    args_path = path / "args.json"
    if not args_path.is_file():
        raise UserError(f"{path}: no args.json (not a run dir written by mel_train.py)")
    args = _read_json(args_path)
    if not isinstance(args, dict):
        raise UserError(f"{args_path}: not a JSON object")
    return Run(path, args, args.get("mel_config") or {}, path.name,
               _read_json(path / "losses.json"), _read_json(path / "metrics.json"), _read_json(path / "zero_shot.json"))


class Report:
    """Collects sections as HTML + Markdown and copies assets into `out`."""

    def __init__(self, out: Path):
        self.out = out
        self.html: list[str] = []
        self.md: list[str] = []
        (out / "assets").mkdir(parents=True, exist_ok=True)

    def copy(self, src: Path, name: str) -> str:
        """Copy `src` to assets/<name> and return the relative reference."""
        dst = self.out / "assets" / _safe(name)
        shutil.copyfile(src, dst)
        return f"assets/{dst.name}"

    def section(self, title: str, body: str, md: str | None = None) -> None:
        self.html.append(f"<section><h2>{escape(title)}</h2>{body}</section>")
        if md is not None:
            self.md.append(f"## {title}\n\n{md}\n")

    def audio(self, ref: str, caption: str) -> str:
        return (f'<figure class="clip"><figcaption>{escape(caption)}</figcaption>'
                f'<audio controls preload="none" src="{escape(ref)}"></audio></figure>')

    def img(self, ref: str, alt: str) -> str:
        return f'<img src="{escape(ref)}" alt="{escape(alt)}">'


# -- sections ------------------------------------------------------------------------------------
def setup_section(rep: Report, runs: list[Run]) -> None:
    header = ["run", "step", *SETUP_KEYS]
    rows = [[r.label, (r.losses or {}).get("step"), *(r.args.get(k) for k in SETUP_KEYS)] for r in runs]
    cfg = runs[0].mel_config
    cfg_rows = [[k, v] for k, v in sorted(cfg.items())]
    body = table(header, rows) + "<h3>Mel config</h3>" + (table(["field", "value"], cfg_rows) if cfg else NOT_COMPUTED)
    md = md_table(["run", "step", "channels", "res blocks", "learn_sigma", "schedule", "T", "width"],
                  [[r.label, (r.losses or {}).get("step"), r.args.get("num_channels"), r.args.get("num_res_blocks"),
                    r.args.get("learn_sigma"), r.args.get("noise_schedule"), r.args.get("diffusion_steps"),
                    r.args.get("crop_width")] for r in runs])
    md += f"\nMel config: preset {cfg.get('preset', '?')}, {cfg.get('sampling_rate', '?')} Hz, " \
          f"{cfg.get('num_mels', '?')} mels, hop {cfg.get('hop_size', '?')}.\n"
    rep.section("Setup", body, md)


def split_counts(data_dir: Path | None) -> dict[str, int]:
    """Clips per split of a mel set's manifest ({} without one)."""
    counts: dict[str, int] = {}
    manifest = data_dir / "manifest.jsonl" if data_dir is not None else None
    if manifest is not None and manifest.is_file():
        for line in manifest.read_text().splitlines():
            if line.strip():
                split = json.loads(line).get("split", "?")
                counts[split] = counts.get(split, 0) + 1
    return counts


def data_section(rep: Report, data_dir: Path | None) -> None:
    if data_dir is None or not data_dir.is_dir():
        rep.section("Data", NOT_COMPUTED, "not computed\n")
        return
    stats = _read_json(data_dir / "stats.json")
    counts = split_counts(data_dir)
    rows = [[s, n] for s, n in sorted(counts.items())]
    body = f"<p>mel set: <code>{escape(str(data_dir))}</code></p>" + (table(["split", "clips"], rows) if rows else NOT_COMPUTED)
    if isinstance(stats, dict):
        scalars = [[k, v] for k, v in sorted(stats.items()) if isinstance(v, int | float | str)]
        body += "<h3>stats.json</h3>" + table(["statistic", "value"], scalars)
        splits = stats.get("splits")
        if isinstance(splits, dict):
            keys = sorted({k for v in splits.values() if isinstance(v, dict) for k, x in v.items() if isinstance(x, int | float)})
            body += table(["split", *keys], [[s, *(v.get(k) for k in keys)] for s, v in sorted(splits.items())])
    else:
        body += "<h3>stats.json</h3>" + NOT_COMPUTED
    md = md_table(["split", "clips"], rows) if rows else "not computed\n"
    rep.section("Data", body, md)


def losses_section(rep: Report, runs: list[Run]) -> None:
    header = ["run", "weights", "split", *LOSS_KEYS, *(f"loss_q{i}" for i in range(4))]
    rows = []
    for r in runs:
        for w, wr in sorted(((r.losses or {}).get("weights") or {}).items(), key=lambda kv: kv[0] != "ema"):
            splits = wr.get("splits") or {}
            for split in sorted(splits, key=lambda s: (SPLIT_ORDER.index(s) if s in SPLIT_ORDER else 9, s)):
                v = splits[split] or {}
                rows.append([r.label, w, split, *(v.get(k) for k in LOSS_KEYS), *(v.get(f"loss_q{i}") for i in range(4))])
    if not rows:
        rep.section("Losses per split", NOT_COMPUTED, "not computed\n")
        return
    note = ("<p>loss = mse (+ vb when the variance is learned) at stratified timesteps; loss_q0..q3 by timestep "
            "quartile (q0 = least noise); bpd = full variational bound in bits/dim of the normalised mel at "
            "8-bit bins.</p>")
    md_rows = [row[:3] + [row[3], row[6]] for row in rows if row[1] == "ema" or len(runs) == 1]
    rep.section("Losses per split", note + table(header, rows), md_table(["run", "weights", "split", "loss", "bpd"], md_rows))


def curves_section(rep: Report, runs: list[Run]) -> None:
    from evaluation.losses import plot_curves

    parts = []
    for i, r in enumerate(runs):
        png = plot_curves(r.path, rep.out / "assets" / f"curves_{i}_{_safe(r.label)}.png")
        if png is not None:
            parts.append(f"<h3>{escape(r.label)}</h3>" + rep.img(f"assets/{png.name}", f"loss curves of {r.label}"))
    rep.section("Training curves", "".join(parts) or NOT_COMPUTED)


def _row_table(m: dict, keys: list[str], pos: dict) -> list[list[Any]]:
    rows = []
    for k in keys:
        e = m["scalars"][k]
        sd = e.get("floor_sd")
        floor = None if e.get("floor") is None else f"{_fmt(e['floor'])} ± {_fmt(sd)}"
        rows.append([fnd.NAMES.get(k, k), e.get("generated"), floor, e.get("noise"), e.get("mean_spectrum"),
                     pos.get(k, ""), "yes" if e.get("discriminative") else "no"])
    return rows


def metrics_section(rep: Report, runs: list[Run]) -> None:
    parts, md = [], []
    legacy_rows = []
    header = ["metric", "generated", "floor ± sd", "noise", "mean spectrum", "position", "discriminative"]
    for r in runs:
        m = r.metrics
        if not isinstance(m, dict):
            parts.append(f"<h3>{escape(r.label)}</h3>{NOT_COMPUTED}")
            legacy_rows.append([r.label, *(None for _ in METRIC_KEYS)])
            continue
        notes = "".join(f"<li>{escape(str(n))}</li>" for n in m.get("notes") or [])
        notes = f"<ul>{notes}</ul>" if notes else ""
        if "scalars" not in m:  # written before the reference rows existed
            floor = m.get("floor") or {}
            rows = [[k, m.get(k), floor.get(k)] for k in METRIC_KEYS]
            spec, fspec = m.get("spectral") or {}, floor.get("spectral") or {}
            rows += [[f"spectral {k}", spec.get(k), fspec.get(k)] for k in sorted(spec)]
            parts.append(f"<h3>{escape(r.label)}</h3>" + table(["metric", "generated vs real", "floor (real vs real)"], rows)
                         + notes)
            legacy_rows.append([r.label, *(f"{_fmt(m.get(k))} ({_fmt(floor.get(k))})" for k in METRIC_KEYS)])
            continue
        pos = fnd.positions(m)
        head = [k for k in m["scalars"] if m["scalars"][k].get("discriminative")]
        rest = [k for k in m["scalars"] if k not in head]
        refs = "".join(f"<li><b>{escape(k)}</b>: {escape(str(v))}</li>" for k, v in (m.get("references") or {}).items())
        parts.append(f"<h3>{escape(r.label)}</h3><p>{escape(str(m.get('n', '?')))} generated clips; every row "
                     f"against the same {escape(str(m.get('n_real', '?')))} real train clips.</p><ul>{refs}</ul>"
                     + "<h4>Headline (discriminative) metrics</h4>" + (table(header, _row_table(m, head, pos)) if head else NOT_COMPUTED)
                     + ("<h4>Not discriminative at this N (noise within the floor's spread)</h4>"
                        + table(header, _row_table(m, rest, pos)) if rest else "") + notes)
        md.append(f"**{r.label}** ({m.get('n')} clips; position 0 = floor, 1 = noise)\n\n"
                  + md_table(header, _row_table(m, head, pos)) if head else f"**{r.label}**: no discriminative metric\n")
    expl = ("<p>fd: Frechet distance of the evaluation classifier's embedding (lower is better); is_pitch / "
            "is_family: Inception-style scores of its heads; pitch_entropy in bits; ndb_k: fraction of k-means "
            "bins with a significantly different share (lower is better); note share: clips that pass the note "
            "check (stable partials, not broadband, smooth over time, an envelope on whole notes). Every row has "
            "the same number of clips: floor = held-out real clips (the best a model can score at this N, with "
            "its bootstrap standard deviation), noise and mean spectrum = the reference rows. Position = "
            "|generated - floor| / |noise - floor|. A metric is discriminative when noise lies more than "
            "3 floor standard deviations from the floor; only those are headline numbers.</p>")
    body = expl + "".join(parts)
    md_text = "\n".join(md)
    if legacy_rows:
        md_text += md_table(["run", *METRIC_KEYS], legacy_rows) + "\nValues: generated (real-vs-real floor).\n"
    rep.section("Audio metrics", body, md_text)


def _npys(folder: Path, pattern: str, limit: int) -> list[Path]:
    return sorted(folder.glob(pattern))[:limit] if folder.is_dir() else []


def samples_dir(run: Run) -> Path | None:
    d = run.path / "samples"
    if list(d.glob("sample_*.npy")):
        return d
    subs = sorted(p for p in d.glob("*") if p.is_dir() and list(p.glob("sample_*.npy"))) if d.is_dir() else []
    return subs[-1] if subs else None


# Under this partial depth (nats) a held sound shows no gaps between its partials: the full-range
# embedded set's 10th percentile, mostly notes below MIDI 44 (docs/RECIPE.md, "The pitch floor").
SHALLOW_DEPTH = 0.35


def spectrogram_section(rep: Report, runs: list[Run], real: list[tuple[str, np.ndarray]], n: int) -> None:
    from datasets.curation import partial_depth
    from datasets.nsynth_gm import LOWEST_PITCH
    from evaluation.generation import mel_grid_png

    parts = []
    for i, r in enumerate(runs):
        sd = samples_dir(r)
        gen = [np.load(p) for p in _npys(sd, "sample_*.npy", n)] if sd else []
        rows, labels = [], []
        if real:
            rows.append([m for _, m in real[:n]])
            labels.append("real")
        if gen:
            rows.append(gen)
            labels.append("generated")
        if not gen:
            parts.append(f"<h3>{escape(r.label)}</h3>{NOT_COMPUTED}")
            continue
        depths = [[partial_depth(m) for m in row] for row in rows]
        png = mel_grid_png(rows, rep.out / "assets" / f"grid_{i}_{_safe(r.label)}.png", row_labels=labels,
                           cell_labels=[[f"depth {d:.2f}" for d in row] for row in depths])
        listed = "; ".join(f"{lab} " + ", ".join(f"{d:.2f}" for d in row) for lab, row in zip(labels, depths))
        caption = (f"<p>Partial depth of each (nats, how far the held partials stand above the gaps between "
                   f"them): {escape(listed)}. Under {SHALLOW_DEPTH} a sound shows no gaps between its "
                   f"partials and looks like a wash: mostly notes below MIDI {LOWEST_PITCH}, whose partials "
                   f"are closer than the mel bins (the embedded set renders from {LOWEST_PITCH} up, so 2% of "
                   f"its training notes are that shallow; 10% with the whole range).</p>")
        how = sampling_words(r)
        parts.append(f"<h3>{escape(r.label)}</h3>" + (f"<p>{escape(how)}</p>" if how else "")
                     + rep.img(f"assets/{png.name}", f"real vs generated, {r.label}") + caption)
    rep.section("Spectrograms: real vs generated", "".join(parts) or NOT_COMPUTED)


def audio_section(rep: Report, runs: list[Run], real: list[tuple[str, np.ndarray]], real_wavs: list[Path],
                  copy_wavs: list[Path], n: int) -> None:
    parts = ["<h3>Real</h3>" + ("".join(rep.audio(rep.copy(p, f"real_{p.name}"), p.stem) for p in real_wavs) or NOT_COMPUTED)]
    # copy-synthesis WAVs are written straight into assets/
    parts.append("<h3>Copy-synthesis (real mel through the vocoder)</h3>" +
                 ("".join(rep.audio(f"assets/{p.name}", p.stem) for p in copy_wavs) or NOT_COMPUTED))
    for i, r in enumerate(runs):
        sd = samples_dir(r)
        wavs = sorted(sd.glob("sample_*.wav"))[:n] if sd else []
        clips = "".join(rep.audio(rep.copy(p, f"gen_{i}_{p.name}"), p.stem) for p in wavs)
        parts.append(f"<h3>Generated: {escape(r.label)}</h3>" + (clips or NOT_COMPUTED))
    rep.section("Audio", "".join(parts))


def interpolation_section(rep: Report, runs: list[Run]) -> None:
    parts = []
    for i, r in enumerate(runs):
        for kind in ("interp", "variations"):
            d = r.path / kind
            if not (d / "grid.png").is_file():
                continue
            ref = rep.copy(d / "grid.png", f"{kind}_{i}_grid.png")
            clips = "".join(rep.audio(rep.copy(p, f"{kind}_{i}_{p.name}"), p.stem) for p in sorted(d.glob("*.wav")))
            info = _read_json(d / "interpolation.json") or {}
            err = info.get("endpoint_mae")
            note = f"<p>endpoint reconstruction MAE (normalised): {escape(_fmt(err[0]))}, {escape(_fmt(err[1]))}</p>" \
                if isinstance(err, list) and len(err) == 2 else ""
            parts.append(f"<h3>{escape(r.label)}: {escape(kind)}</h3>" + rep.img(ref, f"{kind} of {r.label}") + note
                         + f'<div class="row">{clips}</div>')
    rep.section("Interpolation and variations", "".join(parts) or NOT_COMPUTED)


def zero_shot_section(rep: Report, runs: list[Run]) -> None:
    rows = []
    for r in runs:
        z = r.zero_shot
        if not isinstance(z, dict):
            continue
        for side in ("own", "other"):
            v = z.get(side) or {}
            m = v.get("metrics") or {}
            rows.append([r.label, side, v.get("data_dir"), v.get("loss"), v.get("mse"), v.get("bpd"), m.get("fd"), m.get("ndb_k")])
    if not rows:
        rep.section("Zero-shot (trained on one set, evaluated on another)", NOT_COMPUTED)
        return
    header = ["run", "set", "data_dir", "loss", "mse", "bpd", "fd", "ndb_k"]
    rep.section("Zero-shot (trained on one set, evaluated on another)", table(header, rows), md_table(header, rows))


def _experiment_columns(summary: dict) -> list[str]:
    rows = summary.get("rows") or []
    return list(rows[0]) if rows and isinstance(rows[0], dict) else []


def experiments_section(rep: Report, exp_dir: Path | None) -> dict | None:
    summary = _read_json(exp_dir / "experiments.json") if exp_dir else None
    if not isinstance(summary, dict):
        rep.section("Experiments", NOT_COMPUTED, "not computed\n")
        return None
    # The table's columns are the rows' own keys, in experiments.COLUMNS order (read from the
    # JSON: the report reads experiments' output, it does not import the module that runs them).
    columns = _experiment_columns(summary)
    rows = [[row.get(c) for c in columns] for row in summary.get("rows", [])]
    grid = summary.get("grid") or {}
    budget = summary.get("budget") or f"{grid.get('max_steps')} steps each"
    sentences = fnd.experiment_winner(summary)["sentences"]
    inputs = [f"{k}: {v.get('what', v) if isinstance(v, dict) else v}" for k, v in (summary.get("inputs") or {}).items()]
    # The experiments' own report (run_experiments.py writes DIR/report) from this one.
    own = exp_dir / "report" / "index.html"
    link = (f'<p>Full experiment report: <a href="{escape(os.path.relpath(own, rep.out))}">'
            f"{escape(str(own))}</a></p>" if own.is_file() and own.parent.resolve() != rep.out.resolve() else "")
    body = (f"<p>{escape(str(len(rows)))} configurations, {escape(budget)}; "
            f"base flags <code>{escape(json.dumps(grid.get('base', {}), sort_keys=True))}</code></p>" + link
            + "".join(f"<p>{escape(x)}</p>" for x in sentences)
            + ("<ul>" + "".join(f"<li>{escape(x)}</li>" for x in inputs) + "</ul>" if inputs else "")
            + table(columns, rows))
    md = "".join(f"{x}\n\n" for x in sentences) + md_table(columns[:7], [r[:7] for r in rows])
    rep.section("Experiments", body, md)
    return summary


def findings_section(rep: Report, found: dict) -> None:
    sentences = found["sentences"] or ["No run has audio metrics."]
    body = "".join(f"<p>{escape(x)}</p>" for x in sentences) + f"<p class=\"nc\">Rule: {escape(found['verdict_rule'])}.</p>"
    rep.section("Findings", body, "".join(f"{x}\n\n" for x in sentences) + f"Rule: {found['verdict_rule']}.\n")


def did_not_work_section(rep: Report, runs: list[Run], found: dict) -> None:
    notes = list(found["did_not_work"])
    for r in runs:
        m = r.metrics if isinstance(r.metrics, dict) else {}
        floor = m.get("floor") or {}
        if "scalars" not in m:  # no noise row to compare with: the old rule of thumb
            for k, worse in (("fd", "higher"), ("ndb_k", "higher")):
                if m.get(k) is not None and floor.get(k) is not None and m[k] > 2 * floor[k] + 1e-9:
                    notes.append(f"{r.label}: {k} {m[k]:.3g} is far from the real-vs-real floor {floor[k]:.3g} ({worse} is worse)")
        for w, wr in ((r.losses or {}).get("weights") or {}).items():
            splits = wr.get("splits") or {}
            tr, va = (splits.get("train") or {}).get("loss"), (splits.get("valid") or {}).get("loss")
            if isinstance(tr, float) and isinstance(va, float) and va > 1.2 * tr:
                notes.append(f"{r.label} ({w}): valid loss {va:.4g} > 1.2x train loss {tr:.4g} (train/valid gap)")
    found["did_not_work"] = notes
    caveats = found.get("caveats") or []
    extra = ("<h3>Caveats</h3><ul>" + "".join(f"<li>{escape(c)}</li>" for c in caveats) + "</ul>") if caveats else ""
    if not notes:
        rep.section("What did not work", "<p>Nothing flagged by the automatic checks (failed runs, samples at the "
                    "noise row, low note share, clipped WAVs, vocoder worse than Griffin-Lim, train/valid gap).</p>"
                    + extra, "Nothing flagged.\n")
        return
    rep.section("What did not work", "<ul>" + "".join(f"<li>{escape(n)}</li>" for n in notes) + "</ul>" + extra,
                "".join(f"- {n}\n" for n in notes))


def wav_peaks(run: Run) -> list[float] | None:
    """Peak |sample| of each generated WAV (None when the run has none)."""
    sd = samples_dir(run)
    wavs = sorted(sd.glob("sample_*.wav")) if sd else []
    if not wavs:
        return None
    import soundfile as sf

    peaks = []
    for p in wavs:
        try:
            y, _ = sf.read(p, dtype="float32", always_2d=True)
        except (RuntimeError, OSError):
            continue
        peaks.append(float(np.abs(y).max()) if y.size else 0.0)
    return peaks


def _copy_synthesis_results(path: str | os.PathLike | None, default_vocoder_ran: bool) -> dict | None:
    """--copy_synthesis's results.json; without one, and when the default vocoder made the
    run's audio, the table measured for the shipped note vocoder (its training.json), so a
    default vocoder that loses to Griffin-Lim is reported."""
    if path is None:
        if not default_vocoder_ran:
            return None
        from hifigan.inference import notes_weights

        shipped = notes_weights()
        training = _read_json(shipped / "training.json") if shipped else None
        return (training or {}).get("measured")
    p = Path(path)
    p = p / "results.json" if p.is_dir() else p
    result = _read_json(p)
    if not isinstance(result, dict):
        raise UserError(f"--copy_synthesis {path}: no readable results.json (written by copy_synthesis.py)")
    return result


# -- report.pdf ------------------------------------------------------------------------------------
def _soundfont_note(data_dir: Path | None) -> str:
    """'rendered from X (sha256 ...)' when the mel set's source is an NSynth-GM render that says so."""
    stats = _read_json(data_dir / "stats.json") if data_dir else None
    root = stats.get("source_root") if isinstance(stats, dict) else None
    meta = _read_json(Path(root) / "nsynth_gm.json") if root else None
    sf = (meta or {}).get("soundfont") if isinstance(meta, dict) else None
    if not isinstance(sf, dict):
        return ""
    return f" rendered from the SoundFont {Path(str(sf.get('path'))).name} (sha256 {str(sf.get('sha256'))[:12]}...)"


def design_paragraphs(runs: list[Run], data_dir: Path | None, griffin_lim: bool) -> list[str]:
    a, cfg = runs[0].args, runs[0].mel_config
    counts = split_counts(data_dir)
    total = sum(counts.values())
    split = ", ".join(f"{s} {counts[s]}" for s in sorted(counts, key=lambda s: SPLIT_ORDER.index(s)
                                                             if s in SPLIT_ORDER else 9))
    data = (f"Data: {total} single notes ({split}; NSynth-style, split by instrument){_soundfont_note(data_dir)}, "
            f"mel set {data_dir.name if data_dir else '?'}." if total else "Data: the mel set was not found.")
    mel = (f"Mel: preset {cfg.get('preset', '?')}, {cfg.get('sampling_rate', '?')} Hz, n_fft {cfg.get('n_fft', '?')}, "
           f"hop {cfg.get('hop_size', '?')}, {cfg.get('num_mels', '?')} mel bins {cfg.get('fmin', '?')}-"
           f"{cfg.get('fmax', '?')} Hz; log-mel mapped linearly from [{cfg.get('mel_min', '?')}, "
           f"{cfg.get('mel_max', '?')}] to [-1, 1] for the diffusion." if cfg else "Mel: no mel config recorded.")
    target = "v" if a.get("predict_v") else "x0" if a.get("predict_xstart") else "epsilon"
    model = (f"Model: improved-diffusion UNet on [{cfg.get('num_mels', '?')} x {a.get('crop_width', '?')}] crops, "
             f"{a.get('num_channels', '?')} base channels x ({a.get('channel_mult', '?')}), "
             f"{a.get('num_res_blocks', '?')} res block(s) per level, attention at {a.get('attention_resolutions') or 'none'}; "
             f"{a.get('diffusion_steps', '?')} diffusion steps, {a.get('noise_schedule', '?')} schedule, predicts "
             f"{target}, learned variance {bool(a.get('learn_sigma'))}, Min-SNR gamma {a.get('snr_gamma', 0) or 'off'}; "
             f"trained {(runs[0].losses or {}).get('step', a.get('max_steps', '?'))} steps, batch "
             f"{a.get('batch_size', '?')}, lr {a.get('lr', '?')}, EMA {a.get('ema_rate', '?')}, seed {a.get('seed', '?')}.")
    voc = _default_vocoder_words() if _default_vocoder_ran(cfg or {}, griffin_lim) else "Griffin-Lim"
    vocoder = f"Vocoder: {voc}. Full tables, all flags and every clip's audio: index.html beside this file."
    return [data, mel, model, *filter(None, (sampling_words(r) for r in runs)), vocoder]


def sampling_words(run: Run) -> str | None:
    """How a run's samples were drawn (its samples' sample_info.json), or None when unknown."""
    folder = samples_dir(run)
    info = _read_json(folder / "sample_info.json") if folder else None
    if not isinstance(info, dict) or not info.get("sampler"):
        return None
    words = f"Sampling ({run.label}): {info['sampler']}, {info.get('steps', '?')} steps"
    if info.get("guide"):
        words += (f", autoguided (Karras et al. 2024) by the step-{info.get('guide_step', '?')} checkpoint "
                  f"{Path(info['guide']).name} with weight {info.get('guidance', '?')} over the lower "
                  f"{info.get('guidance_interval', '?')} of the noise schedule")
    return words + f", seed {info.get('seed', '?')}."


def _default_vocoder_ran(mel_config: dict, griffin_lim: bool) -> bool:
    """Whether the default neural vocoder (not Griffin-Lim) vocoded mels of this config."""
    return not griffin_lim and mel_config.get("preset") == "universal"


def _default_vocoder_words() -> str:
    """What vocodes universal-preset mels by default (hifigan.inference.vocoder_for's choice)."""
    from hifigan.inference import NOTES_NAME, notes_weights

    if notes_weights() is not None:
        return (f"the note vocoder trained here ({NOTES_NAME}: a Vocos-style Fourier-head generator "
                "on the mel's pseudo-inverse envelope, spectral losses; README, Vocoder)")
    return "the pretrained HiFi-GAN UNIVERSAL_V1 (jik876/hifi-gan)"


def loss_rows(runs: list[Run]) -> tuple[list[str], list[list[str]]]:
    header = ["run", "split", "loss raw", "loss EMA", "mse EMA", "bpd EMA"]
    rows = []
    for r in runs:
        weights = (r.losses or {}).get("weights") or {}
        splits = sorted({s for w in weights.values() for s in (w.get("splits") or {})},
                        key=lambda s: (SPLIT_ORDER.index(s) if s in SPLIT_ORDER else 9, s))
        for s in splits:
            raw = ((weights.get("raw") or {}).get("splits") or {}).get(s) or {}
            ema = ((weights.get("ema") or {}).get("splits") or {}).get(s) or {}
            rows.append([r.label[:24], s, _fmt(raw.get("loss")), _fmt(ema.get("loss")), _fmt(ema.get("mse")),
                         _fmt(ema.get("bpd"))])
    return header, rows


def pdf_content(runs: list[Run], data_dir: Path | None, real: list[tuple[str, np.ndarray]], found: dict,
                exp_summary: dict | None, griffin_lim: bool, n_generated: int = 8):
    from evaluation.losses import read_progress
    from evaluation.report_pdf import PdfContent

    cfg = runs[0].mel_config
    c = PdfContent(title="mel-diffusion: " + ", ".join(r.label for r in runs),
                   design=design_paragraphs(runs, data_dir, griffin_lim), loss_header=[], loss_rows=[],
                   mel_range=(float(cfg.get("mel_min", -12.0)), float(cfg.get("mel_max", 3.0))),
                   findings=list(found["sentences"]), did_not_work=list(found["did_not_work"]),
                   caveats=list(found.get("caveats") or []))
    c.loss_header, c.loss_rows = loss_rows(runs)
    for r in runs:
        series = read_progress(r.path)
        keep = {k: v for k, v in series.items() if k in ("loss", "val_loss")}
        if keep:
            c.curves.append((r.label, keep))
    if isinstance(exp_summary, dict) and exp_summary.get("rows"):
        cols = [k for k in _experiment_columns(exp_summary) if k in ("name", "status", "step", "train_s", "valid_loss", "valid_bpd", "fd",
                                             "notes", "position", "zs_other_loss")]
        c.experiment_header = cols
        c.experiment_rows = [[_fmt(row.get(k)) for k in cols] for row in exp_summary["rows"]]
        grid = exp_summary.get("grid") or {}
        budget = exp_summary.get("budget") or f"{grid.get('max_steps', '?')} training steps each"
        zs = (exp_summary.get("inputs") or {}).get("zero_shot")
        c.experiment_note = " ".join(
            [f"{len(c.experiment_rows)} configurations, {budget}; every arm's flags and seed are in experiments.json."]
            + fnd.experiment_winner(exp_summary)["sentences"]
            + ([f"Zero-shot set: {zs['what']}."] if isinstance(zs, dict) and zs.get("what") else []))
    c.real = [m for _, m in real[:4]]
    for r in runs:
        sd = samples_dir(r)
        if sd:
            c.generated = [np.load(p) for p in _npys(sd, "sample_*.npy", n_generated)]
            c.generated_label = "generated" if len(runs) == 1 else f"gen. {r.label[:12]}"
            break
    for r in runs:
        d = r.path / "interp"
        files = sorted(d.glob("interp_*.npy")) if d.is_dir() else []
        if files:
            info = _read_json(d / "interpolation.json") or {}
            c.interp = [np.load(p) for p in files]
            alphas = info.get("alphas") or []
            c.interp_titles = ([f"a ({alphas[0]:.2f})" if alphas else "a"]
                               + [f"{x:.2f}" for x in alphas[1:-1]] + ([f"b ({alphas[-1]:.2f})"] if alphas else []))
            ends = info.get("endpoints") or {}
            c.interp_note = (f"a = {ends['a']}, b = {ends['b']}." if "a" in ends and "b" in ends else "")
            break
    return c


# -- real clips ------------------------------------------------------------------------------------
def real_examples(data_dir: Path | None, width: int, n: int, seed: int = 0) -> list[tuple[str, np.ndarray]]:
    """A few held-out (valid, else test, else train) crops of `width` frames, log-mel."""
    if data_dir is None or not (data_dir / "manifest.jsonl").is_file():
        return []
    from evaluation.mels import fixed_crops, load_melset

    for split in ("valid", "test", "train"):
        coll = load_melset(data_dir, split)
        if len(coll):
            crops = fixed_crops(coll.mels[:n], width, seed)
            return list(zip(coll.names[:n], crops))
    return []


def copy_synthesis(real: list[tuple[str, np.ndarray]], config_dict: dict, out: Path, griffin_lim: bool) -> list[Path]:
    """Vocode the real crops: what the vocoder alone does to real mels (the audio ceiling)."""
    if not real or not config_dict:
        return []
    from hifigan.inference import vocode_batches, vocoder_for, write_wavs
    from melcore.mel_config import MelConfig

    config = MelConfig.from_dict(config_dict)
    voc = vocoder_for(config, griffin_lim=griffin_lim)
    audio = vocode_batches(voc, [m for _, m in real], progress=False)
    return write_wavs(audio, [f"copy_{_safe(name)}" for name, _ in real], out, voc.sampling_rate)


def make_report(
    run_dirs: list[str | os.PathLike],
    out_dir: str | os.PathLike,
    data_dir: str | os.PathLike | None = None,
    experiments: str | os.PathLike | None = None,
    audio_root: str | os.PathLike | None = None,
    n_examples: int = 4,
    vocode_real: bool = True,
    griffin_lim: bool = False,
    copy_synthesis_results: str | os.PathLike | None = None,
) -> Path:
    if not run_dirs:
        raise UserError("give at least one run dir")
    runs = [load_run(p) for p in run_dirs]
    out = Path(out_dir)
    rep = Report(out)
    data = Path(data_dir) if data_dir else (Path(runs[0].args["data_dir"]) if runs[0].args.get("data_dir") else None)
    width = int(runs[0].args.get("crop_width", 64))
    real = real_examples(data, width, n_examples)
    real_wavs = []
    if data is not None and (data / "manifest.jsonl").is_file():
        from melcore.melset import read_manifest, resolve_source, source_roots

        by_id = {e["id"]: e for e in read_manifest(data / "manifest.jsonl")}
        roots = source_roots(data, audio_root)
        for name, _ in real:
            src = resolve_source(str(by_id.get(name, {}).get("source", "")), roots)
            if src is not None and src.suffix.lower() == ".wav":
                real_wavs.append(src)
    copy_wavs: list[Path] = []
    if vocode_real:
        copy_wavs = copy_synthesis(real, runs[0].mel_config, out / "assets", griffin_lim)
    title = "mel-diffusion report: " + ", ".join(r.label for r in runs)
    exp_summary = _read_json(Path(experiments) / "experiments.json") if experiments else None
    found = fnd.report_findings([(r.label, r.metrics, wav_peaks(r)) for r in runs],
                                _copy_synthesis_results(copy_synthesis_results,
                                                        _default_vocoder_ran(runs[0].mel_config or {}, griffin_lim)),
                                exp_summary if isinstance(exp_summary, dict) else None)
    findings_section(rep, found)
    losses_section(rep, runs)
    curves_section(rep, runs)
    metrics_section(rep, runs)
    spectrogram_section(rep, runs, real, n_examples)
    audio_section(rep, runs, real, real_wavs, copy_wavs, n_examples)
    interpolation_section(rep, runs)
    zero_shot_section(rep, runs)
    experiments_section(rep, Path(experiments) if experiments else None)
    did_not_work_section(rep, runs, found)
    setup_section(rep, runs)  # the long tables (every flag, stats.json) close the appendix
    data_section(rep, data)
    css = ("body{font-family:sans-serif;max-width:1100px;margin:auto;padding:1em}table{border-collapse:collapse;"
           "margin:.5em 0;font-size:12px}td,th{border:1px solid #ccc;padding:2px 6px}img{max-width:100%}"
           ".nc{color:#999;font-style:italic}figure.clip{display:inline-block;margin:4px}figcaption{font-size:11px}")
    html = (f'<!DOCTYPE html><html lang="en"><head><meta charset="utf-8"><title>{escape(title)}</title>'
            f"<style>{css}</style></head><body><h1>{escape(title)}</h1>"
            '<p>The two-page summary: <a href="report.pdf">report.pdf</a>. This page is the full appendix '
            "(every table, every clip).</p>" + "".join(rep.html) + "</body></html>\n")
    from evaluation.report_pdf import write_pdf

    write_pdf(pdf_content(runs, data, real, found, exp_summary, griffin_lim), out / "report.pdf")
    write_text(out / "index.html", html)
    write_text(out / "report.md", f"# {title}\n\n" + "\n".join(rep.md))
    write_json(out / "report.json", found)
    return out / "index.html"
