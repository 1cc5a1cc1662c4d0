"""``python -m spikeflow`` == the ``spikeflow`` command."""

import sys

from spikeflow.service.cli import main

sys.exit(main())
