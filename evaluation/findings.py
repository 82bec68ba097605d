"""Findings written from the numbers: a verdict per run and the "what did not work" list.

Pure functions on what the other steps wrote (metrics.json, WAV peaks, copy-synthesis
results.json, experiments.json); the report turns them into prose and report.json.

Verdict rule (VERDICT_RULE): on every discriminative metric (see evaluation.metrics; the
note share is one of them when noise fails the note check and real clips pass), the samples'
position is |generated - floor| / |noise - floor|: 0 at the real-vs-real floor, 1 at noise,
capped at 1. The median position decides: below NEAR_FLOOR "near floor", above NEAR_NOISE
"near noise", otherwise "between". The measures of what a note is gate the best word (GATES): samples whose note
share, held partials or partial depth sit NEAR_FLOOR or more of the way to noise (on noise's
side of the floor: passing the note check more often than real clips is no veto) are at best
"between", whatever the classifier metrics say (a weak classifier's FD can rate smeared notes
as real, and rated x0-prediction's wobbling partials the best of a recipe sweep; held partials
and flatness missed the demo model's haze between partials that depth sees: docs/RECIPE.md). So are
samples of which more than COPY_SHARE copy a training clip (metrics' nearest_train):
copies score at the floor on every distribution metric.
No discriminative metric: no verdict.
"""

from __future__ import annotations

import math

# 0.2, not 0.25: a demo model at 0.24 (held partials 0.24) showed smeared, wavy partials by
# eye, while the shipped models that look like real notes sit at 0.03-0.06 (docs/RECIPE.md).
NEAR_FLOOR = 0.2
NEAR_NOISE = 0.75
CLIP_PEAK = 0.999  # a WAV whose peak reaches this is counted as clipped
LOW_NOTE_SHARE = 0.5  # flagged when the samples' note share is below this x the floor's
# Metrics that measure notes themselves (not a classifier's view of them): each can veto "near floor".
GATES = ("note_share", "partial_stability", "partial_depth")
COPY_SHARE = 0.1  # more copies of training clips than this share also vetoes "near floor"
NAMES = {
    "fd": "FD",
    "is_pitch": "IS (pitch)",
    "is_family": "IS (family)",
    "pitch_entropy": "pitch entropy",
    "family_tv": "family TV",
    "ndb_k": "NDB/K",
    "bin_mean_rmse": "per-bin mean RMSE",
    "bin_std_rmse": "per-bin std RMSE",
    "centroid_hz": "spectral centroid",
    "flatness": "spectral flatness",
    "note_share": "note share",
    "partial_stability": "held partials",
    "partial_depth": "partial depth",
}
VERDICT_RULE = (
    "position = |generated - floor| / |noise - floor| on each discriminative metric (0 = the real-vs-real "
    f"floor, 1 = noise, capped at 1); median position < {NEAR_FLOOR}: near floor, > {NEAR_NOISE}: near "
    "noise, otherwise between; near floor also needs the positions of "
    f"{', '.join(NAMES[k] for k in GATES)} < {NEAR_FLOOR} where on noise's side of the floor and at most {COPY_SHARE:.0%} "
    "of the samples copies of training clips"
)


def _finite(v) -> bool:
    return isinstance(v, int | float) and math.isfinite(v)


def _towards_noise(metrics: dict, key: str) -> bool:
    """Whether the samples sit on noise's side of the floor on `key`."""
    e = metrics["scalars"][key]
    return (e["generated"] - e["floor"]) * (e["noise"] - e["floor"]) > 0


def _copying(metrics: dict) -> str | None:
    """'K of N samples copy a training clip' when more than COPY_SHARE of them do, else None."""
    copies = metrics.get("nearest_train") or {}
    if (copies.get("copy_share") or 0.0) > COPY_SHARE:
        return f"{copies['copies']} of {copies['n']} samples copy a training clip"
    return None


def positions(metrics: dict) -> dict[str, float]:
    """Position between floor (0) and noise (1) of every discriminative metric (uncapped)."""
    out = {}
    for key, e in (metrics.get("scalars") or {}).items():
        g, f, n = e.get("generated"), e.get("floor"), e.get("noise")
        if e.get("discriminative") and _finite(g) and _finite(f) and _finite(n) and n != f:
            out[key] = abs(g - f) / abs(n - f)
    return out


