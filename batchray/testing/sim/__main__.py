"""``python -m batchray.testing.sim``: run seeds, or replay one (see :func:`~batchray.testing.sim.runner.main`)."""
import sys

from batchray.testing.sim.runner import main

sys.exit(main())
