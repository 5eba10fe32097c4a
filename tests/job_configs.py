"""The Ray job configuration the Ray tests start from: its defaults in one place."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ray_jobs.config import JobConfig
from vtr_qdrant.model.bundle import ModelBundle


def job_config_dict(tmp_path: Path, bundle: ModelBundle) -> dict[str, Any]:
    """Collection ``vids`` in local mode under ``tmp_path/qdrant``, reports in ``tmp_path/out``, 4 frames
    per video, ids from file stems, no progress bars, 30 s decode timeout; no sources."""
    return {
        "collection": "vids",
        "bundle": f"local-dir:{bundle.path}",
        "sampling": {"num_frames": 4},
        "video_id": "stem",
        "qdrant": {"path": str(tmp_path / "qdrant")},
        "output_dir": str(tmp_path / "out"),
        "ray": {"progress": False},
        "decode": {"timeout": 30},
    }


def job_config(tmp_path: Path, bundle: ModelBundle, **over: Any) -> JobConfig:
    """:func:`job_config_dict` with ``over`` replacing its top-level entries, validated."""
    return JobConfig.model_validate({**job_config_dict(tmp_path, bundle), **over})
