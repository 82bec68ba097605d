"""Training runs at one budget (steps or wall time), each evaluated the same way.

Grid file (JSON or YAML):

    {"data_dir": "runs/demo/mels", "max_steps": 200,
     "base": {"num_channels": 32, "num_res_blocks": 1, "crop_width": 32, "batch_size": 8},
     "grid": {"noise_schedule": ["linear", "cosine"], "learn_sigma": [true, false]},
     "classifier": "runs/demo/classifier",      # optional: audio metrics of the samples
     "num_samples": 8, "loss_clips": 16, "bpd_clips": 2}

Every combination of the grid values becomes one run dir `<out>/<name>`. Named arms
(`"arms": {"upstream": {flags}, "notes": {flags}}`) are runs with their own flags over `base`;
with a `grid` as well, every arm is crossed with every combination. The budget is `max_steps`
or `max_train_seconds` (the same wall time for every arm: recipes with different step costs
are compared at equal cost). `data` (`{"size": "small", "seed": 0}`) instead of `data_dir`
means the embedded NSynth-GM set at the universal preset, reused from a `make demo` folder
(`reuse`) when that holds the same set, otherwise rendered and prepared into `<out>/data`,
`<out>/mels`; without a `classifier`, `classifier_steps` > 0 trains one (or reuses the demo's).
`zero_shot` (`{"split": "test"}`) evaluates every model on notes it never saw: a set rendered
from another General MIDI SoundFont when one is given or installed, else the test split's
held-out instruments next to the train split.

Each run is trained by `evaluation.pipeline.train_from_args` (resuming from its checkpoints),
then losses per split, whole-note samples (the default sampler), metrics and zero-shot. A
finished run is recorded atomically in `<out>/<name>/result.json` with its flags, seed and
numbers, so a rerun after a kill at any moment skips it; an unfinished one resumes from its
checkpoint; one that fails is recorded with its error (and retried by the next rerun) while
the rest go on. The table goes to summary.csv/.md and experiments.json (rewritten after every
run), the findings (which arm won, by how much) into experiments.json, and a report into
`<out>/report`. The folder has one owner (melcore.run_lock).
"""

from __future__ import annotations

import csv
import io
import itertools
import json
import math
import os
import re
import time
import traceback
from pathlib import Path
from typing import Any

from melcore.atomic import write_json, write_text
from melcore.errors import UserError
from melcore.run_lock import RunLock

GRID_KEYS = {"data_dir", "max_steps", "base", "grid", "classifier", "num_samples", "loss_clips", "bpd_clips", "seed",
             "arms", "max_train_seconds", "data", "classifier_steps", "zero_shot", "description"}
COLUMNS = ("name", "status", "step", "train_loss", "valid_loss", "valid_mse", "valid_bpd", "fd", "ndb_k",
           "is_pitch", "pitch_entropy", "train_s", "notes", "position", "zs_own_loss", "zs_other_loss")
PRESET = Path(__file__).parent / "presets" / "experiments.json"
# Other General MIDI SoundFonts looked for when none is given (Debian's fluid-soundfont-gm).
INSTALLED_SOUNDFONTS = ("/usr/share/sounds/sf2/FluidR3_GM.sf2",)
RESULT = "result.json"
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.=,-]*$")


