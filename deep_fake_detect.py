"""Step 3 of the pipeline: train, resume and test the EfficientNet-B0 deepfake classifier.

`deep_fake.training.model_params.dataset` chooses plain face crops or predicted MRIs. See README.
"""
from utils.cli import config_from_args, make_parser, not_implemented, run


def build_parser():
    parser = make_parser(__doc__, epilog="Not implemented yet (issue #6): --train_from_scratch, --train_resume, "
                         "--test_saved_model.")
    parser.add_argument("--train_from_scratch", action="store_true",
                        help="train a new classifier, then test its highest-accuracy checkpoint")
    parser.add_argument("--train_resume", metavar="CHECKPOINT", default=None,
                        help="continue the run that wrote this checkpoint file, then test")
    parser.add_argument("--test_saved_model", metavar="CHECKPOINT", default=None,
                        help="test this checkpoint on the test split")
    return parser


def main():
    parser = build_parser()
    args = parser.parse_args()
    if not (args.train_from_scratch or args.train_resume or args.test_saved_model):
        parser.error("give --train_from_scratch, --train_resume or --test_saved_model")
    config_from_args(args)
    raise not_implemented("classifier training and testing", "#6")


if __name__ == "__main__":
    run(main)
