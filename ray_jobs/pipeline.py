"""The ingestion job: plan on the driver, then decode -> encode -> write on Ray Data.

1. **Plan** (driver): resolve the bundle and the target (alias / versioned collection), list the
   sources with content hashes, skip unchanged videos, prune deleted ones.
2. **Decode** (Ray tasks, ``decode.num_cpus`` each): :func:`ray_jobs.decode.decode_row`, one task
   per block of videos (:func:`videos_per_task`); failures become rows.
3. **Encode** (actor pool, ``encode.num_cpus`` / ``encode.num_gpus`` per actor):
   :class:`ray_jobs.encode.FrameEncodeActor`. Its resources differ from the decode tasks' on
   purpose: equal requests make Ray fuse decoding into the actor, serially.
4. **Write**: a server target gets :class:`ray_jobs.sink.QdrantDatasink` (parallel write tasks);
   an embedded target (``qdrant.path``, or Qdrant Edge at ``qdrant.edge_path``) is written by the
   driver from ``iter_batches`` (one process only).
5. **Finish**: swap the alias after a rebuild, write the failures table and the report.

A bad video never fails the job; an unreachable target, a wrong config or a model mismatch does.
"""

from __future__ import annotations

import functools
import logging
import math
import os
import time
from collections.abc import Callable
from typing import Any

from vtr_qdrant.collection import VideoCollection
from vtr_qdrant.errors import VideoDecodeError
from vtr_qdrant.ingest import VideoFailure
from vtr_qdrant.model.bundle import resolve_bundle
from vtr_qdrant.store.backend import StorageBackend
from vtr_qdrant.store.qdrant import QdrantClientBackend, open_local_client
from vtr_qdrant.video.sampling import SamplingConfig
from vtr_qdrant.video.source import display_name, open_regular

from .config import JobConfig
from .decode import DecodeParams, decode_row
from .encode import FrameEncodeActor, bundle_stamp
from .incremental import Target, drop_old_versions, prune, resolve_target, split_unchanged, swap_alias, verify
from .report import JobReport, write_failures, write_report
from .sink import QdrantDatasink, ServerClientFactory, WriteStats, failures_of, write_from_driver
from .sources import VideoSource, is_remote, list_sources, sources_to_rows

__all__ = ["run_job", "build_dataset", "ensure_ray", "open_target_client", "videos_per_task"]

log = logging.getLogger(__name__)


def open_target_client(cfg: JobConfig) -> Any:
    """The driver's handle on the target: a ``QdrantClient`` for the server (``qdrant.url``) or the
    embedded folder (``qdrant.path``), an :class:`~vtr_qdrant.store.edge.EdgeBackend` for ``qdrant.edge_path``."""

    if cfg.qdrant.url is not None:
        return ServerClientFactory.from_target(cfg.qdrant)()
    if cfg.qdrant.edge_path is not None:
        from vtr_qdrant.store.edge import EdgeBackend

        return EdgeBackend(cfg.qdrant.edge_path)
    assert cfg.qdrant.path is not None  # QdrantTarget validation: exactly one target is set
    return open_local_client(cfg.qdrant.path)  # a StorageError if another process holds the folder


def ensure_ray(cfg: JobConfig) -> bool:
    """Join Ray: the running session, ``ray.address`` / ``$RAY_ADDRESS`` (``ray job submit``), or a
    new local cluster. Returns True when this call started it."""
    import ray

    if ray.is_initialized():
        return False
    kwargs: dict[str, Any] = {"logging_level": logging.WARNING, "include_dashboard": False}
    address = cfg.ray.address or os.environ.get("RAY_ADDRESS")
    if address:
        kwargs["address"] = address
    elif cfg.ray.num_cpus is not None:
        kwargs["num_cpus"] = cfg.ray.num_cpus
    ray.init(**kwargs)
    return True


#: auto ``decode.videos_per_task``: at most this many videos per decode task...
AUTO_MAX_VIDEOS_PER_TASK = 8
#: ...while every decode slot gets at least this many tasks (load balance, early first batches)...
AUTO_TASKS_PER_SLOT = 4
#: ...and one block's decoded frames stay under this many bytes
AUTO_MAX_BLOCK_BYTES = 64 * 2**20