def verdict(metrics: dict) -> dict:
    """{'verdict': 'near floor' | 'between' | 'near noise' | None, 'median_position', 'positions', 'rule'}."""
    pos = positions(metrics)
    if not pos:
        return {
            "verdict": None,
            "median_position": None,
            "positions": {},
            "rule": VERDICT_RULE,
            "reason": "no discriminative metric (no floor or noise row, or noise scores within the floor)",
        }
    capped = sorted(min(p, 1.0) for p in pos.values())
    mid = len(capped) // 2
    median = capped[mid] if len(capped) % 2 else 0.5 * (capped[mid - 1] + capped[mid])
    word = (
        "near floor" if median < NEAR_FLOOR else "near noise" if median > NEAR_NOISE else "between"
    )
    reasons = []
    if word == "near floor":
        vetoes = [k for k in GATES if pos.get(k, 0.0) >= NEAR_FLOOR and _towards_noise(metrics, k)]
        if vetoes:
            where = " and ".join(f"{NAMES[k]} {min(pos[k], 1.0):.2f}" for k in vetoes)
            reasons.append(f"{where} of the way to noise")
        if copying := _copying(metrics):
            reasons.append(copying)
    if reasons:
        word = "between"
    out = {"verdict": word, "median_position": median, "positions": pos, "rule": VERDICT_RULE}
    if reasons:
        out["gate"] = f"{' and '.join(reasons)}, so at best between"
    return out


def _count(row: dict | None) -> str | None:
    nc = (row or {}).get("note_check") or {}
    if not nc.get("n"):
        return None
    return f"{nc['notes']}/{nc['n']}"


def verdict_sentence(metrics: dict, v: dict) -> str:
    """'The samples are near noise: ...' from one run's metrics and its verdict."""
    pos = v["positions"]
    gen_nc = metrics.get("note_check") or {}
    notes = ""
    if gen_nc.get("n"):
        refs = ", ".join(
            f"{label}: {c}"
            for label, c in (
                ("real", _count(metrics.get("floor"))),
                ("noise", _count(metrics.get("noise"))),
                ("mean spectrum", _count(metrics.get("mean_spectrum"))),
            )
            if c is not None
        )
        notes = f"; {gen_nc['notes']} of {gen_nc['n']} samples pass the note check" + (
            f" ({refs})" if refs else ""
        )
    if v["verdict"] is None:
        return f"No verdict: {v['reason']}{notes}."
    parts = ", ".join(
        f"{NAMES.get(k, k)} {p:.2f}" for k, p in sorted(pos.items(), key=lambda kv: -kv[1])
    )
    gate = f" ({v['gate']})" if v.get("gate") else ""
    return (
        f"The samples are {v['verdict']}{gate}: on the {len(pos)} discriminative metrics their median "
        f"position is {v['median_position']:.2f} of the way from the real-vs-real floor (0) to noise (1) "
        f"({parts}){notes}."
    )


def copy_sentence(check: dict | None) -> str | None:
    """metrics' nearest_train (evaluation.novelty) in one line; None without held-out clips."""
    if not check or check.get("floor") is None:
        return None
    g, f = check["generated"], check["floor"]
    return (
        f"nearest training clip: generated median {g['median']:.2f} (least {g['min']:.2f}), "
        f"held-out real median {f['median']:.2f} (5th percentile {f['p5']:.2f}); ratio "
        f"{check['ratio']:.2f}; {check['copies']} of {check['n']} generated closer than "
        f"{check['copy_threshold']:.2f} (copies)"
    )


def non_discriminative(metrics: dict) -> list[str]:
    return [k for k, e in (metrics.get("scalars") or {}).items() if not e.get("discriminative")]


