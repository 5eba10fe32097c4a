"""Quickstart: ingest a few videos into embedded Qdrant and search them by text.

    python examples/quickstart.py [--out quickstart-output]

Uses the project's own small model (``synthetic-world/v3``) and generates its own videos, so it runs
offline. For your own videos: pass their paths to ``add_videos`` and use a real CLIP bundle
(see ``export_real_clip.py``).
"""

import argparse
import shutil
from pathlib import Path

from qdrant_client import QdrantClient

from vtr_qdrant import VideoCollection
from vtr_qdrant.synthetic.captions import heldout_seed
from vtr_qdrant.synthetic.render import make_world

parser = argparse.ArgumentParser()
parser.add_argument("--out", default="quickstart-output")
args = parser.parse_args()
out = Path(args.out)
shutil.rmtree(out / "qdrant", ignore_errors=True)  # start from an empty collection

# 1. some videos (each a sequence of 2-5 scenes: a coloured shape moving on a coloured background)
world = make_world(heldout_seed(7), 12, out / "videos")

# 2. a collection in embedded Qdrant; QdrantClient(url="http://localhost:6333") works the same
client = QdrantClient(path=str(out / "qdrant"))
videos = VideoCollection(client, "quickstart", bundle="synthetic-world/v3")

# 3. decode (ffmpeg) -> encode (ONNX) -> upsert
report = videos.add_videos([world.path(v) for v in world.video_ids], video_ids=world.video_ids, progress=False)
print(report.summary())

# 4. search by text: each hit says which moment matched
query = world.videos[0].scenes[-1].caption
print(f"\nquery: {query!r}")
for hit in videos.search(query, limit=3):
    print(f"  {hit.video_id}  score={hit.score:.3f}  moment={hit.moment.start:.1f}-{hit.moment.end:.1f}s")
client.close()
