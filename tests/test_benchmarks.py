"""The benchmarks run end to end in --quick mode and write complete, finite results; the
speed modes they time compute the same losses, gradients and updates as upstream's mode.

No timing assertions: speed depends on the machine.
"""

import json
import math
import sys
from pathlib import Path

import pytest
import torch

from improved_diffusion import fast
from improved_diffusion.script_util import create_model_and_diffusion, model_and_diffusion_defaults

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks import bench_sample, bench_scale, bench_train, bench_vocoder, report  # noqa: E402


def _positive_finite(d: dict, keys) -> None:
    for k in keys:
        assert isinstance(d[k], int | float) and math.isfinite(d[k]) and d[k] > 0, (k, d[k])


@pytest.fixture(scope="module")
def results(tmp_path_factory):
    out = tmp_path_factory.mktemp("bench")
    bench_train.main(["--quick", "--json", str(out / "train.json")])
    bench_sample.main(["--quick", "--json", str(out / "sample.json")])
    bench_vocoder.main(["--quick", "--variants", "v3", "--json", str(out / "vocoder.json")])
    return out


def test_bench_train_json(results):
    r = json.loads((results / "train.json").read_text())
    _positive_finite(
        r,
        [
            "samples_per_s",
            "peak_mb",
            "baseline_samples_per_s",
            "baseline_peak_mb",
            "ratio",
            "ratio_cpu_time",
            "peak_mb_ratio",
        ],
    )
    assert r["ratio"] == pytest.approx(r["samples_per_s"] / r["baseline_samples_per_s"])
    assert r["device"] and r["mode"] != r["baseline_mode"]
    assert "einsum" in r["baseline_mode"] and "sdpa" in r["mode"]
    assert r["quick"] is True and r["batch"] == 2


def test_bench_sample_json(results):
    r = json.loads((results / "sample.json").read_text())
    _positive_finite(r, ["x_realtime", "ratio", "audio_s_per_note"])
    assert set(r["batches"]) == {"1", "2"}
    for e in r["batches"].values():
        _positive_finite(
            e,
            ["ddim50_x_realtime", "ddim50_rtf", "ancestral1000_seconds", "ratio_vs_ancestral1000"],
        )
        # extrapolation bookkeeping: totals are per-step times x chain lengths
        assert e["ddim50_seconds"] == pytest.approx(50 * e["ddim_step_s"])
        assert e["ancestral1000_seconds"] == pytest.approx(1000 * e["ancestral_step_s"])
        assert e["ddim50_rtf"] == pytest.approx(1 / e["ddim50_x_realtime"])
    assert "extrapolated" in r["note"]


def test_bench_vocoder_json(results):
    r = json.loads((results / "vocoder.json").read_text())
    assert set(r["variants"]) == {"v3"}
    v3 = r["variants"]["v3"]
    _positive_finite(v3, ["x_realtime", "rtf", "baseline_x_realtime", "ratio", "audio_s"])
    assert v3["sampling_rate"] == 22050 and v3["audio_s"] == pytest.approx(
        v3["frames"] * 256 / 22050
    )


def test_report_renders_every_section(results, capsys):
    report.main([str(results), "--out", str(results / "RESULTS.md")])
    text = (results / "RESULTS.md").read_text()
    assert text == capsys.readouterr().out
    for heading in ("### Training step", "### Sampling", "### Vocoder", "### Goals", "--quick"):
        assert heading in text
    train = json.loads((results / "train.json").read_text())
    assert f"**{report.fmt(train['ratio'])}x**" in text


