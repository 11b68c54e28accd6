"""The embedded default: the whole pipeline on a generated mini data set (`make demo`).

Synthetic data and tiny models: the numbers show the pipeline works, not how well it detects real deepfakes.
"""
from utils.cli import make_parser, not_implemented, run


def main():
    make_parser(__doc__, device=False).parse_args()
    raise not_implemented("make demo (the end-to-end chain on generated data)", "#8")


if __name__ == "__main__":
    run(main)
