"""In-process ingestion of video files: decode -> encode -> upsert, fault-tolerant.

Decoding runs in a small thread pool (each decode is an ffmpeg subprocess, so threads overlap
decoding with encoding in the main thread); frames of several videos are encoded together in
batches; each finished video is upserted as soon as its frames are encoded. A video that fails at
any stage becomes a :class:`VideoFailure` in the :class:`IngestReport` and the job goes on; what
was already ingested stays.
"""

from __future__ import annotations

import logging
import os
import time
import warnings
from collections.abc import Iterable, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from .errors import InvalidInputError, VideoDecodeError, VtrError
from .store.payload import check_metadata
from .store.videos import EmbeddedVideo
from .video.ffmpeg import DEFAULT_DECODE_TIMEOUT
from .video.source import VIDEO_EXTENSIONS, default_video_id, display_name, expand_sources, file_content_hash

if TYPE_CHECKING:
    from .model.encoders import FrameEncoder
    from .video.frames import SampledFrames
    from .video.sampling import SamplingConfig

__all__ = ["VideoFailure", "IngestReport", "IngestOptions", "VideoWriter", "stored_payloads", "expand_sources", "file_content_hash", "ingest_videos", "VIDEO_EXTENSIONS"]

log = logging.getLogger(__name__)



class VideoFailure(BaseModel):
    """One video that could not be ingested.

    Attributes:
        uri: the source.
        video_id: the id it would have had.
        stage: ``input``, ``decode``, ``encode`` or ``upsert``.
        error_type: the exception class name.
        reason: short machine-readable tag (e.g. ``not_found``, ``no_video_stream``, ``timeout``).
        message: human-readable explanation.
    """

    model_config = ConfigDict(extra="forbid")

    uri: str
    video_id: str
    stage: str
    error_type: str
    reason: str
    message: str


class IngestReport(BaseModel):
    """What an ingestion run did.

    Attributes:
        ingested: ids of videos written.
        skipped: ids of videos already stored with the same content hash and model.
        failed: one entry per failed video.
        frames: frames encoded.
        seconds: wall time per stage (``decode`` is summed over worker threads) and ``total``.
    """

    model_config = ConfigDict(extra="forbid")

    ingested: list[str] = Field(default_factory=list)
    skipped: list[str] = Field(default_factory=list)
    failed: list[VideoFailure] = Field(default_factory=list)
    frames: int = 0
    seconds: dict[str, float] = Field(default_factory=dict)

    def summary(self) -> str:
        """A few human-readable lines."""
        total = self.seconds.get("total", 0.0)
        lines = [
            f"ingested {len(self.ingested)}, skipped {len(self.skipped)} unchanged, failed {len(self.failed)}; "
            f"{self.frames} frames in {total:.1f} s"
            + (f" ({self.frames / total:.1f} frames/s)" if total > 0 else ""),
            "stage seconds: " + ", ".join(f"{k} {v:.2f}" for k, v in self.seconds.items() if k != "total"),
        ]
        lines += [f"  FAILED {f.uri} [{f.stage}/{f.reason}] {f.error_type}: {f.message}" for f in self.failed]
        return "\n".join(lines)


def _failure(uri: str, vid: str, stage: str, e: BaseException) -> VideoFailure:
    reason = getattr(e, "reason", None) or ("error" if isinstance(e, VtrError) else "unexpected_error")
    return VideoFailure(uri=uri, video_id=vid, stage=stage, error_type=type(e).__name__, reason=str(reason), message=str(e))


def stored_payloads(vc: Any, ids: Sequence[str]) -> dict[str, dict[str, Any]]:
    """Deprecated: use ``collection.store.stored_payloads(ids)`` (:meth:`VideoStore.stored_payloads`)."""
    warnings.warn(
        "vtr_qdrant.ingest.stored_payloads(vc, ids) is deprecated; use vc.store.stored_payloads(ids)",
        DeprecationWarning,
        stacklevel=2,
    )
    return dict(vc.store.stored_payloads(ids))


