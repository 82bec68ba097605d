"""report.pdf: the two-page summary of a report (plus a references page), with matplotlib only.

Content comes in as plain data (PdfContent; evaluation.report gathers it); this module only lays
it out on A4 pages with PdfPages: text is wrapped to the measured width of its column
(matplotlib's TextPath, the same font metrics the PDF uses), every block takes the height it
needs from a running cursor, and a block that does not fit starts the next page. At most
`MAX_BODY_PAGES` pages come before the references; what does not fit is cut with a line that
points to index.html. `layout` returns the figures and the placed boxes (for tests).
"""

from __future__ import annotations

import functools
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

PAGE_W, PAGE_H = 8.27, 11.69  # A4, inches
MARGIN = 0.6
TEXT_W = PAGE_W - 2 * MARGIN
BODY_PT = 8.5
MONO_PT = 7.0
LEADING = 1.3
MAX_BODY_PAGES = 2
FONT = "DejaVu Sans"
MONO = "DejaVu Sans Mono"
REFERENCES = (
    "Nichol, A. and Dhariwal, P. (2021). Improved denoising diffusion probabilistic models. ICML "
    "(code: github.com/openai/improved-diffusion, the base of this project).",
    "Ho, J., Jain, A. and Abbeel, P. (2020). Denoising diffusion probabilistic models. NeurIPS.",
    "Song, J., Meng, C. and Ermon, S. (2021). Denoising diffusion implicit models. ICLR.",
    "Lu, C., Zhou, Y., Bao, F., Chen, J., Li, C. and Zhu, J. (2022). DPM-Solver++: fast solver for "
    "guided sampling of diffusion probabilistic models. arXiv:2211.01095.",
    "Salimans, T. and Ho, J. (2022). Progressive distillation for fast sampling of diffusion models "
    "(v-prediction). ICLR.",
    "Hang, T., Gu, S., Li, C., Bao, J., Chen, D., Hu, H., Geng, X. and Guo, B. (2023). Efficient "
    "diffusion training via Min-SNR weighting strategy. ICCV.",
    "Kong, J., Kim, J. and Bae, J. (2020). HiFi-GAN: generative adversarial networks for efficient "
    "and high fidelity speech synthesis. NeurIPS (code and UNIVERSAL_V1 weights: github.com/jik876/hifi-gan).",
    "Siuzdak, H. (2024). Vocos: closing the gap between time-domain and Fourier-based neural vocoders "
    "for high-quality audio synthesis. ICLR (the note vocoder's architecture).",
    "Yamamoto, R., Song, E. and Kim, J.-M. (2020). Parallel WaveGAN (multi-resolution STFT loss). ICASSP.",
    "Griffin, D. and Lim, J. (1984). Signal estimation from modified short-time Fourier transform. "
    "IEEE Trans. ASSP 32(2).",
    "Engel, J., Resnick, C., Roberts, A., Dieleman, S., Eck, D., Simonyan, K. and Norouzi, M. (2017). "
    "Neural audio synthesis of musical notes with WaveNet autoencoders (the NSynth data set). ICML.",
    "TimGM6mb.sf2, the General MIDI SoundFont by Tim Brechbill shipped inside the pretty_midi package "
    "(Raffel, C. and Ellis, D. (2014). Intuitive analysis, creation and manipulation of MIDI data with "
    "pretty_midi. ISMIR LBD), rendered with TinySoundFont.",
    "Heusel, M., Ramsauer, H., Unterthiner, T., Nessler, B. and Hochreiter, S. (2017). GANs trained by "
    "a two time-scale update rule converge to a local Nash equilibrium (Frechet distance). NeurIPS.",
    "Richardson, E. and Weiss, Y. (2018). On GANs and GMMs (number of statistically different bins, "
    "NDB). NeurIPS.",
    "Salimans, T., Goodfellow, I., Zaremba, W., Cheung, V., Radford, A. and Chen, X. (2016). Improved "
    "techniques for training GANs (Inception Score). NeurIPS.",
)


