"""``python -m ray_jobs ingest --config job.yaml`` (see :mod:`ray_jobs.cli`)."""

import sys

from .cli import main

sys.exit(main())