def test_bench_scale_tiny_sizes(tmp_path, capsys):
    """200 and 400 clips, both layouts, each measured in its own process: complete rows with
    sane numbers, the sets removed afterwards, the table printed."""
    work = tmp_path / "work"
    bench_scale.main(["--sizes", "200,400", "--prep_clips", "8", "--batches", "2", "--quiet",
                      "--work_dir", str(work), "--json", str(tmp_path / "scale.json")])
    r = json.loads((tmp_path / "scale.json").read_text())
    assert r["sizes"] == [200, 400] and r["layouts"] == ["packed", "files"]
    assert [(row["clips"], row["layout"]) for row in r["rows"]] == [
        (200, "packed"), (200, "files"), (400, "packed"), (400, "files")]
    for row in r["rows"]:
        o, ld = row["open"], row["loader"]
        assert o["clips"] == row["clips"] and o["layout"] == row["layout"]
        assert ld["clips"] == round(0.9 * row["clips"])  # the train split
        assert ld["batch_shape"] == [1, 1, 80, 64] and ld["num_workers"] == 2
        _positive_finite(o, ["open_s", "peak_rss_mb", "start_rss_mb", "load_average_1min"])
        _positive_finite(ld, ["first_batch_s", "peak_rss_mb", "worker_private_mb", "batches_per_s"])
        assert o["peak_rss_mb"] >= o["start_rss_mb"] and o["open_s"] < 60
        assert (row["pack_s"] is not None) == (row["layout"] == "packed")
        p = r["prep"]
        assert row["prep_s_extrapolated"] == pytest.approx(p["fixed_s"] + row["clips"] / p["marginal_clips_per_s"])
    assert [q["clips"] for q in r["prep"]["runs"]] == [4, 8] and r["prep"]["runs"][0]["rejected"] == 0
    assert r["goals"]["clips"] == 400 and r["goals"]["open_under_10_s"] is True
    assert not list(work.iterdir())  # no --keep: the sets are gone
    assert "| 400 | files |" in capsys.readouterr().err
    text = report.render({"scale": r})  # RESULTS.md: the table and the three goals
    assert "### Scale" in text and "| 400 | packed |" in text
    assert text.count("largest packed set") == 2 and "first batch on it" in text


def test_bench_scale_flags(capsys):
    with pytest.raises(SystemExit) as exc:
        bench_scale.main(["--help"])
    assert exc.value.code == 0 and "--layouts" in capsys.readouterr().out
    for flags in (["--layouts", "packed,zip"], ["--sizes", "10,x"]):
        with pytest.raises(SystemExit) as exc:
            bench_scale.main(flags)
        assert exc.value.code == 2
    assert "--layouts" in capsys.readouterr().err
    # 100 clips in 3 s, 400 in 6 s: 2 s fixed + 100 clips/s
    fit = bench_scale.prep_fit([{"clips": 100, "seconds": 3.0}, {"clips": 400, "seconds": 6.0}])
    assert fit == pytest.approx({"marginal_clips_per_s": 100.0, "fixed_s": 2.0})


def test_report_refuses_empty_folder(tmp_path):
    from melcore.errors import UserError

    with pytest.raises(UserError, match="run benchmarks/run_all.sh"):
        report.load_results(tmp_path)


# -- the modes' numerics ------------------------------------------------------------------
def _tiny(mode: fast.SpeedMode, seed: int = 0):
    flags = {**model_and_diffusion_defaults(), **bench_train.QUICK}
    torch.manual_seed(seed)
    model, diffusion = create_model_and_diffusion(**flags)
    return fast.apply_to_model(model, mode), diffusion


def _loss_and_grads(mode: fast.SpeedMode, device: str = "cpu"):
    model, diffusion = _tiny(mode)
    model.to(device)
    # zero_module'd output layers would make most gradients exactly zero: perturb them.
    with torch.no_grad():
        g = torch.Generator().manual_seed(3)
        for p in model.parameters():
            p.add_(torch.randn(p.shape, generator=g) * 0.02)
    x = (torch.rand(2, 1, 16, 16, generator=torch.Generator().manual_seed(1)) * 2 - 1).to(device)
    t = torch.tensor([10, 700], device=device)
    noise = torch.randn(x.shape, generator=torch.Generator().manual_seed(2)).to(device)
    with fast.autocast(mode, device):
        loss = diffusion.training_losses(model, fast.prepare_input(x, mode), t, noise=noise)[
            "loss"
        ].mean()
    loss.backward()
    return loss.detach().cpu(), [p.grad.detach().float().cpu() for p in model.parameters()]