def run_findings(label: str, metrics: dict | None, wav_peaks: list[float] | None = None) -> dict:
    """Verdict, sentences and 'did not work' items of one run."""
    out: dict = {"run": label, "verdict": None, "sentences": [], "did_not_work": [], "caveats": []}
    peaks = [p for p in (wav_peaks or []) if _finite(p)]
    clipped = sum(p >= CLIP_PEAK for p in peaks)
    if peaks:
        out["wavs"] = {"n": len(peaks), "clipped": clipped, "max_peak": max(peaks)}
        if clipped:
            out["did_not_work"].append(
                f"{label}: {clipped} of {len(peaks)} generated WAVs clip (peak >= {CLIP_PEAK})"
            )
    if not isinstance(metrics, dict):
        out["sentences"].append(f"{label}: audio metrics not computed.")
        return out
    if "scalars" not in metrics:
        out["caveats"].append(
            f"{label}: metrics.json has no noise/mean-spectrum rows (written by an older "
            "audio_metrics.py): no verdict"
        )
        return out
    v = verdict(metrics)
    out.update(
        verdict=v["verdict"],
        median_position=v["median_position"],
        positions=v["positions"],
        rule=v["rule"],
    )
    out["sentences"].append(f"{label}: {verdict_sentence(metrics, v)}")
    copies_line = copy_sentence(metrics.get("nearest_train"))
    if copies_line:
        out["sentences"].append(f"{label}: {copies_line}.")
    if copying := _copying(metrics):
        out["did_not_work"].append(f"{label}: {copying}")
    out["headline"] = list(metrics.get("headline") or [])
    at_noise = [k for k, p in v["positions"].items() if p >= NEAR_NOISE]
    if at_noise:
        out["did_not_work"].append(
            f"{label}: the samples sit at the noise row on "
            + ", ".join(
                f"{NAMES.get(k, k)} ({v['positions'][k]:.2f} of the way from floor to noise)"
                for k in at_noise
            )
        )
    sc = metrics["scalars"].get("note_share") or {}
    g, f = sc.get("generated"), sc.get("floor")
    nc = metrics.get("note_check") or {}
    if _finite(g) and _finite(f) and g < LOW_NOTE_SHARE * f:
        why = ", ".join(
            f"{k} {n}" for k, n in sorted((nc.get("reasons") or {}).items(), key=lambda kv: -kv[1])
        )
        out["did_not_work"].append(
            f"{label}: only {nc.get('notes')} of {nc.get('n')} samples pass the note check (real held-out: "
            f"{_count(metrics.get('floor'))})" + (f"; failures: {why}" if why else "")
        )
    nd = non_discriminative(metrics)
    if nd:
        out["caveats"].append(
            f"{label}: not discriminative at N = {metrics.get('n')} (noise within the floor's "
            f"spread), so not headline numbers: " + ", ".join(NAMES.get(k, k) for k in nd)
        )
    out["caveats"] += [f"{label}: {n}" for n in metrics.get("notes") or []]
    return out


def copy_synthesis_findings(results: dict | None) -> list[str]:
    """The pretrained vocoder against Griffin-Lim on copy-synthesis (results.json of copy_synthesis.py)."""
    summary = (results or {}).get("summary") or {}
    gl = summary.get("griffin-lim")
    out = []
    if not isinstance(gl, dict):
        return out
    for name, s in summary.items():
        if name == "griffin-lim" or not isinstance(s, dict):
            continue
        worse = [
            k
            for k in ("mel_l1", "spectral_convergence", "log_mag_l1")
            if _finite(s.get(k)) and _finite(gl.get(k)) and s[k] > gl[k]
        ]
        if worse:
            out.append(
                f"vocoder copy-synthesis: {name} is worse than Griffin-Lim on "
                + ", ".join(f"{k} ({s[k]:.3g} vs {gl[k]:.3g})" for k in worse)
                + f" over {results.get('notes')} notes"
            )
    return out


def experiment_findings(summary: dict | None) -> list[str]:
    """Failed or diverged runs and losing arms, as experiments.json lists them (plus any failure it omits)."""
    if not isinstance(summary, dict):
        return []
    out = [str(n) for n in summary.get("did_not_work") or []]
    for name, r in (summary.get("runs") or {}).items():
        if (
            isinstance(r, dict)
            and r.get("status") not in (None, "ok")
            and not any(o.startswith(f"{name}:") for o in out)
        ):
            out.append(f"{name}: {r.get('status')} ({r.get('error', 'no error recorded')})")
    return out


def _share(metrics: dict) -> tuple[int, int, float, float] | None:
    """(notes, n, share, binomial standard error over clips) of the samples' note check."""
    nc = (metrics or {}).get("note_check") or {}
    n = nc.get("n")
    if not n:
        return None
    p = nc["notes"] / n
    return nc["notes"], n, p, math.sqrt(p * (1 - p) / n)