def load_grid(path: str | os.PathLike) -> dict:
    """Read and check a grid file; paths in it are relative to the file's folder."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path}: grid file does not exist")
    text = path.read_text()
    try:
        if path.suffix in (".yaml", ".yml"):
            import yaml

            grid = yaml.safe_load(text)
        else:
            grid = json.loads(text)
    except Exception as exc:  # both parsers' errors
        raise UserError(f"{path}: cannot parse grid ({str(exc).splitlines()[0]})") from None
    if not isinstance(grid, dict):
        raise UserError(f"{path}: the grid must be a mapping with data_dir, max_steps, base, grid")
    unknown = sorted(set(grid) - GRID_KEYS)
    if unknown:
        raise UserError(f"{path}: unknown keys {unknown}; allowed: {sorted(GRID_KEYS)}")
    if "data_dir" not in grid and "data" not in grid:
        raise UserError(f"{path}: missing 'data_dir'")
    if "max_steps" not in grid and "max_train_seconds" not in grid:
        raise UserError(f"{path}: missing 'max_steps' (or 'max_train_seconds')")
    if not isinstance(grid.get("grid", {}), dict) or not all(
        isinstance(v, list) and v for v in grid.get("grid", {}).values()
    ):
        raise UserError(f"{path}: 'grid' must map flag names to non-empty lists of values")
    arms = grid.get("arms", {})
    if not isinstance(arms, dict) or not all(isinstance(v, dict) for v in arms.values()):
        raise UserError(f"{path}: 'arms' must map arm names to mappings of flags")
    bad = [n for n in arms if not _NAME.match(str(n))]
    if bad:
        raise UserError(f"{path}: arm names {bad} must be letters, digits and _.=,- (they name folders)")
    for key in ("data_dir", "classifier"):
        if grid.get(key) and not Path(grid[key]).is_absolute():
            grid[key] = str(path.parent / grid[key])
    zs = grid.get("zero_shot")
    if isinstance(zs, dict) and zs.get("data_dir") and not Path(zs["data_dir"]).is_absolute():
        grid["zero_shot"] = {**zs, "data_dir": str(path.parent / zs["data_dir"])}
    return grid


def expand(grid: dict) -> list[tuple[str, dict]]:
    """[(run name, flags)] in file order: every arm (or one unnamed run) x every grid combination."""
    axes = grid.get("grid", {}) or {}
    keys = list(axes)
    arms = list((grid.get("arms") or {"": {}}).items())
    runs = []
    for arm, arm_flags in arms:
        for values in itertools.product(*(axes[k] for k in keys)):
            combo = dict(zip(keys, values))
            name = "-".join([arm] * bool(arm) + [f"{k}={_short(v)}" for k, v in combo.items()]) or "base"
            runs.append((re.sub(r"[^A-Za-z0-9_.=,-]", "_", name), {**arm_flags, **combo}))
    return runs


def _short(v: Any) -> str:
    return str(v).lower() if isinstance(v, bool) else str(v)


def run_flags(grid: dict, combo: dict, log_dir: Path) -> dict:
    from improved_diffusion.script_util import model_and_diffusion_defaults, training_defaults

    defaults = {**model_and_diffusion_defaults(), **training_defaults()}
    flags = {**grid.get("base", {}), **combo}
    unknown = sorted(set(flags) - set(defaults))
    if unknown:
        raise UserError(f"grid: unknown training flags {unknown}")
    args = {**defaults, "num_workers": 0, "sample_interval": 0, "val_interval": 0,
            "seed": int(grid.get("seed", 0)), **flags}
    steps = int(grid.get("max_steps", 0))
    args.update(data_dir=str(grid["data_dir"]), log_dir=str(log_dir), max_steps=steps,
                max_train_seconds=float(grid.get("max_train_seconds", 0)))
    if steps:
        args["save_interval"] = min(int(args["save_interval"]), steps)
    return args


def budget_text(grid: dict) -> str:
    steps, secs = int(grid.get("max_steps", 0)), float(grid.get("max_train_seconds", 0))
    parts = [f"{secs:g} s of training"] * bool(secs) + [f"{steps} steps"] * bool(steps)
    return " or ".join(parts) + " each" + (" (whichever comes first)" if steps and secs else "")


# -- inputs: data, classifier, zero-shot set -----------------------------------------------------
def _render_and_prep(root: Path, size: str, seed: int, soundfont: str | None, progress: bool) -> Path:
    """NSynth-GM notes into root/data and their universal-preset mels into root/mels (both skip
    what is already done, so a rerun after a kill finishes the job)."""
    from datasets.nsynth_gm import build
    from datasets.prep import prepare
    from melcore.mel_config import MelConfig

    build(root / "data", size=size, seed=seed, workers=2, progress=progress, soundfont=soundfont)
    prepare(root / "data", root / "mels", MelConfig.from_preset("universal"), workers=2, progress=progress)
    return root / "mels"


def reusable_demo(reuse: str | os.PathLike | None, spec: dict) -> tuple[Path | None, str]:
    """(mels dir, why) of a `make demo` folder holding the same NSynth-GM set, or (None, why not)."""
    if not reuse:
        return None, "no demo folder given"
    reuse = Path(reuse)
    meta, mels = reuse / "data" / "nsynth_gm.json", reuse / "mels"
    try:
        info = json.loads(meta.read_text())
        stats = json.loads((mels / "stats.json").read_text())
        config = json.loads((mels / "mel_config.json").read_text())
    except (OSError, json.JSONDecodeError):
        return None, f"{reuse} has no complete NSynth-GM mel set"
    want = (spec.get("size", "small"), int(spec.get("seed", 0)))
    if (info.get("size"), info.get("seed")) != want or (info.get("soundfont") or {}).get("name") != "TimGM6mb.sf2":
        return None, f"{reuse} holds another set (size {info.get('size')}, seed {info.get('seed')})"
    if config.get("preset") != "universal" or not stats.get("clips") or (reuse / ".lock").exists():
        return None, f"{reuse}/mels is not a finished universal-preset set (or make demo is running)"
    return mels, f"reused {mels} (make demo's)"


def pick_soundfont(soundfont: str | None) -> str | None:
    """The SoundFont of the zero-shot set: the one given, else an installed one; 'none': none."""
    if soundfont == "none":
        return None
    if soundfont:
        if not Path(soundfont).is_file():
            raise UserError(f"--soundfont {soundfont}: file does not exist (or pass 'none' for the held-out split)")
        return soundfont
    return next((p for p in INSTALLED_SOUNDFONTS if Path(p).is_file()), None)


def prepare_inputs(grid: dict, out: Path, reuse: str | os.PathLike | None = None,
                   soundfont: str | None = None, progress: bool = False) -> dict:
    """Fills grid's data_dir / classifier and returns what was used (recorded in experiments.json)."""
    inputs: dict = {}
    spec = grid.get("data")
    if grid.get("data_dir"):
        inputs["data"] = f"given: {grid['data_dir']}"
    else:
        mels, why = reusable_demo(reuse, spec)
        if mels is None:
            mels = _render_and_prep(out, spec.get("size", "small"), int(spec.get("seed", 0)), None, progress)
            why = f"rendered NSynth-GM {spec.get('size', 'small')} (seed {spec.get('seed', 0)}) into {mels} ({why})"
        grid["data_dir"], inputs["data"] = str(mels), why
    if grid.get("classifier"):
        inputs["classifier"] = f"given: {grid['classifier']}"
    elif int(grid.get("classifier_steps", 0)) > 0:
        demo_clf = Path(grid["data_dir"]).parent / "classifier"
        clf = out / "classifier"
        if reuse and Path(grid["data_dir"]).parent == Path(reuse) and (demo_clf / "classifier.json").is_file():
            clf, inputs["classifier"] = demo_clf, f"reused {demo_clf} (make demo's)"
        else:
            if not (clf / "classifier.json").is_file():  # written last: its presence marks a whole classifier
                from evaluation.classifier import fit_classifier

                fit_classifier(grid["data_dir"], clf, max_steps=int(grid["classifier_steps"]), seed=int(grid.get("seed", 0)))
            inputs["classifier"] = f"trained {clf} ({grid['classifier_steps']} steps)"
        grid["classifier"] = str(clf)
    else:
        inputs["classifier"] = "none: no classifier given and classifier_steps is 0, so no audio metrics"
    zs = grid.get("zero_shot")
    if isinstance(zs, dict):
        split = zs.get("split", "test")
        sf = None if zs.get("data_dir") else pick_soundfont(soundfont if soundfont is not None else zs.get("soundfont"))
        if zs.get("data_dir"):  # a prepared set, e.g. rendered from another SoundFont before
            inputs["zero_shot"] = {"kind": "data_dir", "data_dir": str(zs["data_dir"]), "split": split,
                                   "what": f"the mel set {zs['data_dir']}, {split} split"}
        elif sf is not None:
            size, seed = (spec or {}).get("size", "small"), int((spec or {}).get("seed", 0))
            other = _render_and_prep(out / "zero_shot", size, seed, sf, progress)
            inputs["zero_shot"] = {"kind": "soundfont", "soundfont": sf, "data_dir": str(other), "split": split,
                                   "what": f"the same note plan rendered from {Path(sf).name}, {split} split"}
        else:
            inputs["zero_shot"] = {"kind": "held_out", "data_dir": grid["data_dir"], "split": "test",
                                   "what": "no other SoundFont given or installed: the test split's held-out "
                                           "instruments (never trained on) next to the train split"}
    return inputs