def _cos(a: torch.Tensor, b: torch.Tensor) -> float:
    return float(torch.nn.functional.cosine_similarity(a.flatten(), b.flatten(), dim=0))


def test_fast_cpu_mode_matches_upstream_in_fp32():
    ref_loss, ref_grads = _loss_and_grads(fast.UPSTREAM)
    for mode in (fast.fastest_mode("cpu", "fp32"), fast.SpeedMode(channels_last=True)):
        loss, grads = _loss_and_grads(mode)
        # same maths, different kernels/layouts: float32 rounding only
        assert loss.item() == pytest.approx(ref_loss.item(), rel=1e-5)
        flat, ref = (
            torch.cat([g.flatten() for g in grads]),
            torch.cat([g.flatten() for g in ref_grads]),
        )
        assert torch.allclose(flat, ref, rtol=1e-3, atol=1e-5 * ref.abs().max().item())


@pytest.mark.parametrize("channels_last", [False, True])
def test_bf16_autocast_within_stated_tolerance(channels_last):
    """bf16 autocast (the CUDA and AMX-CPU fast modes' precision, channels_last as they use it)
    vs fp32: loss within 2% relative and the full gradient within cosine similarity 0.99 (bf16
    keeps 8 mantissa bits; GroupNorm and the loss stay float32)."""
    ref_loss, ref_grads = _loss_and_grads(fast.UPSTREAM)
    loss, grads = _loss_and_grads(fast.SpeedMode(precision="bf16", channels_last=channels_last))
    assert loss.dtype == torch.float32
    assert loss.item() != ref_loss.item()  # it did run in bf16
    assert loss.item() == pytest.approx(ref_loss.item(), rel=2e-2)
    assert (
        _cos(torch.cat([g.flatten() for g in grads]), torch.cat([g.flatten() for g in ref_grads]))
        > 0.99
    )


@pytest.mark.parametrize(
    "avx512_bf16, amx, want", [(False, False, ""), (True, False, "avx512_bf16"), (True, True, "amx")]
)
def test_cpu_bf16_units_reads_the_cpu_probes(monkeypatch, avx512_bf16, amx, want):
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: avx512_bf16)
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: amx)
    assert fast.cpu_bf16_units() == want
    monkeypatch.delattr(torch.cpu, "_is_avx512_bf16_supported")
    assert fast.cpu_bf16_units() == ""  # a torch without the probe: no bf16 assumed


@pytest.mark.parametrize(
    "units, want",
    [("", ("fp32", False)), ("avx512_bf16", ("bf16", True)), ("amx", ("bf16", True))],
)
def test_fastest_cpu_mode_follows_the_cpus_bf16_units(monkeypatch, units, want):
    """bf16 + channels_last where the CPU does bf16 arithmetic (AMX: 1.4-1.9x faster steps;
    AVX-512 bf16 on Zen 4: 1.7x); elsewhere fp32 NCHW (bf16 was ~5x slower on AVX2). An explicit precision always wins,
    and "auto" resolves to the mode's precision."""
    monkeypatch.setattr(fast, "cpu_bf16_units", lambda: units)
    mode = fast.fastest_mode("cpu")
    assert (mode.precision, mode.channels_last) == want
    assert mode.optimizer == "foreach" and mode.attention_impl == "sdpa"
    assert fast.resolve_precision("auto", "cpu") == mode.precision
    assert fast.fastest_mode("cpu", "fp32").channels_last is False
    assert fast.sampling_mode("cpu").precision == "fp32"  # samples stay seed-for-seed fp32
    assert fast.resolve_precision("fp16", "cpu") == "fp16"
    from melcore.errors import UserError

    with pytest.raises(UserError, match="--precision.*auto"):
        fast.resolve_precision("fp8", "cpu")


