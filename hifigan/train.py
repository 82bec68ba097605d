"""Train or fine-tune a HiFi-GAN vocoder in the official recipe.

  python -m hifigan.train --mel_dir MELS_OR_AUDIO [...] --config hifigan/configs/config_v1.json \
      --checkpoint_path runs/vocoder [--fine_tune_from universal] [--max_steps N]

AdamW (lr 2e-4, betas 0.8/0.99), ExponentialLR 0.999 per epoch, LSGAN losses of the multi-period
and multi-scale discriminators, feature matching, L1 mel loss x45 (on the `fmax_for_loss` mel),
8192-sample segments. Checkpoints `g_XXXXXXXX` ({'generator'}) and `do_XXXXXXXX` ({'mpd', 'msd',
'optim_g', 'optim_d', 'steps', 'epoch'}) in the official layout, written atomically; rerunning
with the same --checkpoint_path resumes from the latest pair. `config.json` and `mel_config.json`
are written beside them so scripts/vocode.py --checkpoint DIR finds everything.

One process (CPU or one GPU), or several under torchrun / mpiexec through the project's one
distributed helper (melcore.dist_util): DDP averages gradients, rank 0 writes and validates.
"""

from __future__ import annotations

if __name__ == "__main__":  # `python -m hifigan.train`: set up the process before torch loads
    from melcore.process import configure_process

    configure_process()

import argparse
import itertools
import json
import os
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from hifigan.env import AttrDict
from hifigan.inference import (
    check_hop,
    mel_config_from_hifigan,
    read_hifigan_config,
    universal_files,
)
from hifigan.meldataset import mel_spectrogram
from hifigan.models import (
    Generator,
    MultiPeriodDiscriminator,
    MultiScaleDiscriminator,
    architecture_keys,
    build_generator,
    discriminator_loss,
    feature_loss,
    generator_loss,
)
from hifigan.stft_loss import multi_resolution_stft_loss
from hifigan.utils import save_checkpoint, scan_checkpoint
from hifigan.vocos import is_vocos
from melcore import dist_util
from melcore.atomic import write_json
from melcore.checkpoint_io import add_trust_flag, load_checkpoint
from melcore.errors import UserError, cli_main
from melcore.mel_config import ANALYSIS_FIELDS, MelConfig
from melcore.run_lock import lock_run_folder


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_trust_flag(p)
    p.add_argument("--mel_dir", nargs="+", required=True, help="mel sets (their clips' audio) or audio folders")
    p.add_argument("--config", default=None, help="HiFi-GAN config JSON (default: the run's config.json)")
    p.add_argument("--checkpoint_path", required=True, help="run folder: checkpoints, logs, configs")
    p.add_argument("--fine_tune_from", default=None, help="'universal' or a g_ checkpoint to start from")
    p.add_argument("--audio_root", default=None, help="folder the mel set's manifest sources are relative to")
    p.add_argument("--max_steps", type=int, default=None, help="stop once steps 0..N-1 have run")
    p.add_argument("--training_epochs", type=int, default=3100)
    p.add_argument("--batch_size", type=int, default=None, help="override the config's batch_size")
    p.add_argument("--num_workers", type=int, default=None, help="override the config's num_workers")
    p.add_argument("--stdout_interval", type=int, default=5)
    p.add_argument("--checkpoint_interval", type=int, default=5000)
    p.add_argument("--summary_interval", type=int, default=100)
    p.add_argument("--validation_interval", type=int, default=1000)
    p.add_argument("--valid_clips", type=int, default=8, help="validation clips per evaluation")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    return p.parse_args(argv)


