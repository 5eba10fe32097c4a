"""Search from asyncio code: AsyncVideoCollection on qdrant-client's AsyncQdrantClient.

    python examples/async_search.py

Text encoding and stage 2 run in worker threads, Qdrant requests are awaited: the event loop keeps
serving other coroutines while several searches run at once. Offline, on the demo's world.
"""

import asyncio
import time

from demo_collection import BUNDLE, demo_world, embedded_videos
from qdrant_client import AsyncQdrantClient

from vtr_qdrant import AsyncVideoCollection


async def main() -> None:
    client = AsyncQdrantClient(":memory:")  # or AsyncQdrantClient(url="http://localhost:6333")
    async with await AsyncVideoCollection.create(client, "demo", bundle=BUNDLE) as videos:
        world = demo_world()
        await videos.upsert_embeddings_batch(embedded_videos(world))
        print(f"{await videos.count()} videos")

        queries = [v.scenes[-1].caption for v in world.videos[:8]]
        t0 = time.perf_counter()
        results = await asyncio.gather(*(videos.search(q, limit=3) for q in queries))  # 8 searches at once
        print(f"8 concurrent searches in {(time.perf_counter() - t0) * 1000:.0f} ms")
        for q, hits in zip(queries[:3], results):
            print(f"\nquery: {q!r}")
            for h in hits:
                print(f"  {h.video_id}  score={h.score:.3f}  moment={h.moment.start:.1f}-{h.moment.end:.1f}s")
    await client.close()


asyncio.run(main())