class IngestOptions(BaseModel):
    """How :func:`ingest_videos` (and :meth:`VideoCollection.add_videos`) ingests files: one home for
    every option and its default.

    Attributes:
        force: re-ingest files whose content hash and model are already stored.
        batch_frames: frames per encoder batch (across videos).
        decode_workers: concurrent decodes.
        timeout: per-video decode timeout in seconds (the decoder is killed after it).
        progress: show a progress bar.
        allow_playlists, ffmpeg, max_frames, allowed_schemes, engine: passed to
            :func:`vtr_qdrant.video.sample_frames`. ``max_frames`` bounds memory per video (10,000
            frames at 224 px are 1.5 GB of uint8; longer samplings fail with reason
            ``too_many_frames``: raise it, or lower fps).
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    force: bool = False
    batch_frames: int = Field(64, ge=1)
    decode_workers: int = Field(2, ge=1)
    timeout: float = Field(DEFAULT_DECODE_TIMEOUT, gt=0)
    progress: bool = True
    allow_playlists: bool = False
    ffmpeg: str | None = None
    max_frames: int | None = Field(10_000, ge=1)
    allowed_schemes: tuple[str, ...] = ("file",)
    engine: str = "auto"

    @classmethod
    def of(cls, options: Mapping[str, Any], *, where: str = "ingest") -> IngestOptions:
        """Options from keyword arguments; an unknown or invalid one is an :class:`InvalidInputError`."""
        try:
            return cls(**options)
        except ValidationError as e:
            raise InvalidInputError(f"{where}: {e}") from e

    def sample_options(self) -> dict[str, Any]:
        """The keyword arguments of :func:`vtr_qdrant.video.sample_frames` these options set."""
        return self.model_dump(include={"timeout", "allow_playlists", "ffmpeg", "max_frames", "allowed_schemes", "engine"})


class VideoWriter(Protocol):
    """Where ingestion writes (:class:`~vtr_qdrant.store.videos.VideoStore` is one)."""

    @property
    def fingerprint(self) -> str | None: ...

    def stored_payloads(self, video_ids: Sequence[str]) -> dict[str, dict[str, Any]]: ...

    def unchanged(self, content_hashes: Mapping[str, str | None]) -> set[str]: ...

    def upsert(self, videos: Iterable[EmbeddedVideo]) -> dict[str, list[str]]: ...


def ingest_videos(
    writer: VideoWriter,
    encoder: FrameEncoder,
    sampling: SamplingConfig,
    uris: Sequence[str | os.PathLike[str]],
    *,
    video_ids: Sequence[str] | None = None,
    metadata: Mapping[str, Any] | Sequence[Mapping[str, Any] | None] | None = None,
    options: IngestOptions | None = None,
) -> IngestReport:
    """Decode, encode and store video files; see :meth:`VideoCollection.add_videos <vtr_qdrant.collection.VideoCollection.add_videos>`.

    Args:
        writer: where the videos go (a :class:`~vtr_qdrant.store.videos.VideoStore`).
        encoder: the frame encoder (its ``image_size`` sets the decoded frame size).
        sampling: which frames to take from each video.
        uris: video files.
        video_ids: ids to store them under (default: the absolute path).
        metadata: one dict for all videos, or one per video.
        options: :class:`IngestOptions` (default: all defaults).
    """
    job = _Ingestion(writer, encoder, sampling, uris, video_ids, metadata, options or IngestOptions())
    remaining = job.check_sources()
    job.decode_encode_store(remaining)
    return job.finish()


class _Ingestion:
    """One :func:`ingest_videos` call: its inputs, the report it fills, and its stage timings."""

    def __init__(
        self,
        writer: VideoWriter,
        encoder: FrameEncoder,
        sampling: SamplingConfig,
        uris: Sequence[str | os.PathLike[str]],
        video_ids: Sequence[str] | None,
        metadata: Mapping[str, Any] | Sequence[Mapping[str, Any] | None] | None,
        opts: IngestOptions,
    ) -> None:
        self.t_start = time.perf_counter()
        self.writer, self.encoder, self.sampling, self.opts = writer, encoder, sampling, opts
        self.paths = [os.fspath(u) for u in uris]
        ids = [default_video_id(u) if "://" not in u else u for u in self.paths] if video_ids is None else list(video_ids)
        if len(ids) != len(self.paths):
            raise InvalidInputError(f"got {len(ids)} video_ids for {len(self.paths)} uris")
        if len(set(ids)) != len(ids):
            raise InvalidInputError("video_ids must be unique within one call")
        self.video_ids = ids
        if metadata is None or isinstance(metadata, Mapping):
            self.metas: list[Mapping[str, Any] | None] = [metadata] * len(ids)
        elif isinstance(metadata, (str, bytes)) or not isinstance(metadata, Sequence):
            raise InvalidInputError(
                f"metadata must be one dict for every video or a list of dicts (one per uri), got {type(metadata).__name__}"
            )
        else:
            self.metas = list(metadata)
            if len(self.metas) != len(ids):
                raise InvalidInputError(f"got {len(self.metas)} metadata entries for {len(ids)} uris")
        # refused before anything is decoded or written, not after minutes of decoding
        self.metas = [None if m is None else check_metadata(m, where=f"metadata for {vid!r}") for m, vid in zip(self.metas, ids)]
        self.report = IngestReport()
        self.timing = {"hash": 0.0, "decode": 0.0, "encode": 0.0, "upsert": 0.0}
        self.hashes: dict[str, str | None] = {}
        self.pending: list[tuple[int, SampledFrames]] = []

    def _fail(self, i: int, stage: str, e: BaseException) -> None:
        self.report.failed.append(_failure(display_name(self.paths[i]), self.video_ids[i], stage, e))

    def check_sources(self) -> list[int]:
        """Hash each source and skip unchanged ones (same content hash and model); returns what is left."""
        t0 = time.perf_counter()
        todo: list[int] = []
        for i, (u, vid) in enumerate(zip(self.paths, self.video_ids)):
            if "://" in u:
                self.hashes[vid] = None
            else:
                try:  # refuses FIFOs, devices, loops... from their stat: never opened, never blocks
                    self.hashes[vid] = file_content_hash(u)
                except VideoDecodeError as e:
                    self._fail(i, "input", e)
                    continue
                except OSError as e:
                    self._fail(i, "input", VideoDecodeError(display_name(u), f"cannot read: {e}", reason="unreadable"))
                    continue
            todo.append(i)
        same = set() if self.opts.force else self.writer.unchanged({self.video_ids[i]: self.hashes[self.video_ids[i]] for i in todo})
        remaining = []
        for i in todo:
            if self.video_ids[i] in same:
                self.report.skipped.append(self.video_ids[i])
            else:
                remaining.append(i)
        self.timing["hash"] = time.perf_counter() - t0
        return remaining

    def _decode(self, i: int) -> tuple[SampledFrames, float]:
        from .video.decode import sample_frames  # needs the video extra; imported only when ingesting

        t = time.perf_counter()
        s = sample_frames(
            self.paths[i],
            num_frames=self.sampling.num_frames,
            fps=self.sampling.fps,
            mode=self.sampling.mode,
            size=self.encoder.image_size,
            **self.opts.sample_options(),
        )
        return s, time.perf_counter() - t

    def decode_encode_store(self, remaining: list[int]) -> None:
        """Decode in threads, encode in batches across videos, store each finished batch."""
        bar = None
        if self.opts.progress and remaining:
            from tqdm.auto import tqdm

            bar = tqdm(total=len(remaining), desc="ingest", unit="video")
        with ThreadPoolExecutor(max_workers=self.opts.decode_workers, thread_name_prefix="vtr-decode") as pool:
            futures: list[tuple[int, Future[tuple[SampledFrames, float]]]] = [(i, pool.submit(self._decode, i)) for i in remaining]
            for i, fut in futures:
                try:
                    s, secs = fut.result()
                    self.timing["decode"] += secs
                    self.pending.append((i, s))
                except Exception as e:
                    self._fail(i, "decode", e)
                if sum(len(s.images) for _, s in self.pending) >= self.opts.batch_frames:
                    self._flush()
                if bar is not None:
                    bar.update(1)
            self._flush()
        if bar is not None:
            bar.close()

    def _flush(self) -> None:
        """Encode the pending videos together and store them; failures stay with their videos."""
        batch, self.pending = self.pending, []
        if not batch:
            return
        t = time.perf_counter()
        try:
            emb = self.encoder.encode(np.concatenate([s.images for _, s in batch]))
        except Exception as e:  # one bad batch fails its videos, never the job
            self.timing["encode"] += time.perf_counter() - t
            for i, _ in batch:
                self._fail(i, "encode", e)
            return
        self.timing["encode"] += time.perf_counter() - t
        videos: list[tuple[int, EmbeddedVideo]] = []
        offset = 0
        for i, s in batch:
            n, vid = len(s.images), self.video_ids[i]
            frames = emb[offset : offset + n]
            videos.append((i, EmbeddedVideo(vid, frames, s.timestamps, self.metas[i], self.paths[i], s.duration, self.hashes[vid])))
            offset += n
        t = time.perf_counter()
        try:  # one write for the whole batch ...
            self.writer.upsert([v for _, v in videos])
            done = videos
        except Exception:  # ... and, if it fails, video by video so one bad video cannot sink the others
            done = []
            for i, v in videos:
                try:
                    self.writer.upsert([v])
                    done.append((i, v))
                except Exception as e:
                    self._fail(i, "upsert", e)
        for _, v in done:
            self.report.ingested.append(v.video_id)
            self.report.frames += len(v.timestamps)
        self.timing["upsert"] += time.perf_counter() - t

    def finish(self) -> IngestReport:
        self.timing["total"] = time.perf_counter() - self.t_start
        self.report.seconds = {k: round(v, 4) for k, v in self.timing.items()}
        for f in self.report.failed:
            log.warning("failed to ingest %s (%s/%s): %s", f.uri, f.stage, f.reason, f.message)
        return self.report