@dataclass
class PdfContent:
    title: str
    design: list[str]
    loss_header: list[str]
    loss_rows: list[list[str]]
    curves: list[tuple[str, dict[str, tuple[np.ndarray, np.ndarray]]]] = field(default_factory=list)
    experiment_header: list[str] = field(default_factory=list)
    experiment_rows: list[list[str]] = field(default_factory=list)
    experiment_note: str = "No experiments were run for this report."
    real: list[np.ndarray] = field(default_factory=list)
    generated: list[np.ndarray] = field(default_factory=list)
    generated_label: str = ""
    mel_range: tuple[float, float] = (-12.0, 3.0)
    interp: list[np.ndarray] = field(default_factory=list)
    interp_titles: list[str] = field(default_factory=list)
    interp_note: str = ""
    findings: list[str] = field(default_factory=list)
    did_not_work: list[str] = field(default_factory=list)
    caveats: list[str] = field(default_factory=list)


@functools.lru_cache(maxsize=4096)
def _advance_em(char: str, family: str) -> float:
    """A glyph's advance width in em (the font file's metrics, as the PDF backend uses them)."""
    from matplotlib.font_manager import FontProperties, findfont

    font = _font(findfont(FontProperties(family=family)))
    glyph = font.load_char(ord(char))
    return glyph.linearHoriAdvance / 65536 / 64 if glyph else 0.6


@functools.lru_cache(maxsize=4)
def _font(path: str):
    from matplotlib.ft2font import FT2Font

    font = FT2Font(path)
    font.set_size(64, 72)  # 64 pt at 72 dpi: one em = 64 px
    return font


def text_width_in(text: str, size: float, family: str = FONT) -> float:
    """Width of `text` set at `size` pt, in inches (sum of advances, 3% kept for kerning)."""
    return 1.03 * size * sum(_advance_em(ch, family) for ch in text) / 72.0


def wrap(text: str, width_in: float, size: float, family: str = FONT) -> list[str]:
    """Greedy word wrap to a measured width; a word longer than the line is broken by characters."""
    lines: list[str] = []
    for para in text.split("\n"):
        line = ""
        for word in para.split():
            cand = f"{line} {word}" if line else word
            if text_width_in(cand, size, family) <= width_in:
                line = cand
                continue
            if line:
                lines.append(line)
            while (
                text_width_in(word, size, family) > width_in
            ):  # a path or URL wider than the column
                cut = len(word) - 1
                while cut > 1 and text_width_in(word[:cut], size, family) > width_in:
                    cut -= 1
                lines.append(word[:cut])
                word = word[cut:]
            line = word
        lines.append(line)
    return lines


