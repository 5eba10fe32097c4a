"""The job config: one pydantic object, loaded from YAML/TOML, overridden by env and CLI flags.

Every stage receives this object (or the part of it it needs); no option is declared twice.
Precedence, lowest first: field defaults < config file < ``VTR_JOB__...`` environment variables <
command-line flags. Environment variables use ``__`` to descend into sections, e.g.
``VTR_JOB__ENCODE__NUM_GPUS=1`` or ``VTR_JOB__QDRANT__URL=http://qdrant:6333``; values are parsed as
YAML scalars (``1``, ``true``, ``[a, b]``).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from vtr_qdrant.errors import ConfigError
from vtr_qdrant.model.bundle import DEFAULT_BUNDLE
from vtr_qdrant.model.runtime import Device
from vtr_qdrant.video.ffmpeg import DEFAULT_DECODE_TIMEOUT
from vtr_qdrant.video.sampling import SamplingConfig

__all__ = [
    "JobConfig",
    "QdrantTarget",
    "DecodeConfig",
    "EncodeConfig",
    "WriteConfig",
    "RayConfig",
    "ENV_PREFIX",
    "load_config",
    "apply_overrides",
]

ENV_PREFIX = "VTR_JOB__"


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid")


class QdrantTarget(_Section):
    """Where the points go: a Qdrant server (``url``), an embedded folder (``path``) or a Qdrant
    Edge folder (``edge_path``); exactly one of them.

    Attributes:
        url: server URL, e.g. ``http://qdrant:6333``. Writes run in parallel from Ray tasks.
        path: embedded Qdrant folder (qdrant-client local mode; one process may open it):
            written from the driver.
        edge_path: Qdrant Edge root folder (:class:`vtr_qdrant.store.edge.EdgeBackend`, the ``edge``
            extra; one process per collection): written from the driver. Aliases are symbolic
            links there, so ``rebuild`` swaps them atomically too.
        api_key_env: name of the environment variable holding the API key (never the key itself).
        prefer_grpc: use gRPC to the server.
        timeout: per-request timeout in seconds.
    """

    url: str | None = None
    path: str | None = None
    edge_path: str | None = None
    api_key_env: str = "QDRANT_API_KEY"
    prefer_grpc: bool = False
    timeout: int = Field(60, ge=1)

    @model_validator(mode="after")
    def _one_target(self) -> QdrantTarget:
        given = [f"qdrant.{k}" for k in ("url", "path", "edge_path") if getattr(self, k) is not None]
        if len(given) != 1:
            raise ValueError(
                f"set exactly one of qdrant.url (a server), qdrant.path (an embedded folder) and qdrant.edge_path "
                f"(a Qdrant Edge folder); got {', '.join(given) if given else 'none'}"
            )
        return self

    @property
    def kind(self) -> Literal["server", "local", "edge"]:
        """``server`` (url), ``local`` (qdrant-client local mode folder) or ``edge`` (Qdrant Edge)."""
        if self.url is not None:
            return "server"
        return "local" if self.path is not None else "edge"

    @property
    def embedded(self) -> bool:
        """True for targets only one process may open (local folder, Qdrant Edge): write from the driver."""
        return self.url is None


class DecodeConfig(_Section):
    """Decode stage: Ray tasks calling :func:`vtr_qdrant.video.sample_frames`.

    Attributes:
        num_cpus: CPUs reserved per decode task (ffmpeg runs in a subprocess of the task).
        max_tasks: most decode tasks in flight (None: as many as the CPUs allow).
        timeout: per-video decode timeout in seconds (ffmpeg is killed after it).
        allow_playlists: accept HLS/ffconcat/DASH playlists (only for trusted sources).
        staging_dir: where remote sources (s3://, gs://, ...) are copied for ffmpeg (default: the
            system temp folder); every staged file is deleted after decoding.
        videos_per_task: videos decoded by one task (one block of the source list). None: chosen
            per job by :func:`ray_jobs.pipeline.videos_per_task` — 1 in ``fps`` sampling mode;
            with ``num_frames``, up to 8 while every decode slot still gets 4 tasks and a block's
            frames stay under 64 MiB. Ray Data notices a finished task only every ~0.1 s while an
            encode call is running, so one-video tasks cap a decode slot at ~5 videos/s (measured
            here: 8 videos decoded 1.4 s into a job with blocks of 4, 2.4 s with blocks of 1).
        max_blocks: the source list is cut into at most this many blocks.
    """

    num_cpus: float = Field(1.0, gt=0)
    max_tasks: int | None = Field(None, ge=1)
    timeout: float = Field(DEFAULT_DECODE_TIMEOUT, gt=0)
    allow_playlists: bool = False
    staging_dir: str | None = None
    videos_per_task: int | None = Field(None, ge=1)
    max_blocks: int = Field(4096, ge=1)


class EncodeConfig(_Section):
    """Encode stage: an actor pool, each actor holding one ONNX session.

    Attributes:
        device: ``cpu``, ``cuda`` or ``auto``; ``auto`` picks ``cuda`` when ``num_gpus > 0``.
        num_gpus: GPUs per actor (fractions share a GPU between actors).
        num_cpus: CPUs reserved per actor. Must differ from ``decode.num_cpus`` unless the actor
            asks for GPUs, otherwise Ray fuses decoding into the actor and runs the two serially.
        min_actors, max_actors: actor pool size bounds (autoscaling between them).
        batch_videos: videos per ``map_batches`` call (frames of several videos are encoded together).
        batch_frames: frames per ONNX run (None: the encoder's default for the device, 16 on CPU
            where larger runs measured 15-30% slower per frame, 64 on CUDA).
        intra_op_threads: ONNX Runtime threads per actor (None: its default).
        memory: heap bytes Ray reserves per actor (None: none); a ViT-B/32 fp32 actor peaks at
            ~1.3 GiB on CPU with runs of 64 frames.
    """

    device: Device = "auto"
    num_gpus: float = Field(0.0, ge=0)
    num_cpus: float = Field(0.5, ge=0)
    min_actors: int = Field(1, ge=1)
    max_actors: int = Field(1, ge=1)
    batch_videos: int = Field(8, ge=1)
    batch_frames: int | None = Field(None, ge=1)
    intra_op_threads: int | None = Field(None, ge=1)
    memory: int | None = Field(None, ge=1)

    @model_validator(mode="after")
    def _bounds(self) -> EncodeConfig:
        if self.min_actors > self.max_actors:
            raise ValueError(f"encode.min_actors={self.min_actors} exceeds encode.max_actors={self.max_actors}")
        return self

    @property
    def resolved_device(self) -> Device:
        """The device the actors run on."""
        if self.device == "auto":
            return "cuda" if self.num_gpus > 0 else "cpu"
        return self.device


class WriteConfig(_Section):
    """Write stage.

    Attributes:
        mode: ``auto`` (server target -> parallel Ray sink, embedded target -> driver),
            ``sink`` or ``driver`` to force one.
        batch_videos: videos per upsert call (before splitting by size).
        max_request_bytes: split an upsert so its JSON body stays under this (Qdrant's default
            limit is 32 MiB; the default leaves room).
        max_retries: retries of a transient error (timeouts, 408/429/5xx, gRPC UNAVAILABLE...).
        backoff_base, backoff_max: exponential backoff with full jitter, seconds.
        concurrency: most write tasks in flight (sink mode).
        num_cpus: CPUs reserved per write task (I/O bound).
    """

    mode: Literal["auto", "sink", "driver"] = "auto"
    batch_videos: int = Field(16, ge=1)
    max_request_bytes: int = Field(16 * 1024 * 1024, ge=1024)
    max_retries: int = Field(8, ge=0)
    backoff_base: float = Field(0.5, ge=0)
    backoff_max: float = Field(30.0, ge=0)
    concurrency: int | None = Field(None, ge=1)
    num_cpus: float = Field(0.25, gt=0)


class RayConfig(_Section):
    """How the driver joins Ray.

    Attributes:
        address: cluster address (None: ``$RAY_ADDRESS`` or a new local cluster; ``auto``: the
            running one). Under ``ray job submit`` Ray sets it for you.
        num_cpus: CPUs of a new local cluster (None: all).
        shutdown: shut Ray down at the end if this job started it.
        progress: Ray Data progress bars.
    """

    address: str | None = None
    num_cpus: int | None = Field(None, ge=1)
    shutdown: bool = True
    progress: bool = True


class JobConfig(_Section):
    """An ingestion job.

    Attributes:
        sources: folders (recursive, video extensions), glob patterns, files or URIs
            (``s3://bucket/prefix/``, ``gs://...``: anything pyarrow's filesystems open).
        manifest: a CSV / JSONL / Parquet table with a ``uri`` column, an optional ``video_id``
            column, and metadata columns (every other column). Local or remote.
        metadata: payload fields added to every video (manifest columns win).
        video_id: how ids are derived when the manifest gives none: ``path`` (absolute path or
            URI), ``relative`` (path relative to the source folder; portable across mounts) or
            ``stem`` (file name without extension; must be unique).
        collection: collection name (the alias searchers use).
        bundle: model bundle name or ``local-dir:/path`` (must exist on every node).
        sampling: frame sampling (None: the existing collection's, or the defaults).
        indexed_fields: user payload fields to index, ``{"category": "keyword"}``.
        qdrant, decode, encode, write, ray: stage sections.
        force: re-ingest unchanged videos.
        rebuild: write a new versioned collection and swap the alias to it at the end.
        keep_versions: versioned collections kept after a rebuild (the live one included).
        prune: delete stored videos whose source is gone.
        verify: at the end, scan the collection (``vtr-qdrant verify``): delete leftovers of
            crashed writes, list videos that are still not whole in ``report.verify``.
        output_dir: where ``failures.jsonl``/``.parquet`` and ``report.json`` are written.
        failures_format: ``jsonl`` or ``parquet``.
    """

    sources: list[str] = Field(default_factory=list)
    manifest: str | None = None
    metadata: dict[str, Any] = Field(default_factory=dict)
    video_id: Literal["path", "relative", "stem"] = "path"
    collection: str = Field(min_length=1)
    bundle: str = DEFAULT_BUNDLE
    sampling: SamplingConfig | None = None
    indexed_fields: dict[str, str] = Field(default_factory=dict)
    qdrant: QdrantTarget
    decode: DecodeConfig = Field(default_factory=DecodeConfig)
    encode: EncodeConfig = Field(default_factory=EncodeConfig)
    write: WriteConfig = Field(default_factory=WriteConfig)
    ray: RayConfig = Field(default_factory=RayConfig)
    force: bool = False
    rebuild: bool = False
    keep_versions: int = Field(2, ge=1)
    prune: bool = False
    verify: bool = False
    output_dir: str = "vtr-job-output"
    failures_format: Literal["jsonl", "parquet"] = "jsonl"

    @model_validator(mode="after")
    def _check(self) -> JobConfig:
        if not self.sources and self.manifest is None:
            raise ValueError("give sources (folders, globs, files, URIs) and/or a manifest table")
        if self.encode.num_gpus == 0 and self.encode.num_cpus == self.decode.num_cpus:
            # Ray Data fuses a task stage into the next actor stage when both ask for the same
            # resources; decoding then runs inside the encode actor, serially (measured 50% slower).
            raise ValueError(
                f"encode.num_cpus and decode.num_cpus are both {self.decode.num_cpus} and the encoder asks "
                "for no GPU: Ray would fuse decoding into the encode actor and run them one after the "
                "other; make them differ (e.g. encode.num_cpus: 0.5)"
            )
        return self

    @property
    def write_from_driver(self) -> bool:
        """Whether points are written by the driver (embedded targets) rather than by Ray tasks."""
        if self.write.mode == "auto":
            return self.qdrant.embedded
        if self.write.mode == "sink" and self.qdrant.embedded:
            raise ConfigError(
                f"write.mode='sink' needs a Qdrant server (qdrant.url): the {self.qdrant.kind} target "
                "(an embedded folder) can be opened by one process only; use write.mode='auto'"
            )
        return self.write.mode == "driver"


def _read_file(path: str | os.PathLike[str]) -> dict[str, Any]:
    p = Path(path)
    try:
        text = p.read_text()
    except OSError as e:
        raise ConfigError(f"cannot read the job config {p}: {e}") from e
    try:
        if p.suffix.lower() == ".toml":
            import tomllib

            data: Any = tomllib.loads(text)
        elif p.suffix.lower() in {".yaml", ".yml", ".json"}:
            import yaml

            data = yaml.safe_load(text)
        else:
            raise ConfigError(f"job config {p}: expected a .yaml, .yml, .json or .toml file")
    except ConfigError:
        raise
    except Exception as e:
        raise ConfigError(f"job config {p} is not valid {p.suffix.lstrip('.').upper()}: {e}") from e
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"job config {p}: the top level must be a mapping, got {type(data).__name__}")
    return data


def _set_path(data: dict[str, Any], dotted: str, value: Any) -> None:
    keys = [k for k in dotted.split(".") if k]
    if not keys:
        raise ConfigError(f"empty override key {dotted!r}")
    node = data
    for k in keys[:-1]:
        child = node.get(k)
        if child is None:
            child = node[k] = {}
        elif not isinstance(child, dict):
            raise ConfigError(f"override {dotted!r}: {k!r} is not a section")
        node = child
    node[keys[-1]] = value


def _parse_scalar(text: str) -> Any:
    import yaml

    try:
        return yaml.safe_load(text)
    except yaml.YAMLError:
        return text


def env_overrides(environ: Mapping[str, str] | None = None) -> dict[str, Any]:
    """``VTR_JOB__SECTION__FIELD=value`` variables as dotted overrides ``{"section.field": value}``."""
    env = os.environ if environ is None else environ
    out: dict[str, Any] = {}
    for name, raw in env.items():
        if name.startswith(ENV_PREFIX) and len(name) > len(ENV_PREFIX):
            out[name[len(ENV_PREFIX) :].lower().replace("__", ".")] = _parse_scalar(raw)
    return out


_TARGET_KEYS = ("url", "path", "edge_path")


def apply_overrides(data: dict[str, Any], overrides: Mapping[str, Any]) -> dict[str, Any]:
    """Return a copy of ``data`` with dotted-key overrides applied (``{"encode.num_gpus": 1}``).

    Choosing a target (``qdrant.url``, ``qdrant.path`` or ``qdrant.edge_path``) replaces the
    target of the layer below (``VTR_JOB__QDRANT__EDGE_PATH=/data`` over a file's ``qdrant.path``).
    """
    import copy

    out = copy.deepcopy(data)
    chosen = {k.split(".", 1)[1] for k in overrides if k in {f"qdrant.{t}" for t in _TARGET_KEYS}}
    if chosen and isinstance(out.get("qdrant"), dict):
        for t in _TARGET_KEYS:
            if t not in chosen:
                out["qdrant"].pop(t, None)
    for k, v in overrides.items():
        _set_path(out, k, v)
    return out


def load_config(
    path: str | os.PathLike[str] | None = None,
    overrides: Mapping[str, Any] | None = None,
    *,
    environ: Mapping[str, str] | None = None,
) -> JobConfig:
    """Build the job config from a file, the environment and explicit overrides.

    Args:
        path: a YAML/TOML/JSON file (None: only env and overrides).
        overrides: dotted keys (``"qdrant.url"``, ``"encode.num_gpus"``) -> values; highest precedence.
        environ: the environment to read ``VTR_JOB__*`` from (default ``os.environ``).

    Raises:
        ConfigError: unreadable file, unknown option (typos fail), invalid value.
    """
    data = _read_file(path) if path is not None else {}
    data = apply_overrides(data, env_overrides(environ))
    data = apply_overrides(data, overrides or {})
    try:
        return JobConfig.model_validate(data)
    except ValidationError as e:
        where = f" in {path}" if path is not None else ""
        lines = [f"  {'.'.join(str(x) for x in err['loc']) or '(top)'}: {err['msg']}" for err in e.errors()]
        raise ConfigError(f"invalid job config{where}:\n" + "\n".join(lines)) from e
