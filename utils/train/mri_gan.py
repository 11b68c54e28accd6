"""The MRI-GAN trainer: models, one G-then-D step, the end-of-epoch test scores, samples and curves, on top of
the shared Trainer (utils.train.trainer) and run sequence (utils.train.run). train_MRI_GAN.py calls `train`."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch import nn

from models.mri_gan import Discriminator, Generator, MRIGANLoss, init_weights
from utils.checkpoint import read_checkpoint
from utils.config import Config
from utils.csv_log import CsvLog
from utils.errors import ConfigError
from utils.evaluation.generator_scores import score_generator
from utils.fileio import write_json
from utils.infer.generator import eval_mode, to_uint8
from utils.media.grid import save_image_grid
from utils.media.mri import MRI_SIZE
from utils.names import BEST_D, BEST_G, DISCRIMINATOR_KEY, GENERATOR_KEY, PERIODIC
from utils.plotting import plot_curves
from utils.train.distributed import (
    DistContext,
    all_reduce_sum,
    broadcast_buffers,
    no_sync,
    on_every_rank,
    unwrap,
    wrap_model,
)
from utils.train.loaders import make_loader, progress
from utils.train.mri_gan_data import MRIDataset, draw_epoch, load_split, sample_items, test_rows
from utils.train.precision import MixedPrecision, training_precision
from utils.train.rng import seed_process
from utils.train.run import per_process_batch, run_training
from utils.train.tensorboard import TensorBoardLog
from utils.train.trainer import Trainer, resumed_log

STEP_COLUMNS = ["epoch", "batch", "step", "loss_G", "loss_GAN", "loss_pixel", "loss_ssim",
                "loss_D", "loss_real", "loss_fake"]
EPOCH_COLUMNS = ["epoch", "step", "test_ssim", "test_pixel", "test_loss_G", "test_loss_D", "best_G", "best_D"]


class MRIGANTraining:
    """The MRI-GAN on top of the shared Trainer: models, one G-then-D step, and the end-of-epoch report.

    "Best" checkpoints are chosen on the held-out test split once per epoch
    (docs/differences.md#best-checkpoints-and-exact-resume): best G =
    highest mean test SSIM between generated and target MRI, best D = lowest mean test D loss.
    """

    def __init__(self, cfg: Config, ctx: DistContext, run_dir: Path | None, data: tuple):
        self.cfg, self.ctx, self.run_dir = cfg, ctx, run_dir
        self.seed, self.frac = cfg["runtime.seed"], cfg["MRI_GAN.model_params.frac"]
        self.batch_size = per_process_batch(cfg["MRI_GAN.model_params.batch_size"], ctx.world_size,
                                            "MRI_GAN.model_params.batch_size")
        (self.train_reals, self.train_fakes), test_table = data
        self.test_set = MRIDataset(test_table, MRI_SIZE, self.seed, 0, flip=False)
        self.test_loader = make_loader(self.test_set, self.batch_size, ctx, seed=self.seed, training=False,
                                       workers=cfg["runtime.loader_workers"])
        seed_process(self.seed, ctx)
        generator = Generator(ngf=cfg["MRI_GAN.model_params.ngf"])
        discriminator = Discriminator(ndf=cfg["MRI_GAN.model_params.ndf"])
        generator.apply(init_weights)
        discriminator.apply(init_weights)
        self.G, self.D = wrap_model(generator, ctx), wrap_model(discriminator, ctx)
        lr, betas = cfg["MRI_GAN.model_params.lr"], (cfg["MRI_GAN.model_params.b1"], cfg["MRI_GAN.model_params.b2"])
        self.opt_G = torch.optim.Adam(self.G.parameters(), lr=lr, betas=betas)
        self.opt_D = torch.optim.Adam(self.D.parameters(), lr=lr, betas=betas)
        self.loss = MRIGANLoss(lambda_pixel=cfg["MRI_GAN.model_params.lambda_pixel"],
                               tau=cfg["MRI_GAN.model_params.tau"])
        self.precision = MixedPrecision(training_precision(cfg, ctx.device))  # the paper's FP32 unless --precision
        self.model_params = {**cfg.to_dict()["MRI_GAN"]["model_params"], "log_dir": str(run_dir)}
        self.trainer = Trainer(ctx, run_dir, {GENERATOR_KEY: self.G, DISCRIMINATOR_KEY: self.D},
                               {"optimizer_G_state_dict": self.opt_G, "optimizer_D_state_dict": self.opt_D},
                               config=cfg.to_dict(), checkpoint_every=cfg["MRI_GAN.model_params.chkpt_freq"],
                               loss_keys=("loss_G", "loss_D"), periodic_name=PERIODIC,
                               extra={"model_params": self.model_params, "log_dir": str(run_dir)},
                               precision=self.precision,
                               step_log=(cfg["MRI_GAN.model_params.losses_file"], STEP_COLUMNS),
                               on_step=self.after_step)
        self.epoch_log: CsvLog | None = None
        self.tensorboard: TensorBoardLog | None = None
        self.samples = self.sample_batch() if ctx.is_main else None  # the same test items every epoch

    def restore(self, checkpoint: dict, source: str) -> None:
        self.trainer.restore(checkpoint, source)

    def open_logs(self, history_dir: str | None = None) -> None:
        """Open the per-epoch CSV log and the TensorBoard log on rank 0 (on resume, trimmed to the checkpoint; see
        resumed_log); from then on every sample_gen_freq-th step draws a sample grid."""
        if self.ctx.is_main:
            position = self.trainer.position
            self.epoch_log = resumed_log(self.run_dir, history_dir, self.cfg["MRI_GAN.model_params.ssim_report_file"],
                                         EPOCH_COLUMNS, "epoch", position)
            self.tensorboard = TensorBoardLog(self.run_dir, position.step + 1 if position.step else None)

    def close_logs(self) -> None:
        if self.ctx.is_main:
            self.epoch_log.close()
            self.tensorboard.close()

    def after_step(self, losses: dict[str, float], step: int) -> None:
        """Per-step losses to TensorBoard; a sample grid every sample_gen_freq steps, as the original (rank 0)."""
        self.tensorboard.scalars(losses, step, "train/")
        if step % self.cfg["MRI_GAN.model_params.sample_gen_freq"] == 0:
            self.tensorboard.image("samples", self.write_samples(f"step_{step:07d}.png"), step)

    def epoch_loader(self, epoch: int, skip_batches: int):
        table = draw_epoch(self.train_reals, self.train_fakes, self.frac, self.seed, epoch)
        dataset = MRIDataset(table, MRI_SIZE, self.seed, epoch, flip=True)
        return make_loader(dataset, self.batch_size, self.ctx, seed=self.seed, epoch=epoch, skip_batches=skip_batches,
                           workers=self.cfg["runtime.loader_workers"])

    def train_step(self, batch: dict) -> dict[str, torch.Tensor]:
        """One generator update, then one discriminator update (the original's order and losses)."""
        device, n = self.ctx.device, len(batch["face"])
        face, target = batch["face"].to(device, non_blocking=True), batch["mri"].to(device, non_blocking=True)
        self.G.train()
        self.D.train()
        self.opt_G.zero_grad(set_to_none=True)
        with no_sync(self.D):  # D's gradients from the G step are discarded: no need to average them
            with self.precision.autocast():
                fake = self.G(face)
                pred_fake = self.D(fake, face)
            # losses in float32: the SSIM term squares values up to 255, beyond float16's range
            g = self.loss.generator_loss(pred_fake.float(), fake.float(), target)
            self.precision.backward(g["total"])
        self.precision.step(self.opt_G)
        self.opt_D.zero_grad(set_to_none=True)
        # real and generated pairs in one pass: instance norm works per image, so this equals two passes
        with self.precision.autocast():
            scores = self.D(torch.cat([target, fake.detach()]), torch.cat([face, face]))
        d_total, d_real, d_fake = self.loss.discriminator_loss(scores[:n].float(), scores[n:].float())
        self.precision.backward(d_total)
        self.precision.step(self.opt_D)
        self.precision.update()
        return {"loss_G": g["total"], "loss_GAN": g["gan"], "loss_pixel": g["pixel"], "loss_ssim": g["ssim"],
                "loss_D": d_total, "loss_real": d_real, "loss_fake": d_fake}

    def end_epoch(self, epoch: int) -> None:
        """Score on the test split, keep the best G and D, log, draw samples and curves."""
        loader = progress(self.test_loader, self.ctx, desc=f"test {epoch + 1}")
        for model in (self.G, self.D):  # none today (instance norm keeps no statistics), but score as saved
            broadcast_buffers(model, self.ctx)
        scores = test_scores(unwrap(self.G), unwrap(self.D), loader, self.loss, self.ctx)
        best_g = self.trainer.improved("test_ssim", scores["test_ssim"], higher_is_better=True)
        best_d = self.trainer.improved("test_loss_D", scores["test_loss_D"], higher_is_better=False)
        for improved, name in ((best_g, BEST_G), (best_d, BEST_D)):
            if improved:
                self.trainer.save(name)
        if self.ctx.is_main:
            step = self.trainer.position.step
            print(f"epoch {epoch + 1}: test SSIM {scores['test_ssim']:.4f}{' (best)' if best_g else ''}, "
                  f"test loss_G {scores['test_loss_G']:.4g}, test loss_D {scores['test_loss_D']:.4g}", flush=True)
            self.epoch_log.append({"epoch": epoch + 1, "step": step, **scores,
                                   "best_G": int(best_g), "best_D": int(best_d)})
            self.tensorboard.scalars(scores, step, "test/")
            self.tensorboard.image("samples", self.write_samples(f"epoch_{epoch + 1:03d}.png"), step)
            self.write_plots()
            write_json(self.run_dir / self.cfg["MRI_GAN.model_params.metadata_file"],
                       {"epochs_done": epoch + 1, "global_step": step, "best": self.trainer.position.best,
                        "seed": self.seed, "world_size": self.ctx.world_size, "model_params": self.model_params})

    def write_samples(self, name: str) -> Path:
        """The sample grid of the generator as it is now: generated_samples/<name>."""
        faces, targets, labels = self.samples
        rows = sample_rows(unwrap(self.G), faces, targets, self.ctx.device)
        return save_image_grid(self.run_dir / "generated_samples" / name, rows,
                               ["face", "target MRI", "generated MRI"], labels)

    def write_plots(self) -> None:
        plots = self.run_dir / "plots"
        plot_curves(self.trainer.step_log.path, plots / "losses.png",
                    {"generator total": ["loss_G"], "generator terms": ["loss_GAN", "loss_pixel", "loss_ssim"],
                     "discriminator": ["loss_D", "loss_real", "loss_fake"]})
        plot_curves(self.epoch_log.path, plots / "test_scores.png",
                    {"test SSIM": ["test_ssim"], "test losses": ["test_loss_G", "test_loss_D"]}, x="epoch")

    def sample_batch(self):
        """The first test_sample_size/2 real and fake test items (the same every epoch)."""
        return sample_items(self.test_set, max(1, self.cfg["MRI_GAN.model_params.test_sample_size"] // 2))


def read_data(cfg: Config) -> tuple:
    """((train reals, train fakes), test table). The test rows are drawn once, so epochs' scores compare."""
    return load_split(cfg, "train"), test_rows(cfg)


def train(cfg: Config, ctx: DistContext, resume_path: str | None = None, checkpoint: dict | None = None,
          max_steps: int | None = None) -> Path | None:
    """Train from scratch, or continue exactly from `resume_path`; returns the run folder (rank 0).
    max_steps stops after that many steps in total, as if the run were interrupted there."""
    if cfg["MRI_GAN.model_params.imsize"] != MRI_SIZE:
        raise ConfigError(f"config key 'MRI_GAN.model_params.imsize': the U-Net generator needs {MRI_SIZE}, got "
                          f"{cfg['MRI_GAN.model_params.imsize']}")
    if resume_path and checkpoint is None:
        checkpoint = read_checkpoint(resume_path)
    data = on_every_rank(lambda: read_data(cfg), ctx)  # bad data sets fail here (on any node), before a run folder
    epochs = cfg["MRI_GAN.model_params.n_epochs"]
    task, run_dir, _, finished = run_training(cfg, ctx, cfg["MRI_GAN.model_params.model_name"], "MRI-GAN", epochs,
                                              lambda folder: MRIGANTraining(cfg, ctx, folder, data), resume_path,
                                              checkpoint, max_steps)
    if ctx.is_main:
        position = task.trainer.position
        state = "finished" if finished else "stopped"
        print(f"MRI-GAN {state} at epoch {position.epoch}/{epochs}, step {position.step}; "
              f"best test SSIM {position.best.get('test_ssim', float('nan')):.4f}", flush=True)
    return run_dir


def test_scores(generator: nn.Module, discriminator: nn.Module, loader, loss: MRIGANLoss,
                ctx: DistContext) -> dict[str, float]:
    """Mean SSIM, pixel MSE, G loss and D loss over a held-out loader (all ranks' shards together), under the
    epoch log's column names."""
    scores = score_generator(generator, loader, ctx.device, discriminator, loss,
                             lambda sums: all_reduce_sum(sums, ctx))
    return {"test_ssim": scores["ssim"], "test_pixel": scores["pixel_mse"], "test_loss_G": scores["loss_G"],
            "test_loss_D": scores["loss_D"]}


def sample_rows(generator: nn.Module, faces: torch.Tensor, targets: torch.Tensor,
                device: torch.device) -> list[list[np.ndarray]]:
    """[face, target MRI, generated MRI] as uint8 images for each sample (the training sample grid)."""
    with eval_mode(generator), torch.inference_mode():
        generated = generator(faces.to(device))
    return [list(images) for images in zip(to_uint8(faces), to_uint8(targets), to_uint8(generated))]