def videos_per_task(cfg: JobConfig, n_videos: int, *, sampling: SamplingConfig, image_size: int, cluster_cpus: float) -> int:
    """Videos per decode task: ``decode.videos_per_task`` when set, else the automatic choice.

    Automatic: 1 when frames are sampled by ``fps`` (a block's size is unknown before decoding);
    with ``num_frames`` F, ``min(8, ceil(n / (4 * slots)), 64 MiB // (F * S * S * 3))`` and at
    least 1, where ``slots = cluster_cpus // decode.num_cpus`` (decode tasks that fit at once).
    Larger tasks amortise Ray Data's per-task latency; 4 tasks per slot keep the load balanced.
    """
    if cfg.decode.videos_per_task is not None:
        return cfg.decode.videos_per_task
    if sampling.num_frames is None:
        return 1
    slots = max(1, int(cluster_cpus // cfg.decode.num_cpus))
    by_balance = math.ceil(n_videos / (AUTO_TASKS_PER_SLOT * slots))
    by_bytes = AUTO_MAX_BLOCK_BYTES // (sampling.num_frames * image_size * image_size * 3)
    return max(1, min(AUTO_MAX_VIDEOS_PER_TASK, by_balance, by_bytes))


def build_dataset(
    cfg: JobConfig, sources: list[VideoSource], params: DecodeParams, fingerprint: str, *, bundle_path: str | None = None
) -> Any:
    """The lazy Ray dataset: sources -> decoded frames -> frame embeddings (one row per video).

    ``bundle_path``: the folder of the bundle the driver verified; encode actors on the driver's
    node skip re-hashing it when its files are unchanged (:func:`ray_jobs.encode.bundle_stamp`).
    """
    import ray
    from ray.data import ActorPoolStrategy, TaskPoolStrategy

    ctx = ray.data.DataContext.get_current()
    ctx.enable_progress_bars = cfg.ray.progress
    rows = sources_to_rows(sources)
    per_task = videos_per_task(
        cfg, len(rows), sampling=params.sampling, image_size=params.image_size,
        cluster_cpus=float(ray.cluster_resources().get("CPU", 1.0)),
    )
    blocks = max(1, min(math.ceil(len(rows) / per_task), cfg.decode.max_blocks))
    log.debug("%d videos in %d decode blocks (%d per task)", len(rows), blocks, per_task)
    items = ray.data.from_items(rows, override_num_blocks=blocks)
    ds = items.map(
        functools.partial(decode_row, params=params),
        num_cpus=cfg.decode.num_cpus,
        compute=TaskPoolStrategy(size=cfg.decode.max_tasks) if cfg.decode.max_tasks else None,
    )
    enc = cfg.encode
    return ds.map_batches(
        FrameEncodeActor,
        fn_constructor_kwargs={
            "bundle": cfg.bundle,
            "device": enc.resolved_device,
            "batch_frames": enc.batch_frames,
            "intra_op_threads": enc.intra_op_threads,
            "expected_fingerprint": fingerprint,
            "verified": bundle_stamp(bundle_path, ray.get_runtime_context().get_node_id()) if bundle_path else None,
        },
        batch_size=enc.batch_videos,
        batch_format="numpy",
        compute=ActorPoolStrategy(min_size=enc.min_actors, max_size=enc.max_actors),
        num_cpus=enc.num_cpus,
        num_gpus=enc.num_gpus or None,
        memory=enc.memory,
    )


def _input_failure(s: VideoSource) -> VideoFailure | None:
    """Local sources that cannot even be read are reported without a decode task (stage ``input``):
    missing files, broken links, link loops, folders, FIFOs, devices... (never opened)."""
    if s.content_hash is not None or is_remote(s.uri):
        return None
    path = s.uri[len("file://") :] if s.uri.startswith("file://") else s.uri
    try:
        open_regular(path).close()
        e: VideoDecodeError = VideoDecodeError(display_name(s.uri), "cannot read the file", reason="unreadable")
    except VideoDecodeError as refused:
        e = refused
    except OSError as err:
        e = VideoDecodeError(display_name(s.uri), f"cannot read the file: {err}", reason="unreadable")
    return VideoFailure(uri=display_name(s.uri), video_id=s.video_id, stage="input", error_type=type(e).__name__, reason=e.reason, message=str(e))


def _open_collection(client: Any, cfg: JobConfig, target: Target, bundle: Any) -> VideoCollection:
    # any object with QdrantClient's methods will do (a server proxy in tests, say)
    backend = client if isinstance(client, StorageBackend) else QdrantClientBackend(client)
    sampling = cfg.sampling
    if sampling is None and target.live is not None and target.write_to != target.live:
        sampling = VideoCollection(backend, target.live, create=False).sampling  # a rebuild keeps the sampling
    return VideoCollection(backend, target.write_to, bundle, sampling=sampling, indexed_fields=cfg.indexed_fields)


def run_job(
    cfg: JobConfig,
    *,
    client: Any = None,
    client_factory: Callable[[], Any] | None = None,
    on_batch: Callable[[WriteStats], None] | None = None,
    retry_seed: int | None = None,
) -> JobReport:
    """Run one ingestion job and return its report (also written to ``cfg.output_dir``).

    Args:
        cfg: the job config.
        client: an open ``QdrantClient`` (or :class:`~vtr_qdrant.store.edge.EdgeBackend`) for the
            driver to use instead of opening ``cfg.qdrant`` (it stays open). An embedded client
            is written by the driver.
        client_factory: picklable callable returning a client inside write tasks (sink mode);
            default: :class:`~ray_jobs.sink.ServerClientFactory` over ``cfg.qdrant``. Also used
            by the driver when ``client`` is not given.
        on_batch: driver mode only: called with the cumulative write stats after each batch.
        retry_seed: jitter seed of the writers' backoff (tests).

    Raises:
        VtrError: the job itself failed (bad config, unreachable target, model mismatch, a
            target that kept failing); failed videos are in the report instead.
    """
    t_start = time.perf_counter()
    seconds: dict[str, float] = {}
    factory = client_factory or (ServerClientFactory.from_target(cfg.qdrant) if cfg.qdrant.url else None)
    own_client = client is None
    if client is None:
        client = factory() if factory is not None else open_target_client(cfg)
    target: Target | None = None
    created_new = False
    try:
        bundle = resolve_bundle(cfg.bundle)
        target = resolve_target(client, cfg.collection, rebuild=cfg.rebuild)
        created_new = not client.collection_exists(target.write_to)
        vc = _open_collection(client, cfg, target, bundle)
        swapped = False
        if target.swap and target.live is None:
            swap_alias(client, target.name, target.write_to)  # first run: the alias exists from the start
            swapped = True

        t = time.perf_counter()
        sources = list_sources(cfg)
        seconds["list"] = time.perf_counter() - t

        t = time.perf_counter()
        input_failures = [f for f in map(_input_failure, sources) if f is not None]
        bad = {f.video_id for f in input_failures}
        todo, unchanged = split_unchanged(vc, [s for s in sources if s.video_id not in bad], force=cfg.force)
        pruned = prune(vc, sources) if cfg.prune and not created_new else []
        seconds["plan"] = time.perf_counter() - t

        stats, mode = _ingest(cfg, todo, vc, bundle, target.write_to, factory, on_batch, retry_seed, seconds)
        if stats["ingested"] or pruned:
            vc.optimize()  # engines that leave indexing to the caller (Qdrant Edge); a no-op elsewhere
        verified = verify(vc) if cfg.verify else None
        if target.swap and not swapped:
            swap_alias(client, target.name, target.write_to)
            swapped = True
        if target.is_alias and cfg.rebuild:
            drop_old_versions(client, target.name, cfg.keep_versions)
    except BaseException:
        # a failed rebuild leaves the live version alone and drops its half-built successor (a
        # first run keeps what it wrote: the alias already points at it and a re-run resumes)
        if target is not None and cfg.rebuild and created_new and target.live is not None:
            _drop_quietly(client, target.write_to)
        raise
    finally:
        if own_client:
            client.close()

    failures = input_failures + failures_of(stats)
    counts = {"listed": len(sources), "skipped": len(unchanged)}
    report = _report(cfg, target, stats, failures, pruned, counts, mode=mode, swapped=swapped, seconds=seconds, t_start=t_start,
                     verified=verified)
    for f in failures:
        log.warning("failed: %s [%s/%s] %s", f.uri, f.stage, f.reason, f.message)
    return report


def _ingest(
    cfg: JobConfig,
    todo: list[VideoSource],
    vc: VideoCollection,
    bundle: Any,
    write_to: str,
    factory: Callable[[], Any] | None,
    on_batch: Callable[[WriteStats], None] | None,
    retry_seed: int | None,
    seconds: dict[str, float],
) -> tuple[WriteStats, str]:
    """Decode, encode and write ``todo`` (Ray up for the duration); returns the write stats and mode."""
    if not todo:
        return WriteStats.empty(), "none"
    t = time.perf_counter()
    started_ray = ensure_ray(cfg)
    seconds["ray_init"] = time.perf_counter() - t
    try:
        params = DecodeParams(
            sampling=vc.sampling,
            image_size=bundle.manifest.image.image_size,
            timeout=cfg.decode.timeout,
            allow_playlists=cfg.decode.allow_playlists,
            staging_dir=cfg.decode.staging_dir,
        )
        t = time.perf_counter()
        ds = build_dataset(cfg, todo, params, bundle.fingerprint, bundle_path=str(bundle.path))
        if not cfg.write_from_driver and factory is not None:
            sink = QdrantDatasink(factory, write_to, cfg.write, retry_seed=retry_seed)
            ds.write_datasink(sink, concurrency=cfg.write.concurrency, ray_remote_args={"num_cpus": cfg.write.num_cpus})
            stats, mode = sink.result, "sink"
        else:
            batches = ds.iter_batches(batch_size=cfg.write.batch_videos, batch_format="numpy", prefetch_batches=1)
            stats, mode = write_from_driver(batches, vc, cfg.write, on_batch=on_batch, retry_seed=retry_seed), "driver"
        seconds["pipeline"] = time.perf_counter() - t
        return stats, mode
    finally:
        if started_ray and cfg.ray.shutdown:
            import ray

            ray.shutdown()


def _report(
    cfg: JobConfig,
    target: Target,
    stats: WriteStats,
    failures: list[VideoFailure],
    pruned: list[str],
    counts: dict[str, int],
    *,
    mode: str,
    swapped: bool,
    seconds: dict[str, float],
    t_start: float,
    verified: dict[str, Any] | None = None,
) -> JobReport:
    """The job report, written to ``cfg.output_dir`` with the failures table."""
    seconds.update(decode=stats["decode_s"], encode=stats["encode_s"], write=stats["write_s"])
    seconds["total"] = time.perf_counter() - t_start
    wall = seconds.get("pipeline", 0.0)
    report = JobReport(
        collection=cfg.collection,
        written_to=target.write_to,
        target=cfg.qdrant.kind,
        alias_swapped=swapped,
        write_mode=mode,
        listed=counts["listed"],
        skipped=counts["skipped"],
        ingested=len(stats["ingested"]),
        failed=len(failures),
        pruned=len(pruned),
        ingested_ids=sorted(stats["ingested"]),
        pruned_ids=pruned,
        failures=failures,
        frames=stats["frames"],
        points=stats["points"],
        retries=stats["retries"],
        seconds={k: round(v, 4) for k, v in seconds.items()},
        frames_per_s=round(stats["frames"] / wall, 2) if wall > 0 else 0.0,
        videos_per_s=round(len(stats["ingested"]) / wall, 3) if wall > 0 else 0.0,
        verify=verified,
    )
    report.failures_path = str(write_failures(failures, cfg.output_dir, cfg.failures_format))
    report.report_path = str(os.path.join(cfg.output_dir, "report.json"))
    write_report(report, cfg.output_dir)
    return report


def _drop_quietly(client: Any, name: str) -> None:
    try:
        client.delete_collection(name)
        log.info("dropped the unfinished rebuild collection %s", name)
    except Exception as e:  # the original error matters more
        log.warning("could not drop the unfinished rebuild collection %s: %s", name, e)
