"""Step 2 of the pipeline: train the MRI-GAN (pix2pix U-Net generator + PatchGAN discriminator).

Runs are written to logs/<YYYYmmdd_HHMMSS>/MRI_GAN/. See README.
"""
from utils.cli import config_from_args, make_parser, not_implemented, run


def build_parser():
    parser = make_parser(__doc__, epilog="Not implemented yet (issue #5): --train_from_scratch, --train_resume. "
                         "The models themselves are in models/mri_gan.py.")
    parser.add_argument("--train_from_scratch", action="store_true", help="train a new MRI-GAN")
    parser.add_argument("--train_resume", metavar="CHECKPOINT", default=None,
                        help="continue the run that wrote this checkpoint file")
    return parser


def main():
    parser = build_parser()
    args = parser.parse_args()
    if not (args.train_from_scratch or args.train_resume):
        parser.error("give --train_from_scratch or --train_resume CHECKPOINT")
    config_from_args(args)
    raise not_implemented("MRI-GAN training", "#5")


if __name__ == "__main__":
    run(main)
