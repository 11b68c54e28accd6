"""Step 2 of the pipeline: train the MRI-GAN (pix2pix U-Net generator + PatchGAN discriminator).
Runs are written to logs/<YYYYmmdd_HHMMSS>/<model_name, MRI_GAN>/; the same command works under torchrun. See
docs/pipeline.md#train-mri-gan."""
from __future__ import annotations

from utils.cli import make_parser, run
from utils.infer.export import export_generator
from utils.train.mri_gan import train
from utils.train.run import run_context


def build_parser():
    parser = make_parser(__doc__, epilog="Resuming uses the configuration stored in the checkpoint; change keys "
                         "with --set (e.g. --set MRI_GAN.model_params.n_epochs=150). Multi-process: "
                         "torchrun --standalone --nproc_per_node N train_MRI_GAN.py --train_from_scratch")
    flags = parser.add_mutually_exclusive_group(required=True)
    flags.add_argument("--train_from_scratch", action="store_true", help="train a new MRI-GAN")
    flags.add_argument("--train_resume", metavar="CHECKPOINT", default=None,
                       help="continue exactly from this checkpoint file (e.g. logs/<run>/MRI_GAN/checkpoint.chkpt)")
    parser.add_argument("--export", action="store_true",
                        help="when training has finished, copy the run's best generator (checkpoint_best_G.chkpt) to "
                             "MRI_GAN.weights, where --gen_dfdc_mri and the app read it")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    with run_context(args, args.train_resume) as (cfg, checkpoint, ctx):
        run_dir = train(cfg, ctx, args.train_resume, checkpoint)  # an interrupted run raises: nothing is exported
        if args.export and ctx.is_main:
            written = export_generator(run_dir, cfg)
            print(f"exported {written['source']} -> {written['path']}"
                  f"{'; replaced the previous file' if written['replaced'] else ''}", flush=True)
    return 0


if __name__ == "__main__":
    run(main)