def load_run_config(a: argparse.Namespace) -> AttrDict:
    """The config to train with: --config, else the run's own config.json; overrides applied.
    A run resumed with a different architecture or analysis is refused."""
    run_cfg = Path(a.checkpoint_path) / "config.json"
    if a.config is None and not run_cfg.is_file():
        raise UserError("--config is required for a new run (e.g. hifigan/configs/config_v1.json)")
    h = read_hifigan_config(a.config or run_cfg)
    if a.config is not None and run_cfg.is_file() and scan_checkpoint(a.checkpoint_path, "g_"):
        old = read_hifigan_config(run_cfg)
        keys = dict.fromkeys(architecture_keys(old) + architecture_keys(h) + ANALYSIS_FIELDS)
        changed = [k for k in keys if old.get(k) != h.get(k)]
        if changed:
            shown = ", ".join(f"{k}: {old.get(k)!r} vs {h.get(k)!r}" for k in changed)
            raise UserError(f"--config {a.config} differs from the run's {run_cfg} ({shown}); use a new --checkpoint_path")
    if a.batch_size is not None:
        h.batch_size = a.batch_size
    if a.num_workers is not None:
        h.num_workers = a.num_workers
    if not is_vocos(h):  # a Fourier-head generator's hop is hop_size itself
        check_hop(h, str(a.config or run_cfg))
    if h.segment_size % h.hop_size:
        raise UserError(f"{a.config}: segment_size {h.segment_size} is not a multiple of hop_size {h.hop_size}")
    return h


def fine_tune_start(generator: torch.nn.Module, source: str, trust: bool = False) -> None:
    """Load the universal (or another) generator's weights into a freshly built generator."""
    if source == "universal":
        ckpt, cfg = universal_files()
        other = read_hifigan_config(cfg)
        if not isinstance(generator, Generator):
            raise UserError("--fine_tune_from universal needs a HiFi-GAN generator, not the config's "
                            f"{generator.h.get('generator')!r}")
        diff = [k for k in architecture_keys(other) if other.get(k, 80 if k == "num_mels" else None) != generator.h.get(k, 80 if k == "num_mels" else None)]
        if diff:
            raise UserError(f"--fine_tune_from universal needs the V1 architecture; the config differs in {diff}")
    else:
        ckpt = source
    state = load_checkpoint(ckpt, trust=trust)
    try:
        generator.load_state_dict(state["generator"], strict=True)
    except (KeyError, RuntimeError) as exc:
        raise UserError(f"--fine_tune_from {source}: weights do not fit this config's generator ({str(exc)[:200]})") from None