class Flow:
    """A cursor down A4 pages; blocks are placed top to bottom and never overlap."""

    def __init__(self, max_pages: int | None, reserve: float = 0.0):
        self.max_pages = max_pages
        self.reserve = (
            reserve  # inches kept free at the foot of the last page (for a "continued" line)
        )
        self.pages: list = []
        self.boxes: list[
            list[tuple[float, float, float, float]]
        ] = []  # per page: (x0, y0, x1, y1) inches
        self.full = False
        self._new_page()

    def _new_page(self) -> None:
        from matplotlib.figure import Figure

        self.pages.append(Figure(figsize=(PAGE_W, PAGE_H)))
        self.boxes.append([])
        self.y = MARGIN  # inches from the top

    @property
    def fig(self):
        return self.pages[-1]

    def room(self, height: float) -> bool:
        """Make room for a block of `height` inches (a new page if allowed); False when full."""
        if self.full:
            return False
        last = self.max_pages is not None and len(self.pages) >= self.max_pages
        if self.y + height <= PAGE_H - MARGIN - (self.reserve if last else 0.0):
            return True
        if last:
            self.full = True
            return False
        self._new_page()
        return self.room(height)

    def _box(self, x0: float, height: float, width: float) -> None:
        self.boxes[-1].append((x0, PAGE_H - self.y - height, x0 + width, PAGE_H - self.y))
        self.y += height

    def lines(
        self,
        lines: list[str],
        size: float = BODY_PT,
        family: str = FONT,
        weight: str = "normal",
        indent: float = 0.0,
        gap: float = 0.04,
    ) -> bool:
        step = size * LEADING / 72.0
        height = step * len(lines)
        if not self.room(height + gap):
            return False
        top = PAGE_H - self.y
        for i, line in enumerate(lines):
            self.fig.text(
                (MARGIN + indent) / PAGE_W,
                (top - i * step) / PAGE_H,
                line,
                fontsize=size,
                family=family,
                weight=weight,
                va="top",
                ha="left",
            )
        width = max((text_width_in(s, size, family) for s in lines), default=0.0)
        self._box(MARGIN + indent, height, width)
        self.y += gap
        return True

    def para(
        self, text: str, size: float = BODY_PT, indent: float = 0.0, bullet: bool = False
    ) -> bool:
        if bullet:
            body = wrap(text, TEXT_W - indent - 0.15, size)
            return self.lines(
                ["\u2022 " + body[0]] + ["   " + s for s in body[1:]], size, indent=indent
            )
        return self.lines(wrap(text, TEXT_W - indent, size), size, indent=indent)

    def heading(self, text: str) -> bool:
        # a heading keeps two body lines with it
        if not self.room(11 * LEADING / 72.0 + 0.08 + 2 * BODY_PT * LEADING / 72.0):
            return False
        self.y += 0.04
        return self.lines([text], 11, weight="bold", gap=0.04)

    def table(self, header: list[str], rows: list[list[str]], size: float = MONO_PT) -> bool:
        """A monospace table, columns as wide as their longest cell (cut to fit the text width)."""
        cells = [[str(c) for c in header]] + [[str(c) for c in r] for r in rows]
        ncol = len(header)
        widths = [max(len(r[j]) for r in cells if j < len(r)) for j in range(ncol)]
        char_in = text_width_in("0" * 10, size, MONO) / 10
        max_chars = int(TEXT_W / char_in) - 2 * (ncol - 1)
        while sum(widths) > max_chars and max(widths) > 4:
            widths[widths.index(max(widths))] -= 1
        fmt = [
            "  ".join(
                (c if len(c) <= w else c[: w - 1] + "~").ljust(w)
                for c, w in zip(r + [""] * (ncol - len(r)), widths)
            ).rstrip()
            for r in cells
        ]
        rule = "-" * min(len(max(fmt, key=len)), max_chars + 2 * (ncol - 1))
        return self.lines([fmt[0], rule, *fmt[1:]], size, MONO)

    def axes(self, height: float, width: float = TEXT_W, x0: float = MARGIN):
        """An axes region of `height` inches (None when the pages are full)."""
        if not self.room(height + 0.08):
            return None
        ax = self.fig.add_axes(
            [x0 / PAGE_W, (PAGE_H - self.y - height) / PAGE_H, width / PAGE_W, height / PAGE_H]
        )
        self._box(x0, height, width)
        self.y += 0.08
        return ax

    def mel_row(
        self,
        mels: list[np.ndarray],
        label: str,
        vrange: tuple[float, float],
        titles=None,
        per_row: int = 8,
    ) -> bool:
        """Spectrogram thumbnails, `per_row` to a line, one shared colour range."""
        if not mels:
            return True
        tile_w = (TEXT_W - 0.35) / per_row
        tile_h = tile_w * 0.75
        title_h = 0.14 if titles else 0.0
        for start in range(0, len(mels), per_row):
            chunk = mels[start : start + per_row]
            if not self.room(tile_h + title_h + 0.06):
                return False
            top = self.y + title_h
            for j, m in enumerate(chunk):
                x0 = MARGIN + 0.35 + j * tile_w
                ax = self.fig.add_axes(
                    [
                        (x0 + 0.02) / PAGE_W,
                        (PAGE_H - top - tile_h) / PAGE_H,
                        (tile_w - 0.04) / PAGE_W,
                        tile_h / PAGE_H,
                    ]
                )
                ax.imshow(
                    m,
                    origin="lower",
                    aspect="auto",
                    cmap="magma",
                    vmin=vrange[0],
                    vmax=vrange[1],
                    interpolation="nearest",
                )
                ax.set_xticks([])
                ax.set_yticks([])
                if titles and start + j < len(titles):
                    ax.set_title(titles[start + j], fontsize=6, pad=2)
            self.fig.text(
                MARGIN / PAGE_W,
                (PAGE_H - top - tile_h / 2) / PAGE_H,
                label if start == 0 else "",
                fontsize=7,
                rotation=90,
                va="center",
                ha="left",
            )
            self._box(MARGIN, tile_h + title_h, TEXT_W)
            self.y += 0.06
        return True