# -- one run -----------------------------------------------------------------------------------
def evaluate_run(run_dir: Path, grid: dict, inputs: dict | None = None) -> dict:
    """Losses, samples, (with a classifier) metrics and (with zero_shot) zero-shot of one finished run."""
    from evaluation.losses import checkpoint_losses, plot_curves, zero_shot
    from evaluation.pipeline import sample_from_checkpoint

    seed = int(grid.get("seed", 0))
    limit = int(grid.get("loss_clips", 16))
    # bits/dim (the whole chain per clip: the costly part) on the valid split only; it is the one
    # loss that compares arms with different targets and weightings.
    losses = checkpoint_losses(run_dir, grid["data_dir"], splits=("valid",), weights=("ema",), limit=limit,
                               bpd_limit=int(grid.get("bpd_clips", 2)), seed=seed)
    train = checkpoint_losses(run_dir, grid["data_dir"], splits=("train",), weights=("ema",), limit=limit,
                              bpd_limit=0, seed=seed)
    losses["weights"]["ema"]["splits"] = {**train["weights"]["ema"]["splits"], **losses["weights"]["ema"]["splits"]}
    write_json(run_dir / "losses.json", losses)
    plot_curves(run_dir, run_dir / "curves.png")
    n = int(grid.get("num_samples", 8))
    sample_from_checkpoint(run_dir, run_dir / "samples", n, batch_size=min(n, 16), seed=seed, wav=False, progress=False)
    metrics = None
    if grid.get("classifier"):
        from evaluation.metrics import run_audio_metrics

        metrics = run_audio_metrics(grid["data_dir"], str(run_dir / "samples"), grid["classifier"],
                                    str(run_dir / "metrics.json"), seed=seed)
    zs = (inputs or {}).get("zero_shot")
    zs_result = None
    if zs:
        held_out = zs["kind"] == "held_out"
        zs_result = zero_shot(run_dir, grid["data_dir"], zs["data_dir"], split=zs["split"],
                              own_split="train" if held_out else None,
                              samples=None if held_out else run_dir / "samples",
                              classifier=None if held_out else grid.get("classifier"), own_metrics=metrics,
                              limit=limit, bpd_limit=0, seed=seed)  # one model on two sets: its loss compares them
        zs_result.update(kind=zs["kind"], what=zs["what"])
        write_json(run_dir / "zero_shot.json", zs_result)
    return {"losses": losses, "metrics": metrics, "zero_shot": zs_result}


