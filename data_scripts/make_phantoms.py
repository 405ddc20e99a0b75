"""Generate phantoms in the LUNA16 layout: the same as ``focalmix make-data``.

    python data_scripts/make_phantoms.py --profile quick --out data/phantoms-quick --seed 0
"""

import sys

from focalmix_lib.cli import main

if __name__ == "__main__":
    sys.exit(main(["make-data", *sys.argv[1:]]))