@pytest.mark.gpu
def test_fast_cuda_mode_within_tolerance_of_fp32():
    """The CUDA fast mode (bf16/fp16 autocast, channels_last, SDPA) vs upstream fp32 on the
    GPU: loss within 2% relative, gradient cosine similarity > 0.99."""
    mode = fast.fastest_mode("cuda")
    assert mode.precision in ("bf16", "fp16") and mode.optimizer == "fused" and mode.channels_last
    ref_loss, ref_grads = _loss_and_grads(fast.UPSTREAM, "cuda")
    loss, grads = _loss_and_grads(mode, "cuda")
    assert loss.item() == pytest.approx(ref_loss.item(), rel=2e-2)
    assert (
        _cos(torch.cat([g.flatten() for g in grads]), torch.cat([g.flatten() for g in ref_grads]))
        > 0.99
    )


def test_optimizer_and_ema_implementations_agree():
    torch.manual_seed(0)
    shapes = [(3, 4), (5,), (2, 2, 3)]
    init = [torch.randn(s) for s in shapes]
    grads = [[torch.randn(s) for s in shapes] for _ in range(3)]
    finals, emas = {}, {}
    for impl in fast.OPTIMIZERS:
        params = [torch.nn.Parameter(p.clone()) for p in init]
        ema = [p.detach().clone() for p in params]
        mode = fast.SpeedMode(optimizer=impl, ema="loop" if impl == "loop" else "foreach")
        opt = fast.make_optimizer(params, mode, lr=1e-2, weight_decay=0.1)
        for step_grads in grads:
            for p, g in zip(params, step_grads):
                p.grad = g.clone()
            opt.step()
            fast.update_ema(ema, params, 0.9, mode)
        finals[impl] = torch.cat([p.detach().flatten() for p in params])
        emas[impl] = torch.cat([e.flatten() for e in ema])
    assert not torch.equal(finals["loop"], torch.cat([p.flatten() for p in init]))
    for impl in ("fused", "foreach"):
        assert torch.allclose(finals[impl], finals["loop"], rtol=1e-6, atol=1e-7), impl
        assert torch.allclose(emas[impl], emas["loop"], rtol=1e-6, atol=1e-7), impl
    # the EMA formula itself, one step by hand
    t, s = [torch.tensor([1.0, 2.0])], [torch.tensor([3.0, -1.0])]
    fast.update_ema(t, s, 0.75, fast.UPSTREAM)
    assert torch.equal(t[0], torch.tensor([1.5, 1.25]))


def test_apply_to_model_switches_attention_and_keeps_weights():
    model, _ = _tiny(fast.UPSTREAM)
    keys = dict(model.state_dict())
    x, t = torch.randn(1, 1, 16, 16), torch.tensor([5])
    with torch.no_grad():
        model.out[-1].weight.normal_()  # zero-initialised output: make outputs non-trivial
        ref = model(x, t)
        fast.apply_to_model(model, fast.SpeedMode(channels_last=True))
        blocks = [m for m in model.modules() if m.__class__.__name__ == "AttentionBlock"]
        assert blocks and all(b.attention_impl == "sdpa" for b in blocks)
        assert model.channels_last and model.input_blocks[0][0].weight.is_contiguous(
            memory_format=torch.channels_last
        )
        out = model(x, t)
    assert model.state_dict().keys() == keys.keys()
    assert torch.allclose(out, ref, atol=1e-5)
    fast.apply_to_model(model, fast.UPSTREAM)
    assert not model.channels_last and model.input_blocks[0][0].weight.is_contiguous()