def run_one(name: str, combo: dict, grid: dict, inputs: dict, out: Path, progress: bool) -> dict:
    """One arm: its recorded result when it finished before, else train (resuming) and evaluate."""
    from evaluation.pipeline import train_from_args

    run_dir = out / name
    args = run_flags(grid, combo, run_dir)
    record = {"flags": combo, "seed": args["seed"], "max_steps": args["max_steps"],
              "max_train_seconds": args["max_train_seconds"]}
    try:
        done = json.loads((run_dir / RESULT).read_text())
    except (OSError, json.JSONDecodeError):
        done = None
    if isinstance(done, dict) and done.get("status") == "ok":
        if {k: done.get(k) for k in record} == record:
            return done | {"reused": True}
        return {**record, "run_dir": name, "status": "failed",
                "error": f"UserError: {run_dir / RESULT} was made with other flags or budget; use another --out"}
    result: dict = {**record, "run_dir": name}
    t0 = time.perf_counter()
    try:
        loop = train_from_args(args, progress=progress)
        result.update(step=loop.step, train_seconds=round(loop.train_seconds, 1))
        t1 = time.perf_counter()
        result["eval"] = evaluate_run(run_dir, grid, inputs)
        result.update(status="ok", wall_seconds={"train": round(t1 - t0, 1), "eval": round(time.perf_counter() - t1, 1)})
    except Exception as exc:  # one diverging or invalid config must not stop the grid
        result.update(status="failed", error=f"{type(exc).__name__}: {exc}")
        run_dir.mkdir(parents=True, exist_ok=True)
        write_text(run_dir / "error.txt", traceback.format_exc())
    result["config"] = {k: v for k, v in args.items() if k not in ("data_dir", "log_dir")}
    write_json(run_dir / RESULT, result)  # atomic: present = finished (or failed, retried next time)
    return result


