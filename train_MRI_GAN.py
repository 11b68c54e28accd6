"""Step 2 of the pipeline: train the MRI-GAN (pix2pix U-Net generator + PatchGAN discriminator).
Runs are written to logs/<YYYYmmdd_HHMMSS>/MRI_GAN/; the same command works under torchrun. See README."""
from __future__ import annotations

from pathlib import Path

import torch

from models.mri_gan import Discriminator, Generator, MRIGANLoss, init_weights
from utils.checkpoint import read_checkpoint
from utils.cli import make_parser, run
from utils.config import Config, ConfigError
from utils.fileio import write_json
from utils.mri_gan_data import MRIDataset, draw_epoch, load_split
from utils.mri_gan_infer import IMSIZE, evaluate, sample_rows
from utils.run_setup import open_run_logs, per_process_batch, prepare_run_dir, run_config
from utils.training import (CsvLog, DistContext, Trainer, distributed_context, make_loader, no_sync, plot_curves,
                            progress, save_image_grid, seed_process, unwrap, wrap_model)

PERIODIC, BEST_G, BEST_D = "checkpoint.chkpt", "checkpoint_best_G.chkpt", "checkpoint_best_D.chkpt"
STEP_COLUMNS = ["epoch", "batch", "step", "loss_G", "loss_GAN", "loss_pixel", "loss_ssim",
                "loss_D", "loss_real", "loss_fake"]
EPOCH_COLUMNS = ["epoch", "step", "test_ssim", "test_pixel", "test_loss_G", "test_loss_D", "best_G", "best_D"]
P = "MRI_GAN.model_params."