def experiment_winner(summary: dict | None) -> dict:
    """Which finished arm won and by how much: the lowest median position (the verdict rule) when
    at least two arms have metrics, with the note check's spread over clips; else the lowest
    valid bits/dim (the one loss that compares different targets). Plus the winner's zero-shot."""
    out: dict = {"winner": None, "criterion": None, "ranking": [], "sentences": []}
    runs = {n: r for n, r in ((summary or {}).get("runs") or {}).items() if isinstance(r, dict) and r.get("status") == "ok"}
    if not runs:
        return out
    budget = summary.get("budget") or "the same budget"
    grid = summary.get("grid") or {}
    head = f"Experiments ({budget}, seed {grid.get('seed', 0)})"
    if len(runs) < 2:
        out["sentences"].append(f"{head}: only {next(iter(runs))} finished, so no arm is compared.")
        return out
    metrics = {n: (r.get("eval") or {}).get("metrics") for n, r in runs.items()}
    pos = {n: verdict(m)["median_position"] for n, m in metrics.items() if isinstance(m, dict) and "scalars" in m}
    pos = {n: p for n, p in pos.items() if _finite(p)}
    bpd = {}
    for n, r in runs.items():
        v = ((((r.get("eval") or {}).get("losses") or {}).get("weights") or {}).get("ema") or {}).get("splits") or {}
        if _finite((v.get("valid") or {}).get("bpd")):
            bpd[n] = v["valid"]["bpd"]
    if len(pos) >= 2:
        key, crit = pos, "median position (0 = real-vs-real floor, 1 = noise)"
    elif len(bpd) >= 2:
        key, crit = bpd, "valid bits/dim"
    else:
        out["sentences"].append(f"{head}: no measure common to two arms (no metrics, no valid bits/dim): no winner.")
        return out
    order = sorted(key, key=key.get)
    best, second = order[0], order[1]
    margin = key[second] - key[best]
    out.update(winner=best if margin > 0 else None, criterion=crit,
               ranking=[{"name": n, "value": key[n], "note_check": _share(metrics.get(n) or {})} for n in order])
    others = ", ".join(f"{n} {key[n]:.3g}" for n in order[1:])
    if margin > 0:
        text = f"{head}: {best} won on the {crit}: {key[best]:.3g} against {others}; {margin:.3g} better than {second}."
    else:
        text = f"{head}: {best} and {second} tie on the {crit} ({key[best]:.3g})."
    shares = {n: _share(metrics.get(n) or {}) for n in order}
    if all(shares.values()):
        listed = ", ".join(f"{n} {a}/{b} ({100 * p:.0f}% ± {100 * se:.0f}%)" for n, (a, b, p, se) in shares.items())
        (_, _, p1, s1), (_, _, p2, s2) = shares[best], shares[second]
        text += (f" Note check: {listed}; {best} minus {second}: {100 * (p1 - p2):+.0f} ± "
                 f"{100 * math.hypot(s1, s2):.0f} points (binomial standard errors over clips).")
    else:
        text += " No per-clip spread (no note check)."
    out["sentences"].append(text + " One seed per arm, so the spread over seeds is not measured.")
    zs = (runs[best].get("eval") or {}).get("zero_shot") or {}
    own, other = zs.get("own") or {}, zs.get("other") or {}
    if _finite(own.get("loss")) and _finite(other.get("loss")):
        z = (f"Zero-shot ({zs.get('what', 'another set')}): {best}'s loss {other['loss']:.3g} on "
             f"{other.get('split', 'test')} vs {own['loss']:.3g} on its own {own.get('split', 'test')} "
             f"({other['loss'] / own['loss']:.2f}x)" if own["loss"] else "")
        m_other, m_own = other.get("metrics") or {}, own.get("metrics") or {}
        a, b = _share(m_own), _share(m_other)
        if z and isinstance(m_other, dict) and "scalars" in m_other and "scalars" in m_own:
            z += (f"; its samples' median position {verdict(m_own)['median_position']:.2f} against its own set, "
                  f"{verdict(m_other)['median_position']:.2f} against the other")
        if z and a and b:
            z += f" (note check {a[0]}/{a[1]}; the other set's real clips set the floor there)"
        if z:
            out["sentences"].append(z + ".")
    return out


def report_findings(
    runs: list[tuple[str, dict | None, list[float] | None]],
    copy_synthesis: dict | None = None,
    experiments: dict | None = None,
) -> dict:
    """Everything report.json carries: per-run verdicts and sentences, and the 'what did not work' list."""
    per_run = [run_findings(label, m, peaks) for label, m, peaks in runs]
    did_not_work = [x for r in per_run for x in r["did_not_work"]]
    did_not_work += copy_synthesis_findings(copy_synthesis) + experiment_findings(experiments)
    exp = experiment_winner(experiments) if isinstance(experiments, dict) else None
    out = {
        "verdict_rule": VERDICT_RULE,
        "runs": per_run,
        "verdicts": {r["run"]: r["verdict"] for r in per_run},
        "sentences": [s for r in per_run for s in r["sentences"]] + (exp or {}).get("sentences", []),
        "did_not_work": did_not_work,
        "caveats": [c for r in per_run for c in r["caveats"]],
    }
    if exp is not None:
        out["experiments"] = {k: exp[k] for k in ("winner", "criterion", "ranking")}
    return out
