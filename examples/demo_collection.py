"""The demo's collection, built in seconds: shared by the RAG examples.

``vtr-qdrant demo`` (``make demo``) renders a held-out synthetic world to mp4 files, decodes them
with ffmpeg and ingests them into embedded Qdrant. The examples need the same collection fast and
without ffmpeg, so this module renders the same world's frames in numpy (at the sampled times),
encodes them with the same model (``synthetic-world/v3``) and stores them with
``upsert_embeddings`` — the same world, captions and model, in a few seconds.

    python examples/demo_collection.py        # builds it and prints one search
"""

from __future__ import annotations

import warnings

from qdrant_client import QdrantClient

from vtr_qdrant import EmbeddedVideo, VideoCollection, resolve_bundle
from vtr_qdrant.synthetic.captions import heldout_seed
from vtr_qdrant.synthetic.generate import generate_world
from vtr_qdrant.synthetic.render import render_video_frames, uniform_timestamps
from vtr_qdrant.synthetic.world import World

BUNDLE = "synthetic-world/v3"
COLLECTION = "demo"


def demo_world(n_videos: int = 24) -> World:
    """The demo's held-out world (``vtr-qdrant demo`` uses seed index 0 too)."""
    return generate_world(heldout_seed(0), n_videos)


def embedded_videos(world: World, num_frames: int = 12) -> list[EmbeddedVideo]:
    """Every video of ``world`` rendered, encoded with the demo's model, with its caption and scene count."""
    encoder = resolve_bundle(BUNDLE).frame_encoder()
    out = []
    for v in world.videos:
        frames, timestamps = render_video_frames(v, encoder.image_size, uniform_timestamps(v.duration, num_frames))
        meta = {"caption": v.caption, "n_scenes": len(v.scenes)}
        out.append(EmbeddedVideo(v.video_id, encoder.encode(frames), timestamps, meta, f"demo-output/videos/{v.file}", v.duration))
    return out


def demo_collection(client: QdrantClient | None = None, n_videos: int = 24) -> tuple[VideoCollection, World]:
    """The demo's world in an embedded Qdrant (in memory unless ``client`` is given)."""
    if client is None:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # local-mode notices
            client = QdrantClient(":memory:")
    videos = VideoCollection(client, COLLECTION, BUNDLE, indexed_fields={"n_scenes": "integer"})
    world = demo_world(n_videos)
    videos.upsert_embeddings_batch(embedded_videos(world, videos.sampling.num_frames))
    return videos, world


if __name__ == "__main__":
    videos, world = demo_collection()
    query = world.videos[0].scenes[-1].caption
    for hit in videos.search(query, limit=3):
        print(f"{hit.video_id}  score={hit.score:.3f}  {hit.moment.start:.1f}-{hit.moment.end:.1f}s  {hit.payload['caption']}")
