"""Write a small Kosmos-2 checkpoint with random weights, offline, to check an install end to end.

    python tools/make_tiny_checkpoint.py tiny-kosmos2
    kosmos ground sample_images --model tiny-kosmos2 --out results.parquet

Random weights give junk captions and no boxes: this proves the plumbing (loading, batching, writing), not the
model. The tests build the same checkpoint (tools/tiny_checkpoint.py).
"""

import argparse

from tiny_checkpoint import build_tiny  # beside this script


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("out", help="folder to write the checkpoint to")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    print(build_tiny(args.out, seed=args.seed))


if __name__ == "__main__":
    main()