class MRIGANTraining:
    """The MRI-GAN on top of the shared Trainer: models, one G-then-D step, and the end-of-epoch report.

    "Best" checkpoints are chosen on the held-out test split once per epoch (original.md bug 15): best G =
    highest mean test SSIM between generated and target MRI, best D = lowest mean test D loss.
    """

    def __init__(self, cfg: Config, ctx: DistContext, run_dir: Path | None, data: tuple):
        self.cfg, self.ctx, self.run_dir = cfg, ctx, run_dir
        self.seed, self.frac = cfg["runtime.seed"], cfg[P + "frac"]
        self.batch_size = per_process_batch(cfg[P + "batch_size"], ctx.world_size, P + "batch_size")
        (self.train_reals, self.train_fakes), test_table = data
        self.test_set = MRIDataset(test_table, IMSIZE, self.seed, 0, flip=False)
        self.test_loader = make_loader(self.test_set, self.batch_size, ctx, seed=self.seed, training=False,
                                       workers=cfg["runtime.loader_workers"])
        seed_process(self.seed, ctx)
        generator, discriminator = Generator(ngf=cfg[P + "ngf"]), Discriminator(ndf=cfg[P + "ndf"])
        generator.apply(init_weights)
        discriminator.apply(init_weights)
        self.G, self.D = wrap_model(generator, ctx), wrap_model(discriminator, ctx)
        betas = (cfg[P + "b1"], cfg[P + "b2"])
        self.opt_G = torch.optim.Adam(self.G.parameters(), lr=cfg[P + "lr"], betas=betas)
        self.opt_D = torch.optim.Adam(self.D.parameters(), lr=cfg[P + "lr"], betas=betas)
        self.loss = MRIGANLoss(lambda_pixel=cfg[P + "lambda_pixel"], tau=cfg[P + "tau"])
        self.amp = ctx.device.type == "cuda"  # mixed precision on CUDA only; CPU stays float32
        self.scaler = torch.amp.GradScaler("cuda") if self.amp else None
        model_params = {**cfg.to_dict()["MRI_GAN"]["model_params"], "log_dir": str(run_dir)}
        self.trainer = Trainer(ctx, run_dir, {"generator_state_dict": self.G, "discriminator_state_dict": self.D},
                               {"optimizer_G_state_dict": self.opt_G, "optimizer_D_state_dict": self.opt_D},
                               config=cfg.to_dict(), checkpoint_every=cfg[P + "chkpt_freq"], periodic_name=PERIODIC,
                               extra={"model_params": model_params, "log_dir": str(run_dir)}, scaler=self.scaler)
        self.epoch_log: CsvLog | None = None
        self.samples = self.sample_batch() if ctx.is_main else None  # the same test items every epoch

    def open_logs(self, history_dir: str | None = None) -> None:
        """Open the CSV logs on rank 0 (on resume, trimmed to the checkpoint; see open_run_logs)."""
        if self.ctx.is_main:
            self.trainer.step_log, self.epoch_log = open_run_logs(
                self.run_dir, history_dir, self.trainer.position, (self.cfg[P + "losses_file"], STEP_COLUMNS),
                (self.cfg[P + "ssim_report_file"], EPOCH_COLUMNS))

    def epoch_loader(self, epoch: int, skip_batches: int):
        table = draw_epoch(self.train_reals, self.train_fakes, self.frac, self.seed, epoch)
        dataset = MRIDataset(table, IMSIZE, self.seed, epoch, flip=True)
        return make_loader(dataset, self.batch_size, self.ctx, seed=self.seed, epoch=epoch, skip_batches=skip_batches,
                           workers=self.cfg["runtime.loader_workers"])

    def train_step(self, batch: dict) -> dict[str, torch.Tensor]:
        """One generator update, then one discriminator update (the original's order and losses)."""
        device, n = self.ctx.device, len(batch["A"])
        face, target = batch["A"].to(device, non_blocking=True), batch["B"].to(device, non_blocking=True)
        self.G.train()
        self.D.train()
        self.opt_G.zero_grad(set_to_none=True)
        with no_sync(self.D):  # D's gradients from the G step are discarded: no need to average them
            with torch.autocast(device.type, enabled=self.amp):
                fake = self.G(face)
                pred_fake = self.D(fake, face)
            # losses in float32: the SSIM term squares values up to 255, beyond float16's range
            g = self.loss.generator_loss(pred_fake.float(), fake.float(), target)
            self._backward(g["total"])
        self._step(self.opt_G)
        self.opt_D.zero_grad(set_to_none=True)
        # real and generated pairs in one pass: instance norm works per image, so this equals two passes
        with torch.autocast(device.type, enabled=self.amp):
            scores = self.D(torch.cat([target, fake.detach()]), torch.cat([face, face]))
        d_total, d_real, d_fake = self.loss.discriminator_loss(scores[:n].float(), scores[n:].float())
        self._backward(d_total)
        self._step(self.opt_D)
        if self.scaler is not None:
            self.scaler.update()
        return {"loss_G": g["total"], "loss_GAN": g["gan"], "loss_pixel": g["pixel"], "loss_ssim": g["ssim"],
                "loss_D": d_total, "loss_real": d_real, "loss_fake": d_fake}

    def _backward(self, loss: torch.Tensor) -> None:
        (self.scaler.scale(loss) if self.scaler is not None else loss).backward()

    def _step(self, optimizer: torch.optim.Optimizer) -> None:
        if self.scaler is not None:
            self.scaler.step(optimizer)
        else:
            optimizer.step()

    def end_epoch(self, epoch: int) -> None:
        """Score on the test split, keep the best G and D, log, draw samples and curves."""
        loader = progress(self.test_loader, self.ctx, desc=f"test {epoch + 1}")
        scores = evaluate(unwrap(self.G), unwrap(self.D), loader, self.loss, self.ctx)
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
            self.write_pictures(epoch)
            write_json(self.run_dir / self.cfg[P + "metadata_file"],
                       {"epochs_done": epoch + 1, "global_step": step, "best": self.trainer.position.best,
                        "seed": self.seed, "world_size": self.ctx.world_size,
                        "model_params": self.trainer.extra["model_params"]})

    def write_pictures(self, epoch: int) -> None:
        faces, targets, labels = self.samples
        rows = sample_rows(unwrap(self.G), faces, targets, self.ctx.device)
        save_image_grid(self.run_dir / "generated_samples" / f"epoch_{epoch + 1:03d}.png", rows,
                        ["face", "target MRI", "generated MRI"], labels)
        plots = self.run_dir / "plots"
        plot_curves(self.trainer.step_log.path, plots / "losses.png",
                    {"generator total": ["loss_G"], "generator terms": ["loss_GAN", "loss_pixel", "loss_ssim"],
                     "discriminator": ["loss_D", "loss_real", "loss_fake"]})
        plot_curves(self.epoch_log.path, plots / "test_scores.png",
                    {"test SSIM": ["test_ssim"], "test losses": ["test_loss_G", "test_loss_D"]}, x="epoch")

    def sample_batch(self):
        """The first test_sample_size/2 real and fake test items (the same every epoch)."""
        per_class = max(1, self.cfg[P + "test_sample_size"] // 2)
        items = []
        for label in (0, 1):
            indices = [i for i, fake in enumerate(self.test_set.fake) if fake == label][:per_class]
            items += [self.test_set[i] for i in indices]
        faces = torch.stack([item["A"] for item in items])
        targets = torch.stack([item["B"] for item in items])
        return faces, targets, ["fake" if item["fake"] else "real" for item in items]


def read_data(cfg: Config) -> tuple:
    """((train reals, train fakes), test table). The test rows are drawn once, so epochs' scores compare."""
    return load_split(cfg, "train"), draw_epoch(*load_split(cfg, "test"), cfg[P + "frac"], cfg["runtime.seed"], 0)


def train(cfg: Config, ctx: DistContext, resume_path: str | None = None, checkpoint: dict | None = None,
          max_steps: int | None = None) -> Path | None:
    """Train from scratch, or continue exactly from `resume_path`; returns the run folder (rank 0).
    max_steps stops after that many steps in total, as if the run were interrupted there."""
    if cfg[P + "imsize"] != IMSIZE:
        raise ConfigError(f"config key '{P}imsize': the U-Net generator needs {IMSIZE}, got {cfg[P + 'imsize']}")
    if resume_path and checkpoint is None:
        checkpoint = read_checkpoint(resume_path)
    data = read_data(cfg)  # bad data sets fail here, before a run folder is made
    run_dir, history_dir = prepare_run_dir(cfg, ctx, "MRI_GAN", PERIODIC, resume_path, checkpoint)
    task = MRIGANTraining(cfg, ctx, run_dir, data)
    if checkpoint is not None:
        task.trainer.restore(checkpoint, resume_path)
    task.open_logs(history_dir)
    if ctx.is_main:
        print(f"MRI-GAN run folder: {run_dir} (device {ctx.device}, {ctx.world_size} process(es))", flush=True)
    finished = task.trainer.run(cfg[P + "n_epochs"], task.epoch_loader, task.train_step, task.end_epoch, max_steps)
    if ctx.is_main:
        task.trainer.step_log.close()
        task.epoch_log.close()
        position = task.trainer.position
        state = "finished" if finished else "stopped"
        print(f"MRI-GAN {state} at epoch {position.epoch}/{cfg[P + 'n_epochs']}, step {position.step}; "
              f"best test SSIM {position.best.get('test_ssim', float('nan')):.4f}", flush=True)
    return run_dir


def build_parser():
    parser = make_parser(__doc__, epilog="Resuming uses the configuration stored in the checkpoint; change keys "
                         "with --set (e.g. --set MRI_GAN.model_params.n_epochs=150). Multi-process: "
                         "torchrun --standalone --nproc_per_node N train_MRI_GAN.py --train_from_scratch")
    flags = parser.add_mutually_exclusive_group(required=True)
    flags.add_argument("--train_from_scratch", action="store_true", help="train a new MRI-GAN")
    flags.add_argument("--train_resume", metavar="CHECKPOINT", default=None,
                       help="continue exactly from this checkpoint file (e.g. logs/<run>/MRI_GAN/checkpoint.chkpt)")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    cfg, checkpoint = run_config(args, args.train_resume)
    with distributed_context(cfg["runtime.device"]) as ctx:
        train(cfg, ctx, args.train_resume, checkpoint)
    return 0


if __name__ == "__main__":
    run(main)
