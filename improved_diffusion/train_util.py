"""TrainLoop: upstream's training loop with AMP, grad clipping, exact resume and safe stops.

Exact resume: the batch of step s is a function of (seed, step, rank) (see image_datasets),
and before each step the global torch/numpy generators are seeded from (seed, step, rank), so
timesteps, noise and dropout do not depend on what ran before. Together with the saved
parameters, EMA, optimizer and grad-scaler state, a run restarted from step k reaches the same
parameters as one that never stopped.
"""

from __future__ import annotations

import copy
import functools
import math
import signal
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.nn.parallel import DistributedDataParallel as DDP

from improved_diffusion import checkpoint as ckpt
from improved_diffusion import fast, script_util
from improved_diffusion import logger as logger_mod
from improved_diffusion.resample import LossAwareSampler, UniformSampler
from melcore import dist_util
from melcore.errors import UserError

PRECISIONS = fast.PRECISIONS
# Upstream's name: importable from here as it was; defined beside model_and_diffusion_defaults.
training_defaults = script_util.training_defaults


def step_seed(seed: int, step: int, rank: int) -> int:
    return int(np.random.SeedSequence([seed, step, rank]).generate_state(1)[0])


class TrainLoop:
    """Upstream's TrainLoop. Previews are the caller's: `preview(step, ema_model)` runs on
    rank 0 every `sample_interval` steps (evaluation.pipeline samples, writes and vocodes)."""

    def __init__(
        self,
        *,
        model: torch.nn.Module,
        diffusion,
        data,
        batch_size: int,
        microbatch: int = -1,
        lr: float = 1e-4,
        ema_rate: Any = "0.9999",
        log_interval: int = 10,
        save_interval: int = 10000,
        resume_checkpoint: str = "",
        use_fp16: bool = False,
        fp16_scale_growth: float = 1e-3,  # upstream's signature; torch's GradScaler grows itself
        schedule_sampler=None,
        weight_decay: float = 0.0,
        lr_anneal_steps: int = 0,
        max_steps: int = 0,
        precision: str = "fp32",
        grad_clip: float = 0.0,
        seed: int = 0,
        log_dir: str | None = None,
        keep_checkpoints: int = 0,
        keep_steps: Any = "",
        max_bad_steps: int = 10,
        val_data: torch.Tensor | None = None,
        val_interval: int = 0,
        sample_interval: int = 0,
        preview: Callable[[int, torch.nn.Module], None] | None = None,
        logger: logger_mod.Logger | None = None,
        progress: bool = True,
        speed_mode: fast.SpeedMode | None = None,
        trust_checkpoint: bool = False,
        lr_warmup_steps: int = 0,
        ema_warmup: bool = False,
        max_train_seconds: float = 0.0,
    ):
        del fp16_scale_growth
        # use_fp16: upstream's flag; "auto": the device's fastest measured precision
        precision = fast.resolve_precision("fp16" if use_fp16 else precision, dist_util.dev())
        for name, value in (("batch_size", batch_size), ("log_interval", log_interval), ("save_interval", save_interval)):
            if value <= 0:
                raise UserError(f"--{name}: must be positive, got {value}")
        self.model = model
        self.diffusion = diffusion
        self.data = data
        self.batch_size = batch_size
        self.microbatch = microbatch if microbatch > 0 else batch_size
        self.lr = lr
        self.ema_rate = ckpt.parse_rates(ema_rate)
        self.log_interval = log_interval
        self.save_interval = save_interval
        self.resume_checkpoint = resume_checkpoint
        self.precision = precision
        self.schedule_sampler = schedule_sampler or UniformSampler(diffusion)
        self.weight_decay = weight_decay
        self.lr_anneal_steps = lr_anneal_steps
        self.lr_warmup_steps = lr_warmup_steps
        self.ema_warmup = ema_warmup
        # Upstream's loop ends where the learning rate reaches 0; a larger --max_steps would
        # train on with lr 0, so the run stops at --lr_anneal_steps (said in the log).
        self.max_steps = max_steps or lr_anneal_steps
        self.stops_at_anneal = bool(lr_anneal_steps) and max_steps > lr_anneal_steps
        if self.stops_at_anneal:
            self.max_steps = lr_anneal_steps
        # A wall-time budget (0: none, upstream's behaviour); the seconds already trained travel in
        # the opt file, so a resumed run spends only what is left.
        self.max_train_seconds = float(max_train_seconds)
        self.grad_clip = grad_clip
        self.seed = seed
        self.log = logger or logger_mod.get_current()
        self.log_dir = Path(log_dir or self.log.dir or ".")
        self.keep_checkpoints = keep_checkpoints
        # Steps saved whatever save_interval says and never pruned (an early EMA to guide by).
        self.keep_steps = ckpt.parse_steps(keep_steps)
        self.max_bad_steps = max_bad_steps
        self.val_data = val_data
        self.val_interval = val_interval
        self.sample_interval = sample_interval
        self.preview = preview
        self.progress = progress
        self.trust_checkpoint = trust_checkpoint  # --trust-checkpoint, for the files resumed from
        # How the step runs (layout, attention kernel, optimizer/EMA kernels): the device's
        # fastest measured mode unless given; benchmarks/bench_train.py times this same path.
        self.speed_mode = speed_mode or fast.fastest_mode(dist_util.dev(), precision)
        self.speed_mode = self.speed_mode.with_precision(precision)  # --precision decides
        self._init_state()
        self._resume()
        self._wrap_ddp()
        if hasattr(self.data, "set_step"):
            self.data.set_step(self.step)

    def _init_state(self) -> None:
        """Device, ranks, counters, optimizer, grad scaler and fresh EMA copies."""
        self.device = dist_util.dev()
        self.rank = dist_util.get_rank()
        self.world_size = dist_util.get_world_size()
        self.global_batch = self.batch_size * self.world_size
        self.step = 0
        self.bad_steps = 0
        self.stop_signal: int | None = None
        self.stop_agreed = False  # with several processes: all ranks saw the signal
        self.train_seconds = 0.0  # wall time spent in run_loop, over every resumed session
        self.time_up = False
        self._session_start: float | None = None
        self._seconds_before = 0.0
        # Tracked in memory (not by looking at files) so every rank agrees without a shared disk.
        self.saved_step: int | None = None
        self.params = list(self.model.parameters())
        self.model.to(self.device)
        fast.apply_to_model(self.model, self.speed_mode)
        self.opt = fast.make_optimizer(self.params, self.speed_mode, lr=self.lr, weight_decay=self.weight_decay)
        self.scaler = torch.amp.GradScaler(self.device.type, enabled=self.precision == "fp16")
        self.ema_params = [[p.detach().clone() for p in self.params] for _ in self.ema_rate]

    def _wrap_ddp(self) -> None:
        if self.world_size > 1:
            self.ddp_model = DDP(
                self.model,
                device_ids=[self.device] if self.device.type == "cuda" else None,
                broadcast_buffers=False,
                find_unused_parameters=False,
            )
        else:
            self.ddp_model = self.model

    # -- resume --------------------------------------------------------------------------------
    def _resume_plan(self) -> dict | None:
        """Rank 0 picks the files to resume from (other ranks may not see the run dir)."""
        latest = ckpt.find_latest(self.log_dir, self.ema_rate)
        if latest is not None:
            model_path = self.log_dir / ckpt.model_name(latest)
        elif self.resume_checkpoint:
            model_path = Path(self.resume_checkpoint)
            if not model_path.is_file():
                raise UserError(f"--resume_checkpoint {model_path}: file does not exist")
        else:
            return None
        step = ckpt.parse_step(model_path)
        emas = {r: model_path.parent / ckpt.ema_name(r, step) for r in self.ema_rate}
        opt = model_path.parent / ckpt.opt_name(step)
        return {
            "model": str(model_path),
            "step": step,
            "complete": latest is not None,
            "ema": {r: str(p) if p.is_file() else None for r, p in emas.items()},
            "opt": str(opt) if opt.is_file() else None,
        }

    def _resume(self) -> None:
        plan = dist_util.broadcast_object(self._resume_plan() if self.rank == 0 else None)
        if plan is None:
            dist_util.sync_params(self.params)
            return
        self.step = plan["step"]
        self.saved_step = self.step if plan["complete"] else None
        self.log.log(f"resuming from {plan['model']} (step {self.step})")
        self._load_params(self.params, dist_util.load_state_dict(plan["model"], self.trust_checkpoint, map_location="cpu"))
        for rate, ema in zip(self.ema_rate, self.ema_params):
            if plan["ema"][rate]:
                self._load_params(ema, dist_util.load_state_dict(plan["ema"][rate], self.trust_checkpoint, map_location="cpu"))
            else:
                self.log.warn(f"no EMA {rate} file for step {self.step}: it restarts from the model weights")
                for e, p in zip(ema, self.params):
                    e.copy_(p.detach())
        if plan["opt"]:
            state = dist_util.load_state_dict(plan["opt"], self.trust_checkpoint, map_location="cpu")
            if "opt" not in state:  # an upstream opt file is the bare optimizer state
                state = {"opt": state}
            self.opt.load_state_dict(state["opt"])
            if "scaler" in state and self.scaler.is_enabled():
                self.scaler.load_state_dict(state["scaler"])
            self.bad_steps = int(state.get("bad_steps", 0))
            self.train_seconds = float(state.get("train_seconds", 0.0))
            if "sampler" in state:
                _load_sampler_state(self.schedule_sampler, state["sampler"])

    def _load_params(self, params: list[torch.Tensor], state: dict) -> None:
        names = [n for n, _ in self.model.named_parameters()]
        missing = [n for n in names if n not in state]
        if missing:
            raise UserError(f"checkpoint lacks parameters {missing[:3]}...; does it belong to this model?")
        with torch.no_grad():
            for p, n in zip(params, names):
                if p.shape != state[n].shape:
                    raise UserError(f"checkpoint parameter {n} has shape {tuple(state[n].shape)}, model {tuple(p.shape)}")
                p.copy_(state[n])
        dist_util.sync_params(params)

    # -- loop ----------------------------------------------------------------------------------
    def run_loop(self) -> None:
        handlers = self._install_signal_handlers()
        bar = None
        if self.progress and self.rank == 0:
            from tqdm.auto import tqdm

            bar = tqdm(total=self.max_steps or None, initial=self.step, unit="step", dynamic_ncols=True)
        if self.stops_at_anneal:
            self.log.log(f"training stops at step {self.max_steps}: --lr_anneal_steps takes the learning rate to 0 there")
        last_time, last_step = time.perf_counter(), self.step
        self._session_start, self._seconds_before = last_time, self.train_seconds
        try:
            while (not self.max_steps or self.step < self.max_steps) and not self._budget_spent():
                batch, cond = next(self.data)
                self.run_step(batch, cond)
                if bar is not None:
                    bar.update(1)
                if self.step % self.log_interval == 0:
                    now = time.perf_counter()
                    rate = (self.step - last_step) * self.global_batch / max(now - last_time, 1e-9)
                    last_time, last_step = now, self.step
                    self.log.logkv("samples_per_sec", rate)
                    kvs = self.log.dumpkvs(self.step)
                    if bar is not None:
                        bar.set_postfix(loss=f"{kvs.get('loss', float('nan')):.4f}", samples_s=f"{rate:.1f}")
                    self._sync_stop_signal()
                if self.val_interval and self.step % self.val_interval == 0:
                    self.validate()
                if self.sample_interval and self.step % self.sample_interval == 0:
                    self.write_samples()
                if self.step % self.save_interval == 0 or self.step in self.keep_steps:
                    self.save()
                stop = self.stop_agreed if self.world_size > 1 else self.stop_signal is not None
                if stop:
                    break
            if self.saved_step != self.step:
                self.save()
            if self.time_up and self.stop_signal is None:
                self.log.log(f"time budget of {self.max_train_seconds:g} s spent at step {self.step}; checkpoint saved")
            if self.stop_signal is not None:
                self.log.log(
                    f"stopped by signal {self.stop_signal} at step {self.step}; checkpoint saved, "
                    "rerun the same command to resume"
                )
        finally:
            if bar is not None:
                bar.close()
            for sig, old in handlers.items():
                signal.signal(sig, old)
            # Also on errors (a bad mel met by a worker): workers left running block the exit.
            if hasattr(self.data, "close"):
                self.data.close()

    def _install_signal_handlers(self) -> dict:
        import threading

        if threading.current_thread() is not threading.main_thread():
            return {}

        def on_signal(signum, _frame):
            # Finish the current step, then save and leave the loop; a second signal means
            # "now" (the last complete checkpoint stays valid: every write is atomic).
            if self.stop_signal is not None:
                raise KeyboardInterrupt
            self.stop_signal = signum
            self.log.log(f"signal {signum}: saving a checkpoint after this step (signal again to quit now)")

        return {sig: signal.signal(sig, on_signal) for sig in (signal.SIGINT, signal.SIGTERM)}

    def _elapsed(self) -> float:
        """Seconds spent in run_loop so far, over every resumed session."""
        if self._session_start is None:
            return self.train_seconds
        return self._seconds_before + time.perf_counter() - self._session_start

    def _budget_spent(self) -> bool:
        """True once --max_train_seconds is spent (sets time_up)."""
        self.train_seconds = self._elapsed()
        if not self.max_train_seconds or self.train_seconds < self.max_train_seconds:
            return False
        self.time_up = True
        # Several ranks' clocks differ, so they agree through the all-reduce at log steps; only a
        # budget already spent when the session began (read from the same opt file) is common.
        return self.world_size == 1 or self._seconds_before >= self.max_train_seconds

    def _sync_stop_signal(self) -> None:
        # Ranks must stop at the same step (DDP all-reduces each step): agree at log steps.
        if self.world_size == 1:
            return
        # A signal arriving after this all-reduce waits for the next log step on every rank.
        flag = torch.tensor([0 if self.stop_signal is None else self.stop_signal, int(self.time_up)],
                            device=self.device)
        torch.distributed.all_reduce(flag, op=torch.distributed.ReduceOp.MAX)
        if int(flag[0].item()):
            self.stop_signal = int(flag[0].item())
            self.stop_agreed = True
        if int(flag[1].item()):
            self.time_up = self.stop_agreed = True

    # -- one step ------------------------------------------------------------------------------
    def run_step(self, batch: torch.Tensor, cond: dict) -> None:
        s = step_seed(self.seed, self.step, self.rank)
        torch.manual_seed(s)
        np.random.seed(s % 2**32)
        self.opt.zero_grad(set_to_none=True)
        self.forward_backward(batch, cond)
        self.optimize()
        self.step += 1
        self.log.logkv("step", self.step)
        self.log.logkv("samples", self.step * self.global_batch)

    def forward_backward(self, batch: torch.Tensor, cond: dict) -> None:
        n = batch.shape[0]
        for i in range(0, n, self.microbatch):
            micro = fast.prepare_input(batch[i : i + self.microbatch].to(self.device, non_blocking=True), self.speed_mode)
            micro_cond = {k: v[i : i + self.microbatch].to(self.device, non_blocking=True) for k, v in cond.items()}
            last = i + self.microbatch >= n
            t, weights = self.schedule_sampler.sample(micro.shape[0], self.device)
            compute = functools.partial(self.diffusion.training_losses, self.ddp_model, micro, t, model_kwargs=micro_cond)
            with fast.autocast(self.speed_mode, self.device):
                if last or self.ddp_model is self.model:
                    losses = compute()
                else:
                    with self.ddp_model.no_sync():
                        losses = compute()
            if isinstance(self.schedule_sampler, LossAwareSampler):
                self.schedule_sampler.update_with_local_losses(t, losses["loss"].detach())
            # Microbatches are weighted by size so the gradient does not depend on --microbatch.
            loss = (losses["loss"].float() * weights).mean() * (micro.shape[0] / n)
            log_loss_dict(self.log, self.diffusion, t, {k: v.float() * weights for k, v in losses.items()})
            self.scaler.scale(loss).backward()

    def optimize(self) -> None:
        if self.scaler.is_enabled():
            self.scaler.unscale_(self.opt)
        max_norm = self.grad_clip if self.grad_clip > 0 else math.inf
        grad_norm = torch.nn.utils.clip_grad_norm_(self.params, max_norm, foreach=True)
        # The one host-device sync per step: a non-finite gradient must not reach the weights.
        # DDP all-reduces gradients first, so every rank takes the same decision.
        finite = bool(torch.isfinite(grad_norm))
        self._anneal_lr()
        if self.scaler.is_enabled():
            self.scaler.step(self.opt)  # skips by itself when the unscaled grads are not finite
            self.scaler.update()
            self.log.logkv("loss_scale", self.scaler.get_scale())
        elif finite:
            self.opt.step()
        if finite:
            self.bad_steps = 0
            self.log.logkv_mean("grad_norm", grad_norm)
            for rate, ema in zip(self.ema_rate, self.ema_params):
                fast.update_ema(ema, self.params, self._ema_decay(rate), self.speed_mode)
            return
        self.bad_steps += 1
        self.log.logkv_mean("skipped_steps", 1.0)
        self.log.warn(f"step {self.step + 1}: non-finite loss or gradient, step skipped ({self.bad_steps} in a row)")
        if self.bad_steps >= self.max_bad_steps:
            latest = ckpt.find_latest(self.log_dir, self.ema_rate)
            raise UserError(
                f"training diverged: {self.bad_steps} consecutive steps with non-finite loss/gradients "
                f"at step {self.step + 1}; last good checkpoint is step {latest} in {self.log_dir}; "
                "lower --lr, set --grad_clip 1.0 or use --precision fp32"
            )

    def _ema_decay(self, rate: float) -> float:
        """With --ema_warmup the average starts short ((1 + n) / (10 + n) after n steps) and
        grows to `rate`, so early weights (random ones) stop dominating a short run's EMA."""
        if not self.ema_warmup:
            return rate
        return min(rate, (1 + self.step) / (10 + self.step))

    def _anneal_lr(self) -> None:
        if not (self.lr_anneal_steps or self.lr_warmup_steps):
            return
        lr = self.lr
        if self.lr_anneal_steps:
            lr *= max(0.0, 1 - self.step / self.lr_anneal_steps)
        if self.lr_warmup_steps:
            lr *= min(1.0, (self.step + 1) / self.lr_warmup_steps)
        for group in self.opt.param_groups:
            group["lr"] = lr

    # -- checkpoints -----------------------------------------------------------------------------
    def params_to_state_dict(self, params: list[torch.Tensor]) -> dict:
        state = self.model.state_dict()
        for (name, _), p in zip(self.model.named_parameters(), params):
            state[name] = p.detach()
        return {k: v.detach().cpu().clone() for k, v in state.items()}

    def save(self) -> None:
        if self.rank == 0:
            opt_state = {
                "opt": self.opt.state_dict(),
                "scaler": self.scaler.state_dict(),
                "step": self.step,
                "bad_steps": self.bad_steps,
                "seed": self.seed,
                "train_seconds": self._elapsed(),
            }
            sampler_state = _sampler_state(self.schedule_sampler)
            if sampler_state is not None:
                opt_state["sampler"] = sampler_state
            path = ckpt.save_checkpoint(
                self.log_dir,
                self.step,
                self.params_to_state_dict(self.params),
                {r: self.params_to_state_dict(e) for r, e in zip(self.ema_rate, self.ema_params)},
                opt_state,
            )
            removed = ckpt.prune(self.log_dir, self.keep_checkpoints, self.ema_rate, self.keep_steps)
            self.log.log(f"saved {path.name}" + (f", removed {len(removed)} old files" if removed else ""))
        self.saved_step = self.step
        dist_util.barrier()

    # -- validation and samples --------------------------------------------------------------------
    def ema_model(self) -> torch.nn.Module:
        """A copy of the model holding the first EMA rate's weights (for samples)."""
        model = copy.deepcopy(self.model)
        with torch.no_grad():
            for p, e in zip(model.parameters(), self.ema_params[0]):
                p.copy_(e)
        return model.eval()

    def validate(self) -> dict[str, float]:
        out: dict[str, float] = {}
        if self.rank == 0 and self.val_data is not None:
            from improved_diffusion.evaluate import batch_losses

            self.model.eval()
            out = batch_losses(self.model, self.diffusion, self.val_data, batch_size=self.batch_size, seed=self.seed)
            self.model.train()
            for k, v in out.items():
                self.log.logkv(f"val_{k}", v)
            self.log.logkv("step", self.step)  # the row's step, so curves put it where it was taken
            self.log.dumpkvs(self.step)
        dist_util.barrier()
        return out

    def write_samples(self) -> None:
        """Hand the EMA model to the `preview` callback (rank 0; the others wait)."""
        if self.rank == 0 and self.preview is not None:
            self.preview(self.step, self.ema_model())
        dist_util.barrier()


def log_loss_dict(log: logger_mod.Logger, diffusion, ts: torch.Tensor, losses: dict) -> None:
    """Mean of each loss, and per timestep quartile, accumulated on the device (no sync)."""
    quartile = (4 * ts // diffusion.num_timesteps).clamp(max=3)
    for key, values in losses.items():
        values = values.detach()
        log.logkv_mean(key, values.mean())
        for q in range(4):
            mask = (quartile == q).to(values.dtype)
            log.logkv_mean(f"{key}_q{q}", (values * mask).sum(), count=mask.sum())


def _sampler_state(sampler) -> dict | None:
    if hasattr(sampler, "_loss_history"):
        return {"loss_history": torch.as_tensor(sampler._loss_history), "loss_counts": torch.as_tensor(sampler._loss_counts)}
    return None


def _load_sampler_state(sampler, state: dict) -> None:
    if hasattr(sampler, "_loss_history"):
        sampler._loss_history = state["loss_history"].numpy().copy()
        sampler._loss_counts = state["loss_counts"].numpy().copy()


