"""``python -m napari_miqsam.training`` (also under ``torchrun --nproc_per_node=K``): same options as ``miqsam train``."""

import sys

from ..cli import main

if __name__ == "__main__":
    sys.exit(main(["train", *sys.argv[1:]]))