def _curve_axes(flow: Flow, curves) -> None:
    if not curves:
        return
    ax = flow.axes(1.9, width=TEXT_W - 0.5, x0=MARGIN + 0.5)
    if ax is None:
        return
    positive = True
    for label, series in curves:
        prefix = f"{label}: " if len(curves) > 1 else ""
        for k, (steps, vals) in series.items():
            style = "o-" if k.startswith("val_") else "-"
            ax.plot(steps, vals, style, lw=1, ms=2.5, label=prefix + k.replace("_", " "))
            positive &= bool(np.all(np.asarray(vals) > 0))
    if positive:
        ax.set_yscale("log")
    ax.set_xlabel("training step", fontsize=7)
    ax.set_ylabel("loss", fontsize=7)
    ax.tick_params(labelsize=6)
    ax.legend(fontsize=6, loc="upper right")
    flow.y += 0.22  # the x label hangs below the axes box


def layout(c: PdfContent) -> Flow:
    """The body pages (at most MAX_BODY_PAGES) followed by the references page."""
    f = Flow(MAX_BODY_PAGES, reserve=7.5 * LEADING / 72.0 + 0.02)
    f.lines(wrap(c.title, TEXT_W, 13), 13, weight="bold", gap=0.1)
    f.heading("Summary")
    for s in c.findings or ["No run has audio metrics, so there is no verdict."]:
        f.para(s)
    f.heading("1  Design")
    for s in c.design:
        f.para(s)
    f.heading("2  Losses per split")
    if c.loss_rows:
        f.table(c.loss_header, c.loss_rows)
    else:
        f.para("Losses per split were not computed (run scripts/eval_losses.py).")
    _curve_axes(f, c.curves)
    f.heading("3  Experiments")
    if c.experiment_rows:
        f.table(c.experiment_header, c.experiment_rows)
    f.para(c.experiment_note)
    f.heading("4  Real and generated spectrograms")
    vr = c.mel_range
    if c.real or c.generated:
        f.para(
            f"Log-mel spectrograms (low frequencies at the bottom), one colour range {vr[0]:g}..{vr[1]:g} "
            "(the mel config's normalisation range) for every tile.",
            size=7.5,
        )
        f.mel_row(c.real, "real", vr)
        f.mel_row(c.generated, c.generated_label or "generated", vr)
    else:
        f.para("No samples were generated.")
    if c.interp:
        f.para(
            "Interpolation: DDIM inversion of two held-out notes (a, b), slerp of the latents, DDIM "
            "decoding. " + c.interp_note,
            size=7.5,
        )
        f.mel_row(c.interp, "interp.", vr, titles=c.interp_titles, per_row=max(8, len(c.interp)))
    items = c.did_not_work or [
        "Nothing was flagged by the automatic checks (failed runs, samples at the noise row, low note "
        "share, clipped WAVs, vocoder worse than Griffin-Lim)."
    ]
    first = len(wrap(items[0], TEXT_W - 0.25, BODY_PT)) if items else 0
    f.room(
        (first + 4) * BODY_PT * LEADING / 72.0 + 0.3
    )  # heading and label keep the first item with them
    f.heading("5  Findings and negative results")
    f.para("What did not work:")
    for s in items:
        if not f.para(s, bullet=True, indent=0.1):
            break
    if c.caveats:
        f.para("Caveats:", size=7.5)
    for s in c.caveats:
        if not f.para(s, size=7.5, bullet=True, indent=0.1):
            break
    if f.full:  # cut: say where the rest is, in the space kept free at the foot of the last page
        f.full, f.reserve = False, 0.0
        f.lines(["(the rest is in index.html)"], 7.5, gap=0.0)
    refs = Flow(None)
    refs.lines(["References"], 13, weight="bold", gap=0.1)
    for i, r in enumerate(REFERENCES, 1):
        refs.para(f"[{i}] {r}", size=8)
    f.pages += refs.pages
    f.boxes += refs.boxes
    return f


def write_pdf(content: PdfContent, path: str | os.PathLike) -> Path:
    """Lay out `content` and write it atomically as a PDF."""
    from matplotlib.backends.backend_pdf import PdfPages

    from melcore.atomic import atomic_open

    flow = layout(content)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_open(path, "wb") as fh, PdfPages(fh, metadata={"Title": content.title}) as pdf:
        for fig in flow.pages:
            pdf.savefig(fig)
    return path
