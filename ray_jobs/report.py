"""The job's outputs: the failures table (JSONL or Parquet) and the final report (JSON + text)."""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from vtr_qdrant._atomic import atomic_file, atomic_write_text
from vtr_qdrant.ingest import VideoFailure

__all__ = ["JobReport", "write_failures", "read_failures"]

log = logging.getLogger(__name__)

FAILURE_COLUMNS = tuple(VideoFailure.model_fields)


class JobReport(BaseModel):
    """What a job did.

    Attributes:
        collection: the name searchers use.
        written_to: the concrete collection written.
        target: ``server``, ``local`` (embedded folder) or ``edge`` (Qdrant Edge).
        alias_swapped: whether the alias was pointed at ``written_to`` by this run.
        write_mode: ``sink`` (parallel Ray tasks) or ``driver`` (embedded target), or ``none``
            (nothing to do).
        listed, skipped, ingested, failed, pruned: video counts.
        ingested_ids, pruned_ids: ids.
        failures: the failed videos (also in the failures table).
        frames, points: what was written.
        retries: transient-error retries of the writers.
        seconds: ``list`` (sources + hashes), ``plan`` (skip check, prune), ``ray_init``,
            ``pipeline`` (decode -> encode -> write wall time), ``decode``/``encode`` (summed over
            tasks/actors), ``write`` (summed over writers), ``total``.
        frames_per_s, videos_per_s: over the pipeline wall time.
        failures_path, report_path: files written.
        verify: with ``verify: true``, the end-of-job scan
            (:meth:`vtr_qdrant.store.audit.AuditReport.to_dict`, actions included).
    """

    model_config = ConfigDict(extra="forbid")

    collection: str
    written_to: str
    target: str = "server"
    alias_swapped: bool = False
    write_mode: str = "none"
    listed: int = 0
    skipped: int = 0
    ingested: int = 0
    failed: int = 0
    pruned: int = 0
    ingested_ids: list[str] = Field(default_factory=list)
    pruned_ids: list[str] = Field(default_factory=list)
    failures: list[VideoFailure] = Field(default_factory=list)
    frames: int = 0
    points: int = 0
    retries: int = 0
    seconds: dict[str, float] = Field(default_factory=dict)
    frames_per_s: float = 0.0
    videos_per_s: float = 0.0
    failures_path: str | None = None
    report_path: str | None = None
    verify: dict[str, Any] | None = None

    def summary(self) -> str:
        """Human-readable lines for the console."""
        s = self.seconds
        lines = [
            f"collection {self.collection!r} (written: {self.written_to}{', alias swapped' if self.alias_swapped else ''}; "
            f"{self.target} target, writes from the {self.write_mode})",
            f"listed {self.listed}: ingested {self.ingested}, skipped {self.skipped} unchanged, failed {self.failed}, "
            f"pruned {self.pruned}; {self.frames} frames, {self.points} points, {self.retries} write retries",
            f"pipeline {s.get('pipeline', 0.0):.2f} s: {self.videos_per_s:.2f} videos/s, {self.frames_per_s:.1f} frames/s; "
            "stage seconds: " + ", ".join(f"{k} {v:.2f}" for k, v in s.items() if k not in {"pipeline"}),
        ]
        by_reason: dict[str, int] = {}
        for f in self.failures:
            key = f"{f.stage}/{f.reason}"
            by_reason[key] = by_reason.get(key, 0) + 1
        if by_reason:
            lines.append("failures: " + ", ".join(f"{k} x{n}" for k, n in sorted(by_reason.items())))
        if self.failures_path:
            lines.append(f"failures table: {self.failures_path}")
        if self.report_path:
            lines.append(f"report: {self.report_path}")
        return "\n".join(lines)


def write_failures(failures: list[VideoFailure], out_dir: str | os.PathLike[str], fmt: str = "jsonl") -> Path:
    """Write the failures table (``failures.jsonl`` or ``failures.parquet``; written even when
    empty, so a scheduled run always leaves a fresh table). Atomic: temp file + rename."""
    d = Path(out_dir)
    d.mkdir(parents=True, exist_ok=True)
    path = d / f"failures.{fmt}"
    rows = [f.model_dump() for f in failures]
    if fmt == "parquet":
        import pyarrow as pa
        import pyarrow.parquet as pq

        table = pa.Table.from_pylist(rows, schema=pa.schema([(c, pa.string()) for c in FAILURE_COLUMNS]))
        with atomic_file(path, "wb") as fb:
            pq.write_table(table, fb)
    else:
        with atomic_file(path) as f:
            for r in rows:
                f.write(json.dumps(r) + "\n")
    return path


def read_failures(path: str | os.PathLike[str]) -> list[VideoFailure]:
    """Read a failures table written by :func:`write_failures`."""
    p = Path(path)
    if p.suffix == ".parquet":
        import pyarrow.parquet as pq

        rows: list[dict[str, Any]] = pq.read_table(p).to_pylist()
    else:
        rows = [json.loads(line) for line in p.read_text().splitlines() if line.strip()]
    return [VideoFailure.model_validate(r) for r in rows]


def write_report(report: JobReport, out_dir: str | os.PathLike[str]) -> Path:
    """Write ``report.json`` (atomic)."""
    d = Path(out_dir)
    d.mkdir(parents=True, exist_ok=True)
    path = d / "report.json"
    atomic_write_text(path, report.model_dump_json(indent=2))
    return path
