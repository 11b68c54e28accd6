"""Several trained MRI-GAN generators on the same test faces of the MRI-GAN data set: one picture (face, target
MRI, each generator's MRI, titled with its τ and mean test SSIM) and a CSV of their test scores beside it."""
from utils.cli import config_from_args, make_parser, run
from utils.evaluation.compare_generators import compare_generators, generator_tau
from utils.media.mri import MRI_SIZE
from utils.runtime import choose_device
from utils.train.distributed import DistContext
from utils.train.loaders import make_loader
from utils.train.mri_gan_data import MRIDataset, sample_items, test_rows


def build_parser():
    parser = make_parser(__doc__)
    parser.add_argument("--generators", nargs="+", metavar="CKPT", required=True,
                        help="generator checkpoints (e.g. logs/<time>/MRI_GAN/checkpoint_best_G.chkpt)")
    parser.add_argument("--out", metavar="FILE.png", required=True, help="the picture; the CSV goes beside it")
    return parser


def main() -> int:
    args = build_parser().parse_args()
    cfg = config_from_args(args)
    seed, device = cfg["runtime.seed"], choose_device(cfg["runtime.device"])
    taus = [generator_tau(path) for path in args.generators]  # every file is checked before anything runs
    # the rows training scores on (the config's seed and frac); the picture shows test_sample_size/2 reals, then
    # as many fakes
    dataset = MRIDataset(test_rows(cfg), MRI_SIZE, seed, 0, flip=False)
    loader = make_loader(dataset, cfg["MRI_GAN.model_params.batch_size"], DistContext(device=device), seed=seed,
                         training=False, workers=cfg["runtime.loader_workers"])
    samples = sample_items(dataset, max(1, cfg["MRI_GAN.model_params.test_sample_size"] // 2))
    picture, table = compare_generators(args.generators, taus, loader, samples, args.out, device)
    print(f"wrote {picture} and {table}")
    return 0


if __name__ == "__main__":
    run(main)