class Run:
    """Models, optimisers, schedulers and the step/epoch counters of one training run."""

    def __init__(
        self,
        h: AttrDict,
        device: str,
        checkpoint_path: str | os.PathLike,
        fine_tune_from: str | None = None,
        trust: bool = False,
    ):
        self.h, self.device, self.dir = h, torch.device(device), Path(checkpoint_path)
        torch.manual_seed(h.get("seed", 1234))
        self.generator = build_generator(h).to(self.device)
        # Keys not in official configs (their defaults give the official recipe):
        # "adversarial": false trains on the spectral losses alone (no discriminators);
        # "stft_loss_weight" adds the multi-resolution STFT loss; "discriminator_divisor"
        # narrows the discriminators (CPU runs and smoke tests).
        self.adversarial = bool(h.get("adversarial", True))
        self.stft_weight = float(h.get("stft_loss_weight", 0.0))
        self.mpd = self.msd = self.optim_d = self.sched_d = None
        if self.adversarial:
            div = int(h.get("discriminator_divisor", 1))
            self.mpd = MultiPeriodDiscriminator(div).to(self.device)
            self.msd = MultiScaleDiscriminator(div).to(self.device)
        cp_g, cp_do = scan_checkpoint(self.dir, "g_"), scan_checkpoint(self.dir, "do_")
        state_do = None
        self.steps, last_epoch = 0, -1
        if cp_g is not None and cp_do is not None:
            self.generator.load_state_dict(load_checkpoint(cp_g, self.device, trust=trust)["generator"])
            state_do = load_checkpoint(cp_do, self.device, trust=trust)
            if self.adversarial:
                self.mpd.load_state_dict(state_do["mpd"])
                self.msd.load_state_dict(state_do["msd"])
            self.steps, last_epoch = state_do["steps"] + 1, state_do["epoch"]
            print(f"resuming from {cp_g} / {cp_do} at step {self.steps}")
        elif fine_tune_from:
            fine_tune_start(self.generator, fine_tune_from, trust)
            self.generator.to(self.device)
        betas = (h.adam_b1, h.adam_b2)
        self.optim_g = torch.optim.AdamW(self.generator.parameters(), h.learning_rate, betas=betas)
        if self.adversarial:
            self.optim_d = torch.optim.AdamW(itertools.chain(self.msd.parameters(), self.mpd.parameters()),
                                             h.learning_rate, betas=betas)
        if state_do is not None:
            self.optim_g.load_state_dict(state_do["optim_g"])
            if self.adversarial:
                self.optim_d.load_state_dict(state_do["optim_d"])
        self.sched_g = torch.optim.lr_scheduler.ExponentialLR(self.optim_g, gamma=h.lr_decay, last_epoch=last_epoch)
        if self.adversarial:
            self.sched_d = torch.optim.lr_scheduler.ExponentialLR(self.optim_d, gamma=h.lr_decay,
                                                                  last_epoch=last_epoch)
        self.epoch = max(0, last_epoch)

    def distribute(self) -> None:
        """Wrap the three networks in DistributedDataParallel (as the official train.py does)."""
        from torch.nn.parallel import DistributedDataParallel as DDP

        ids = [self.device.index] if self.device.type == "cuda" else None
        self.generator = DDP(self.generator, device_ids=ids)
        if self.adversarial:
            self.mpd = DDP(self.mpd, device_ids=ids)
            self.msd = DDP(self.msd, device_ids=ids)

    def step_schedulers(self) -> None:
        """The per-epoch learning-rate decay."""
        self.sched_g.step()
        if self.sched_d is not None:
            self.sched_d.step()

    def step(self, x: torch.Tensor, y: torch.Tensor, y_mel: torch.Tensor) -> dict[str, float]:
        """One discriminator and one generator update on a batch (mel, audio, loss mel)."""
        h = self.h
        x, y, y_mel = x.to(self.device), y.to(self.device).unsqueeze(1), y_mel.to(self.device)
        y_g_hat = self.generator(x)
        y_g_hat_mel = mel_spectrogram(y_g_hat.squeeze(1), h.n_fft, h.num_mels, h.sampling_rate, h.hop_size,
                                      h.win_size, h.fmin, h.get("fmax_for_loss"))
        if not self.adversarial:
            return self._spectral_step(y, y_g_hat, y_mel, y_g_hat_mel)
        self.optim_d.zero_grad()
        y_df_r, y_df_g, _, _ = self.mpd(y, y_g_hat.detach())
        loss_disc_f, _, _ = discriminator_loss(y_df_r, y_df_g)
        y_ds_r, y_ds_g, _, _ = self.msd(y, y_g_hat.detach())
        loss_disc_s, _, _ = discriminator_loss(y_ds_r, y_ds_g)
        loss_disc_all = loss_disc_s + loss_disc_f
        loss_disc_all.backward()
        self.optim_d.step()

        self.optim_g.zero_grad()
        loss_mel = F.l1_loss(y_mel, y_g_hat_mel) * 45
        _, y_df_g, fmap_f_r, fmap_f_g = self.mpd(y, y_g_hat)
        _, y_ds_g, fmap_s_r, fmap_s_g = self.msd(y, y_g_hat)
        loss_fm = feature_loss(fmap_f_r, fmap_f_g) + feature_loss(fmap_s_r, fmap_s_g)
        loss_gen_f, _ = generator_loss(y_df_g)
        loss_gen_s, _ = generator_loss(y_ds_g)
        loss_gen_all = loss_gen_s + loss_gen_f + loss_fm + loss_mel
        loss_stft = self._stft_loss(y, y_g_hat)
        loss_gen_all = loss_gen_all + self.stft_weight * loss_stft
        loss_gen_all.backward()
        self.optim_g.step()
        return {"gen_loss_total": loss_gen_all.item(), "mel_spec_error": loss_mel.item() / 45,
                "disc_loss_total": loss_disc_all.item(), "feature_loss": loss_fm.item(),
                "stft_loss": loss_stft.item()}

    def _stft_loss(self, y: torch.Tensor, y_g_hat: torch.Tensor) -> torch.Tensor:
        if not self.stft_weight:
            return y.new_zeros(())
        return multi_resolution_stft_loss(y_g_hat.squeeze(1), y.squeeze(1))

    def _spectral_step(self, y, y_g_hat, y_mel, y_g_hat_mel) -> dict[str, float]:
        """A generator update on L1 mel x45 (+ the weighted multi-resolution STFT loss)."""
        self.optim_g.zero_grad()
        loss_mel = F.l1_loss(y_mel, y_g_hat_mel) * 45
        loss_stft = self._stft_loss(y, y_g_hat)
        loss_gen_all = loss_mel + self.stft_weight * loss_stft
        loss_gen_all.backward()
        self.optim_g.step()
        return {"gen_loss_total": loss_gen_all.item(), "mel_spec_error": loss_mel.item() / 45,
                "stft_loss": loss_stft.item()}

    def save(self) -> None:
        # Unwrapped state_dicts: the official keys, with no DDP "module." prefix.
        save_checkpoint(self.dir / f"g_{self.steps:08d}", {"generator": _bare(self.generator).state_dict()})
        state = {"optim_g": self.optim_g.state_dict(), "steps": self.steps, "epoch": self.epoch}
        if self.adversarial:
            state.update(mpd=_bare(self.mpd).state_dict(), msd=_bare(self.msd).state_dict(),
                         optim_d=self.optim_d.state_dict())
        save_checkpoint(self.dir / f"do_{self.steps:08d}", state)

    @torch.no_grad()
    def validate(self, valid, limit: int, writer=None) -> float:
        """Mean L1 between the loss mels of whole validation clips and of their vocoded audio."""
        h = self.h
        generator = _bare(self.generator)  # rank 0 alone validates: no DDP collectives here
        generator.eval()
        errors = []
        for i in range(min(limit, len(valid))):
            x, y, y_mel = valid[i]
            y_g_hat = generator(x[None].to(self.device))
            y_hat_mel = mel_spectrogram(y_g_hat.squeeze(1), h.n_fft, h.num_mels, h.sampling_rate, h.hop_size,
                                        h.win_size, h.fmin, h.get("fmax_for_loss"))
            n = min(y_mel.shape[-1], y_hat_mel.shape[-1])
            errors.append(float(F.l1_loss(y_mel[None, :, :n].to(self.device), y_hat_mel[..., :n])))
            if writer is not None and i < 3:
                if self.steps == 0:
                    writer.add_audio(f"gt/y_{i}", y[None], self.steps, h.sampling_rate)
                writer.add_audio(f"generated/y_hat_{i}", y_g_hat[0].cpu(), self.steps, h.sampling_rate)
        generator.train()
        err = sum(errors) / max(1, len(errors))
        if writer is not None:
            writer.add_scalar("validation/mel_spec_error", err, self.steps)
        return err


