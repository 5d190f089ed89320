"""``python -m batchray.api.dashboards``: see :func:`batchray.api.dashboards.main`."""
import sys

from batchray.api.dashboards import main

sys.exit(main())
