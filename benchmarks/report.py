"""Render benchmarks/results/*.json as one Markdown table set (RESULTS.md), and print it.

python benchmarks/report.py benchmarks/results [--out benchmarks/results/RESULTS.md]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from melcore.errors import UserError, cli_main  # noqa: E402

# (file, key path, goal, comparison) -> the goals table
GOALS = [
    (
        "train",
        ("ratio",),
        2.0,
        ">=",
        "training step samples/s vs upstream mode, 2 CPU cores",
        "cpu",
    ),
    (
        "train",
        ("ratio",),
        2.5,
        ">=",
        "training step samples/s vs upstream mode, GPU (bf16)",
        "cuda",
    ),
    ("train", ("peak_mb_ratio",), 0.7, "<=", "training peak memory vs upstream mode", None),
    (
        "vocoder",
        ("variants", "v1", "x_realtime"),
        5.0,
        ">=",
        "V1 vocoder x real time, 2 CPU cores",
        "cpu",
    ),
    (
        "vocoder",
        ("variants", "v3", "x_realtime"),
        50.0,
        ">=",
        "V3 vocoder x real time, 2 CPU cores",
        "cpu",
    ),
    ("scale", ("goals", "open_s"), 10.0, "<=", "MelSet open of the largest packed set (s)", None),
    ("scale", ("goals", "open_peak_rss_mb"), 1024.0, "<=", "peak RSS opening that set (MB)", None),
    ("scale", ("goals", "first_batch_s"), 30.0, "<=", "training loader's first batch on it (s)", None),
]


def fmt(x, digits: int = 3) -> str:
    if isinstance(x, bool) or x is None:
        return str(x)
    if isinstance(x, int):
        return str(x)
    if isinstance(x, float):
        return f"{x:.{digits}g}" if abs(x) < 1000 else f"{x:,.0f}"
    return str(x)


def table(header: list[str], rows: list[list]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(fmt(c) for c in row) + " |" for row in rows]
    return lines


def _is_cuda(r: dict) -> bool:
    return "cpu" not in r.get("device", "").lower() and "threads of" not in r.get("device", "")


def train_section(r: dict) -> list[str]:
    rows = []
    entries = [r] + [
        v for k, v in sorted(r.items()) if k.startswith("batch") and isinstance(v, dict)
    ]
    for e in entries:
        rows.append(
            [
                e["batch"],
                e["samples_per_s"],
                e["baseline_samples_per_s"],
                f"**{fmt(e['ratio'])}x**",
                e.get("ratio_cpu_time"),
                round(e["peak_mb"]),
                round(e["baseline_peak_mb"]),
                e["peak_mb_ratio"],
            ]
        )
    return [
        f"### Training step ({r['device']})",
        "",
        f"fast mode: {r['mode']}; baseline: {r['baseline_mode']}. {r.get('timing', '')}; "
        f"peak memory: {r.get('peak_memory', '')}.",
        "",
        *table(
            [
                "batch",
                "samples/s",
                "baseline samples/s",
                "ratio",
                "ratio (CPU time)",
                "peak MB",
                "baseline peak MB",
                "memory ratio",
            ],
            rows,
        ),
    ]


def sample_section(r: dict) -> list[str]:
    rows = [
        [
            b,
            e["ddim50_x_realtime"],
            e["ddim50_rtf"],
            e["ddim50_seconds"],
            e["ancestral1000_seconds"],
            f"**{fmt(e['ratio_vs_ancestral1000'])}x**",
        ]
        for b, e in r["batches"].items()
    ]
    return [
        f"### Sampling ({r['device']})",
        "",
        f"DDIM-50 in {r['mode']} vs {r['baseline_mode']}. {r['note']}.",
        "",
        *table(
            [
                "batch",
                "DDIM-50 x real time",
                "RTF (wall/audio)",
                "DDIM-50 s",
                "ancestral-1000 s",
                "speed-up vs ancestral",
            ],
            rows,
        ),
    ]


def vocoder_section(r: dict) -> list[str]:
    rows = [
        [
            v,
            e["x_realtime"],
            e["rtf"],
            e["baseline_x_realtime"],
            f"**{fmt(e['ratio'])}x**",
            e.get("x_realtime_per_cpu_s"),
        ]
        for v, e in r["variants"].items()
    ]
    return [
        f"### Vocoder ({r['device']})",
        "",
        f"{r['mode']} vs baseline {r['baseline_mode']}; {r['note']}.",
        "",
        *table(
            [
                "variant",
                "x real time",
                "RTF",
                "baseline x real time",
                "ratio",
                "x real time per CPU second",
            ],
            rows,
        ),
    ]


def data_section(r: dict) -> list[str]:
    rows = [[k, v] for k, v in r.items() if isinstance(v, int | float) and not isinstance(v, bool)]
    return ["### Data pipeline (bench_data.py)", "", *table(["measure", "value"], rows)]


def scale_section(r: dict) -> list[str]:
    from benchmarks.bench_scale import markdown

    clips = r.get("goals", {}).get("clips")
    title = f"### Scale (bench_scale.py, largest packed set {clips:,} clips)" if clips else "### Scale (bench_scale.py)"
    return [title, "", markdown(r).rstrip()]


def goals_section(results: dict) -> list[str]:
    rows = []
    for name, path, goal, op, what, device in GOALS:
        r = results.get(name)
        if r is None:
            continue
        cuda = _is_cuda(r)
        if device is not None and (device == "cuda") != cuda:
            continue
        value = r
        for key in path:
            value = value.get(key) if isinstance(value, dict) else None
        if not isinstance(value, int | float):
            continue
        met = value >= goal if op == ">=" else value <= goal
        rows.append([what, f"{op} {goal:g}", value, "yes" if met else "**no**"])
    return ["### Goals", "", *table(["goal", "target", "measured", "met"], rows)] if rows else []


def render(results: dict[str, dict]) -> str:
    loads = sorted(
        {
            r.get("load_average_1min")
            for r in results.values()
            if r.get("load_average_1min") is not None
        }
    )
    lines = ["# Benchmark results", ""]
    if loads:
        lines += [
            f"1-minute load average during the runs: {', '.join(fmt(x) for x in loads)} "
            "(other jobs on the machine slow wall-clock numbers; ratios are measured turn about "
            "in one run).",
            "",
        ]
    if any(r.get("quick") for r in results.values()):
        lines += ["**--quick run: tiny sizes, not representative.**", ""]
    sections = [
        ("train", train_section),
        ("sample", sample_section),
        ("vocoder", vocoder_section),
        ("data", data_section),
        ("scale", scale_section),
    ]
    for name, fn in sections:
        if name in results:
            lines += fn(results[name]) + [""]
    lines += goals_section(results)
    return "\n".join(lines).rstrip() + "\n"


def load_results(folder: Path) -> dict[str, dict]:
    if not folder.is_dir():
        raise UserError(f"{folder}: no such results folder; run benchmarks/run_all.sh first")
    out = {}
    for path in sorted(folder.glob("*.json")):
        try:
            out[path.stem] = json.loads(path.read_text())
        except json.JSONDecodeError as exc:
            raise UserError(f"{path}: not valid JSON ({exc}); rerun its benchmark") from None
    if not out:
        raise UserError(f"{folder}: no *.json results; run benchmarks/run_all.sh first")
    return out


@cli_main
def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.strip().split("\n\n")[0])
    ap.add_argument("folder", nargs="?", default=str(Path(__file__).resolve().parent / "results"))
    ap.add_argument("--out", default=None, help="also write the Markdown here")
    args = ap.parse_args(argv)
    text = render(load_results(Path(args.folder)))
    if args.out:
        from melcore.atomic import write_text

        write_text(args.out, text)
    print(text, end="")


if __name__ == "__main__":
    main()
