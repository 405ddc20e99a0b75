"""``python -m focalmix_lib`` is the ``focalmix`` command (handy under ``torchrun``)."""

import sys

from focalmix_lib.cli import main

sys.exit(main())