# -- the table -----------------------------------------------------------------------------------
def _row(name: str, result: dict) -> dict:
    row = dict.fromkeys(COLUMNS)
    row.update(name=name, status=result["status"])
    ev = result.get("eval") or {}
    losses = ev.get("losses") or {}
    splits = ((losses.get("weights") or {}).get("ema") or {}).get("splits") or {}
    row["step"] = losses.get("step", result.get("step"))
    row["train_loss"] = (splits.get("train") or {}).get("loss")
    valid = splits.get("valid") or {}
    row.update(valid_loss=valid.get("loss"), valid_mse=valid.get("mse"), valid_bpd=valid.get("bpd"))
    m = ev.get("metrics") or {}
    for k in ("fd", "ndb_k", "is_pitch", "pitch_entropy"):
        row[k] = m.get(k)
    row["train_s"] = result.get("train_seconds")
    nc = m.get("note_check") or {}
    if nc.get("n"):
        row["notes"] = f"{nc['notes']}/{nc['n']}"
    if "scalars" in m:
        from evaluation.findings import verdict

        row["position"] = verdict(m)["median_position"]
    zs = ev.get("zero_shot") or {}
    row.update(zs_own_loss=(zs.get("own") or {}).get("loss"), zs_other_loss=(zs.get("other") or {}).get("loss"))
    return row