def _bare(module: torch.nn.Module) -> torch.nn.Module:
    return getattr(module, "module", module)


def _prepare_run(a: argparse.Namespace, main_rank: bool) -> tuple[AttrDict, dict, MelConfig, Path]:
    """The run's config, its clips, the vocoder's mel config and folder (configs written)."""
    from hifigan.train_data import clips_from_dirs

    h = load_run_config(a)
    clips, set_config = clips_from_dirs(a.mel_dir, a.audio_root)
    mel_config = mel_config_from_hifigan(h, set_config)
    if set_config is not None and set_config.differences(mel_config, ANALYSIS_FIELDS):
        print(f"note: the mel set's analysis ({set_config.preset}) differs from the vocoder's "
              f"({mel_config.preset}); training reads the clips' audio, so the vocoder will expect "
              f"{mel_config.preset} mels")
    out = Path(a.checkpoint_path)
    out.mkdir(parents=True, exist_ok=True)
    if main_rank:
        write_json(out / "config.json", dict(h))
        mel_config.save(out / "mel_config.json")
    return h, clips, mel_config, out


def _loader(trainset, h: AttrDict, world: int, device: torch.device):
    """The training DataLoader and, with several processes, its DistributedSampler."""
    from torch.utils.data import DataLoader

    if len(trainset) < h.batch_size:
        raise UserError(f"--mel_dir: {len(trainset)} training clips, fewer than batch_size {h.batch_size}; lower --batch_size")
    sampler = None
    if world > 1:
        from torch.utils.data.distributed import DistributedSampler

        sampler = DistributedSampler(trainset, shuffle=True, seed=int(h.get("seed", 1234)), drop_last=True)
    loader = DataLoader(trainset, batch_size=h.batch_size, shuffle=sampler is None, sampler=sampler, drop_last=True,
                        num_workers=h.get("num_workers", 0), pin_memory=device.type == "cuda",
                        persistent_workers=h.get("num_workers", 0) > 0)
    return loader, sampler


