"""Several trained MRI-GAN generators on the same test faces of the MRI-GAN data set: one picture (face, target
MRI, each generator's MRI, titled with its τ and mean test SSIM) and a CSV of their test scores beside it."""
from utils.cli import config_from_args, make_parser, run
from utils.runtime import choose_device
from utils.train.compare_mri_gans import compare_generators


def build_parser():
    parser = make_parser(__doc__)
    parser.add_argument("--generators", nargs="+", metavar="CKPT", required=True,
                        help="generator checkpoints (e.g. logs/<time>/MRI_GAN/checkpoint_best_G.chkpt)")
    parser.add_argument("--out", metavar="FILE.png", required=True, help="the picture; the CSV goes beside it")
    return parser


def main() -> int:
    args = build_parser().parse_args()
    cfg = config_from_args(args)
    picture, table = compare_generators(cfg, args.generators, args.out, choose_device(cfg["runtime.device"]))
    print(f"wrote {picture} and {table}")
    return 0


if __name__ == "__main__":
    run(main)
