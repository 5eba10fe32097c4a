"""Ray Data jobs of vtr-qdrant: cluster-scale ingestion (decode on CPUs, encode on GPUs, write to Qdrant).

Entry points: ``python -m ray_jobs ingest --config job.yaml``, ``vtr-qdrant ingest --ray`` and,
from Python, :func:`ray_jobs.pipeline.run_job` with a :class:`ray_jobs.config.JobConfig`.
Importing this package imports neither Ray nor a video decoder.
"""

from __future__ import annotations

import argparse

__all__ = ["cli_ingest"]


def cli_ingest(args: argparse.Namespace) -> int:
    """``vtr-qdrant ingest --ray``: run the Ray job from the CLI's parsed flags; returns the exit code."""
    from .cli import cli_ingest as run

    return run(args)
