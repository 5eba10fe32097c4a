"""Export a real open_clip model to an ONNX bundle, ingest your videos with it, search by text.

    pip install 'vtr-qdrant[export,video]'
    python examples/export_real_clip.py --model ViT-B-32 --pretrained laion2b_s34b_b79k \\
        --videos path/to/videos/ --query "a dog catching a frisbee"

The first run downloads the weights from the open_clip hub and exports ``visual.onnx`` /
``text.onnx`` (parity-checked against torch, cosine >= 0.9999) into ``--bundle-dir``; later runs
reuse the bundle and need neither torch nor the network. Use ``--checkpoint file.pt`` instead of
``--pretrained`` for local weights, and ``--model-config DIR`` to register custom architectures.
"""

import argparse
from pathlib import Path

from qdrant_client import QdrantClient

from vtr_qdrant import VideoCollection
from vtr_qdrant.ingest import expand_sources

parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
parser.add_argument("--model", default="ViT-B-32", help="open_clip architecture")
parser.add_argument("--pretrained", help="open_clip pretrained tag (downloads weights)")
parser.add_argument("--checkpoint", help="local checkpoint instead of --pretrained")
parser.add_argument("--model-config", help="folder of extra open_clip model configs (custom architectures)")
parser.add_argument("--bundle-dir", default="bundles/my-clip", help="where the ONNX bundle is written")
parser.add_argument("--videos", nargs="+", required=True, help="video files, folders or globs")
parser.add_argument("--query", default="a person walking a dog")
parser.add_argument("--qdrant-path", default="./qdrant_data")
parser.add_argument("--collection", default="my-videos")
parser.add_argument("--num-frames", type=int, default=12)
args = parser.parse_args()

bundle_dir = Path(args.bundle_dir)
if not (bundle_dir / "manifest.json").exists():
    import open_clip

    from onnx_export.pretrained import export_pretrained

    if args.model_config:
        open_clip.add_model_config(args.model_config)
    report = export_pretrained(args.model, pretrained=args.pretrained, checkpoint=args.checkpoint, out_dir=bundle_dir)
    print(f"exported {report.manifest.name}: visual cos {report.visual_min_cosine:.6f}, text cos {report.text_min_cosine:.6f}")

from vtr_qdrant import SamplingConfig  # noqa: E402

client = QdrantClient(path=args.qdrant_path)
videos = VideoCollection(client, args.collection, bundle=f"local-dir:{bundle_dir}", sampling=SamplingConfig(num_frames=args.num_frames))
print(videos.add_videos(expand_sources(args.videos)).summary())
for rank, hit in enumerate(videos.search(args.query, limit=5), 1):
    print(f"{rank}. {hit.payload['uri']}  score={hit.score:.3f}  best moment {hit.moment.start:.1f}-{hit.moment.end:.1f}s")
client.close()