def summary_tables(rows: list[dict]) -> tuple[str, str]:
    buf = io.StringIO()
    w = csv.DictWriter(buf, COLUMNS)
    w.writeheader()
    w.writerows(rows)

    def fmt(v):
        if isinstance(v, float):
            return f"{v:.4g}"
        return "" if v is None else str(v)

    md = ["| " + " | ".join(COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    md += ["| " + " | ".join(fmt(r[c]) for c in COLUMNS) + " |" for r in rows]
    return buf.getvalue(), "\n".join(md) + "\n"


LOSS_FLAGS = ("predict_v", "predict_xstart", "learn_sigma", "snr_gamma", "use_kl", "rescale_learned_sigmas",
              "noise_schedule", "diffusion_steps")


def loss_definition(result: dict) -> tuple:
    """The flags that define what a run's training loss measures (two runs that differ in one
    of them report losses that cannot be compared)."""
    flags = result.get("flags") or {}
    return tuple(flags.get(k) for k in LOSS_FLAGS)


def what_did_not_work(results: dict[str, dict]) -> list[str]:
    """Plain sentences for the report: failed runs, non-finite losses, configs clearly worse."""
    notes = []
    rows = {name: _row(name, r) for name, r in results.items()}
    for name, r in results.items():
        if r["status"] != "ok":
            notes.append(f"{name}: failed ({r.get('error', 'unknown error')})")
    finite = {n: r["valid_loss"] for n, r in rows.items()
              if isinstance(r["valid_loss"], float) and math.isfinite(r["valid_loss"])}
    for n, r in rows.items():
        v = r["valid_loss"]
        if r["status"] == "ok" and (v is None or not math.isfinite(v)):
            notes.append(f"{n}: validation loss is not finite")
    # Losses of different targets or weightings (epsilon vs v, hybrid, Min-SNR) are different
    # quantities: compare validation losses only within a group that shares the loss.
    groups: dict[tuple, dict[str, float]] = {}
    for n, v in finite.items():
        groups.setdefault(loss_definition(results[n]), {})[n] = v
    for group in groups.values():
        if len(group) < 2:
            continue
        best = min(group, key=group.get)
        for n, v in group.items():
            if n != best and v > 1.25 * group[best]:
                notes.append(f"{n}: validation loss {v:.4g} is {v / group[best]:.2f}x the best with the same loss "
                             f"({best}, {group[best]:.4g})")
    for n, r in results.items():
        m = ((r.get("eval") or {}).get("metrics")) or {}
        floor = m.get("floor") or {}
        if m.get("fd") is not None and floor.get("fd") and m["fd"] > 3 * floor["fd"]:
            notes.append(f"{n}: FD {m['fd']:.3g} is more than 3x the real-vs-real floor {floor['fd']:.3g}")
    return notes


def describe(grid: dict, soundfont: str | None = None, reuse: str | os.PathLike | None = None) -> str:
    """--list / --dry_run: the runs, their flags over base, the budget, data and zero-shot set."""
    runs = expand(grid)
    lines = [f"{len(runs)} runs, {budget_text(grid)}, seed {grid.get('seed', 0)}"]
    if grid.get("data_dir"):
        lines.append(f"data: {grid['data_dir']}")
    else:
        mels, why = reusable_demo(reuse, grid.get("data") or {})
        lines.append(f"data: {why}" if mels else f"data: NSynth-GM {grid['data'].get('size', 'small')} rendered into "
                     f"OUT/data, OUT/mels ({why})")
    zs = grid.get("zero_shot")
    if isinstance(zs, dict):
        sf = None if zs.get("data_dir") else pick_soundfont(soundfont if soundfont is not None else zs.get("soundfont"))
        lines.append(f"zero-shot: {zs['data_dir']}" if zs.get("data_dir") else f"zero-shot: notes rendered from {sf}"
                     if sf else "zero-shot: the held-out test-split instruments")
    lines.append(f"base: {json.dumps(grid.get('base', {}), sort_keys=True)}")
    lines += [f"  {name}: {json.dumps(flags, sort_keys=True)}" for name, flags in runs]
    secs = float(grid.get("max_train_seconds", 0))
    if secs:
        lines.append(f"training alone: {len(runs) * secs / 60:.0f} min (plus data, classifier, evaluation, report)")
    return "\n".join(lines)


# -- the whole grid ----------------------------------------------------------------------------------
def run_grid(grid: dict, out_dir: str | os.PathLike, progress: bool = False, reuse: str | os.PathLike | None = None,
             soundfont: str | None = None, report: bool | None = None) -> dict:
    """Train and evaluate every run; writes summary.csv, summary.md, experiments.json (and a report
    when `report`, by default for grids with arms)."""
    with RunLock(out_dir, "experiments", flag="--out"):  # one grid per folder
        return _run_grid(grid, Path(out_dir), progress, reuse, soundfont, bool(grid.get("arms")) if report is None else report)


def _summary(grid: dict, inputs: dict, results: dict, complete: bool) -> dict:
    from evaluation.findings import experiment_winner

    rows = [_row(n, r) for n, r in results.items()]
    summary = {"grid": grid, "inputs": inputs, "budget": budget_text(grid), "runs": results, "rows": rows,
               "complete": complete, "did_not_work": what_did_not_work(results)}
    summary["findings"] = experiment_winner(summary)
    return summary


def _write_summary(out: Path, summary: dict) -> None:
    csv_text, md_text = summary_tables(summary["rows"])
    write_text(out / "summary.csv", csv_text)
    write_text(out / "summary.md", md_text)
    write_json(out / "experiments.json", summary)


def _run_grid(grid: dict, out: Path, progress: bool, reuse, soundfont, report: bool) -> dict:
    grid = dict(grid)
    inputs = prepare_inputs(grid, out, reuse, soundfont, progress)
    results: dict[str, dict] = {}
    runs = expand(grid)
    for name, combo in runs:
        results[name] = run_one(name, combo, grid, inputs, out, progress)
        # After every run, so a kill leaves a table of what finished.
        _write_summary(out, _summary(grid, inputs, results, complete=len(results) == len(runs)))
    summary = _summary(grid, inputs, results, complete=True)
    if report:
        summary["report"] = _report(out, summary)
    _write_summary(out, summary)
    return summary


def _report(out: Path, summary: dict) -> str:
    """out/report from the finished runs, the winner first (the PDF's design paragraph is its)."""
    from evaluation.report import make_report

    ok = [n for n, r in summary["runs"].items() if r["status"] == "ok"]
    if not ok:
        return "not written: no run finished"
    winner = (summary.get("findings") or {}).get("winner")
    ok.sort(key=lambda n: n != winner)
    _write_summary(out, summary)  # make_report reads experiments.json
    try:
        index = make_report([out / n for n in ok], out / "report", data_dir=summary["grid"]["data_dir"], experiments=out)
    except Exception as exc:  # the table and findings stand without the report
        return f"not written: {type(exc).__name__}: {exc}"
    return str(index.relative_to(out))