def _run_epochs(run: Run, loader, sampler, validset, a: argparse.Namespace, writer, main_rank: bool) -> dict:
    """The official loop: epochs of steps with checkpoints, summaries and validation."""
    from tqdm import tqdm

    history: dict[str, list] = {"mel_spec_error": [], "gen_loss_total": [], "validation": []}
    max_steps = a.max_steps if a.max_steps is not None else float("inf")
    bar = tqdm(total=None if a.max_steps is None else max(0, a.max_steps - run.steps),
               desc="hifigan", unit="step", disable=not main_rank)
    done = run.steps >= max_steps
    while not done and run.epoch < a.training_epochs:
        if sampler is not None:
            sampler.set_epoch(run.epoch)
        for x, y, y_mel in loader:
            t0 = time.time()
            losses = run.step(x, y, y_mel)
            for k in ("mel_spec_error", "gen_loss_total"):
                history[k].append(losses[k])
            if run.steps % a.stdout_interval == 0:
                bar.set_postfix(gen=f"{losses['gen_loss_total']:.3f}", mel=f"{losses['mel_spec_error']:.3f}",
                                sb=f"{time.time() - t0:.2f}")
            last = run.steps + 1 >= max_steps
            if main_rank and ((run.steps % a.checkpoint_interval == 0 and run.steps != 0) or last):
                run.save()
            if main_rank and run.steps % a.summary_interval == 0:
                for k, v in losses.items():
                    writer.add_scalar(f"training/{k}", v, run.steps)
            if main_rank and (run.steps % a.validation_interval == 0 or last):
                history["validation"].append((run.steps, run.validate(validset, a.valid_clips, writer)))
            bar.update(1)
            if last:
                done = True
                break
            run.steps += 1
        if not done:
            run.step_schedulers()
            run.epoch += 1
    bar.close()
    return history


def train(a: argparse.Namespace) -> dict:
    """Run training per the flags; returns a summary (steps run, losses, validation errors)."""
    # One process, or many under torchrun / mpiexec (melcore.dist_util): each rank trains on
    # its shard, gradients are averaged by DDP, only rank 0 writes and validates.
    dist_util.setup_dist()
    # One owner per run folder: rank 0 locks --checkpoint_path, the others wait for its answer.
    with lock_run_folder(a.checkpoint_path, "vocoder training", flag="--checkpoint_path"):
        with dist_util.stop_on_dead_rank():  # a dead rank: one line, not a hang
            return _train(a)


def _train(a: argparse.Namespace) -> dict:
    from torch.utils.tensorboard import SummaryWriter

    from hifigan.train_data import AudioSegments

    world, main_rank = dist_util.get_world_size(), dist_util.is_main()
    device = str(dist_util.dev()) if world > 1 else a.device
    h, clips, mel_config, out = _prepare_run(a, main_rank)
    run = Run(h, device, out, a.fine_tune_from, a.trust_checkpoint)
    if world > 1:
        run.distribute()
    trainset = AudioSegments(clips["train"], h, mel_config, train=True)
    validset = AudioSegments(clips["valid"], h, mel_config, train=False)
    loader, sampler = _loader(trainset, h, world, run.device)
    writer = SummaryWriter(str(out / "logs")) if main_rank else None
    start_step = run.steps
    history = _run_epochs(run, loader, sampler, validset, a, writer, main_rank)
    summary = {"start_step": start_step, "last_step": run.steps, "epoch": run.epoch, "world_size": world,
               **history}
    if main_rank:
        writer.close()
        write_json(out / "train_summary.json", summary)
    dist_util.barrier()  # the checkpoint is on disk before any rank returns
    return summary


@cli_main
def main(argv=None) -> None:
    a = parse_args(argv)
    s = train(a)
    val = s["validation"][-1][1] if s["validation"] else float("nan")
    print(f"trained steps {s['start_step']}..{s['last_step']} in {a.checkpoint_path}; "
          f"validation mel error {val:.3f}")
    print(json.dumps({"checkpoint_path": a.checkpoint_path, "last_step": s["last_step"]}))


if __name__ == "__main__":
    main()