def test_mode_names_and_errors():
    from melcore.errors import UserError

    assert fast.mode_by_name("upstream", "cpu") == fast.UPSTREAM
    assert fast.mode_by_name("fast", "cpu") == fast.fastest_mode("cpu")
    assert fast.mode_by_name("upstream", "cpu", "bf16").precision == "bf16"
    cuda = fast.SpeedMode(
        **{**fast.fastest_mode("cpu").to_dict(), "name": "x", "optimizer": "fused"}
    )
    assert cuda.optimizer == "fused"
    with pytest.raises(UserError, match="--speed_mode"):
        fast.mode_by_name("turbo", "cpu")
    with pytest.raises(UserError, match="--precision"):
        fast.SpeedMode(precision="fp8")
    assert "bf16 autocast" in fast.SpeedMode(precision="bf16").describe()


def test_prepare_for_sampling_keeps_the_checkpoints_attention():
    model, _ = _tiny(fast.UPSTREAM)  # built with einsum attention
    mode = fast.prepare_for_sampling(model, "cpu")
    assert mode.attention_impl == "einsum" and mode.precision == "fp32"
    assert all(
        m.attention_impl == "einsum" for m in model.modules() if hasattr(m, "attention_impl")
    )
    chosen = {"MELCORE_CHOSEN_OMP_WAIT_POLICY": ""}  # set on purpose: the worker keeps it
    assert fast.process_env(fast.UPSTREAM) == {"OMP_WAIT_POLICY": "", **chosen}
    assert fast.process_env(fast.fastest_mode("cpu")) == {"OMP_WAIT_POLICY": "PASSIVE", **chosen}


def test_bench_quality_lists_two_equal_time_arms_and_ranks_them():
    import subprocess

    from benchmarks.bench_quality import quality_grid, quality_table

    r = subprocess.run([sys.executable, "benchmarks/bench_quality.py", "--list", "--seconds", "120"],
                       capture_output=True, text=True, cwd=ROOT)
    assert r.returncode == 0, r.stderr
    assert "2 runs, 120 s of training each" in r.stdout and "upstream:" in r.stdout and "notes:" in r.stdout
    grid = quality_grid(120, 16)
    assert set(grid["arms"]) == {"upstream", "notes"} and grid["max_train_seconds"] == 120
    assert grid["arms"]["upstream"]["learn_sigma"] is True and grid["arms"]["notes"]["predict_v"] is True
    rows = [{"name": "upstream", "status": "ok", "step": 170, "train_s": 600, "position": 0.9, "fd": 500, "notes": "0/64"},
            {"name": "notes", "status": "ok", "step": 2000, "train_s": 600, "position": 0.2, "fd": 300, "notes": "20/64"}]
    table = quality_table({"rows": rows})
    assert table["notes_recipe_ahead"] is True and table["arms"]["upstream"]["step"] == 170
    rows[1]["position"] = 0.95
    assert quality_table({"rows": rows})["notes_recipe_ahead"] is False
    bad = subprocess.run([sys.executable, "benchmarks/bench_quality.py", "--seconds", "0"],
                         capture_output=True, text=True, cwd=ROOT)
    assert bad.returncode != 0 and "--seconds" in bad.stderr


def test_bench_train_baseline_is_upstreams_lean_step():
    """The baseline step trains (parameters move) and keeps an EMA at upstream's 0.9999 rate."""
    flags = {**model_and_diffusion_defaults(), **bench_train.QUICK}
    torch.manual_seed(0)
    before = [p.detach().clone() for p in create_model_and_diffusion(**flags)[0].parameters()]
    step = bench_train.build_upstream_step(flags, 2, "cpu")
    step()
    params, ema = step.params, step.ema
    moved = sum(float((p - b).abs().sum()) for p, b in zip(params, before))
    assert moved > 0
    for e, b, p in zip(ema, before, params):
        torch.testing.assert_close(e, 0.9999 * b + 0.0001 * p.detach(), rtol=1e-5, atol=1e-6)
