"""The synthetic world (vtr_qdrant.synthetic) and the committed ``synthetic-world/v1`` bundle.

Expected colours come from the world's palette and scene list, never from our decoder's output;
expected metrics are computed by hand from small score matrices.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

from vtr_qdrant import synthetic as syn
from vtr_qdrant.errors import ConfigError, InvalidInputError

# ------------------------------------------------------------------------------ world generation


def test_world_is_deterministic_for_a_seed() -> None:
    a = syn.generate_world(3, 25)
    b = syn.generate_world(3, 25)
    c = syn.generate_world(4, 25)
    assert a.videos == b.videos
    assert a.videos != c.videos
    fa, _ = syn.render_video_frames(a.videos[0], 32)
    fb, _ = syn.render_video_frames(b.videos[0], 32)
    np.testing.assert_array_equal(fa, fb)


def test_world_json_round_trip(tmp_path: Path) -> None:
    world = syn.generate_world(5, 12)
    back = syn.World.from_json(world.to_json())
    assert back.videos == world.videos and back.seed == 5 and back.size == world.size
    path = tmp_path / "w.json"
    path.write_text(world.to_json())
    assert syn.World.from_json(path).videos == world.videos
    with pytest.raises(InvalidInputError):
        syn.World.from_json("{}")


def test_scenes_tile_the_video_and_captions_name_them() -> None:
    world = syn.generate_world(11, 60)
    assert any(v.parent is not None for v in world.videos), "expected mutated distractor videos"
    for v in world.videos:
        assert 2 <= len(v.scenes) <= 5
        assert 4.0 <= v.duration <= 10.0
        assert v.scenes[0].start == 0.0 and math.isclose(v.scenes[-1].end, v.duration)
        for prev, cur in zip(v.scenes, v.scenes[1:]):
            assert math.isclose(prev.end, cur.start)
            assert prev.key != cur.key
        for s in v.scenes:
            # every scene holds at least one of 12 uniformly sampled frames
            assert s.end - s.start >= v.duration / 12
            assert s.colour != s.background
            assert s.caption == syn.scene_caption(s.shape, s.colour, s.background, s.motion)
            assert syn.parse_scene_caption(s.caption) == s.key
            for variant in syn.caption_variants(s.shape, s.colour, s.background, s.motion):
                assert syn.parse_scene_caption(variant) == s.key
        assert syn.parse_video_caption(v.caption) == v.keys


def test_scene_lengths_are_unequal() -> None:
    world = syn.generate_world(2, 40)
    ratios = [
        max(s.end - s.start for s in v.scenes) / min(s.end - s.start for s in v.scenes) for v in world.videos
    ]
    assert np.median(ratios) > 2.0


def test_rendered_frames_show_the_scene() -> None:
    world = syn.generate_world(7, 10)
    for v in world.videos:
        mids = [math.floor(s.midpoint * v.fps) / v.fps for s in v.scenes]  # frame times
        frames, ts = syn.render_video_frames(v, 64, mids)
        assert frames.shape == (len(mids), 64, 64, 3) and frames.dtype == np.uint8
        np.testing.assert_array_equal(ts, mids)
        for f, s, t in zip(frames, v.scenes, mids):
            np.testing.assert_array_equal(f[0, 0], syn.COLOURS[s.background])
            np.testing.assert_array_equal(f[_inside(s, t, 64)], syn.COLOURS[s.colour])


def test_invalid_arguments() -> None:
    with pytest.raises(ConfigError):
        syn.generate_world(0, 0)
    with pytest.raises(ConfigError):
        syn.generate_world(0, 3, size=31)
    with pytest.raises(ConfigError):
        syn.generate_world(0, 3, scenes_range=(2, 12))
    with pytest.raises(InvalidInputError):
        syn.parse_scene_caption("a dog runs on the beach")


def test_seed_convention() -> None:
    assert syn.check_training_seed(0) == 0
    assert syn.check_training_seed(syn.HELDOUT_SEED_BASE - 1) == syn.HELDOUT_SEED_BASE - 1
    assert syn.is_heldout_seed(syn.heldout_seed(0)) and not syn.is_heldout_seed(123)
    with pytest.raises(ConfigError, match="held out"):
        syn.check_training_seed(syn.heldout_seed(3))


# ---------------------------------------------------------------------------------------- relevance


def test_relevance_sets() -> None:
    world = syn.generate_world(13, 80)
    for v in world.videos:
        for s in v.scenes:
            rel = world.relevant(s.caption)
            assert v.video_id in rel
            assert rel == {u.video_id for u in world.videos if any(x.key == s.key for x in u.scenes)}
            # motion is not part of relevance (one frame cannot show a direction)
            for m in syn.MOTIONS:
                assert world.relevant(syn.scene_caption(s.shape, s.colour, s.background, m)) == rel
        assert v.video_id in world.relevant(v.caption)
    # the swapped-colour caption names another scene: "red on blue" is not "blue on red"
    s = world.videos[0].scenes[0]
    swapped = syn.scene_caption(s.shape, s.background, s.colour, s.motion)
    assert world.relevant(swapped) == {
        u.video_id for u in world.videos if (s.shape, s.background, s.colour) in u.keys
    }


def test_queries_are_deduplicated_with_relevant_sets() -> None:
    world = syn.generate_world(17, 50)
    scene_q = world.queries("scene")
    keys = [syn.parse_scene_caption(q.text) for q in scene_q]
    assert len(keys) == len(set(keys)) == len({s.key for v in world.videos for s in v.scenes})
    assert all(q.kind == "scene" and q.relevant == frozenset(world.relevant(q.text)) for q in scene_q)
    video_q = world.queries("video")
    assert len(video_q) == len({v.caption for v in world.videos})
    assert any(len(q.relevant) > 1 for q in scene_q), "expected captions matching several videos"
    with pytest.raises(ConfigError):
        world.queries("frame")
    idx = syn.relevance_indices(scene_q, world.video_ids)
    assert all(world.video_ids[i] in q.relevant for q, rel in zip(scene_q, idx) for i in rel)


# ------------------------------------------------------------------------------------------ metrics


def test_evaluate_retrieval_hand_computed() -> None:
    scores = np.array(
        [
            [0.9, 0.1, 0.2, 0.3],  # relevant {0}: rank 1
            [0.9, 0.1, 0.8, 0.3],  # relevant {2}: rank 2
            [0.5, 0.6, 0.7, 0.8],  # relevant {0, 1}: best relevant 0.6, two irrelevant above: rank 3
            [0.1, 0.2, 0.3, 0.4],  # relevant {0}: rank 4
        ]
    )
    m = syn.evaluate_retrieval(scores, [{0}, {2}, {0, 1}, {0}], ks=(1, 2, 5))
    assert m["R@1"] == pytest.approx(0.25)
    assert m["R@2"] == pytest.approx(0.5)
    assert m["R@5"] == pytest.approx(1.0)
    assert m["MdR"] == pytest.approx(2.5)
    assert m["MnR"] == pytest.approx(2.5)
    assert m["n"] == 4


def test_evaluate_retrieval_ties_count_against_the_query() -> None:
    m = syn.evaluate_retrieval(np.zeros((1, 5)), [{2}])
    assert m["R@1"] == 0.0 and m["MnR"] == 5.0


def test_evaluate_retrieval_rejects_bad_input() -> None:
    with pytest.raises(InvalidInputError):
        syn.evaluate_retrieval(np.zeros((2, 3)), [{0}])
    with pytest.raises(InvalidInputError):
        syn.evaluate_retrieval(np.zeros((1, 3)), [set()])
    with pytest.raises(InvalidInputError):
        syn.evaluate_retrieval(np.zeros((1, 3)), [{3}])


# ------------------------------------------------------------------------------------ mp4 files


def _inside(scene: syn.Scene, t: float, size: int) -> tuple[int, int]:
    """A pixel certainly covered by the shape at time t (the ring's centre is background)."""
    cx, cy, r = scene.geometry(t)
    if scene.shape == "ring":
        cx += 0.78 * r
    return int(cy * size), int(cx * size)


@pytest.mark.video
@pytest.mark.timeout(120)
def test_mp4_frames_match_the_scene_list(tmp_path: Path) -> None:
    pytest.importorskip("imageio_ffmpeg")
    from vtr_qdrant.video.decode import sample_frames

    world = syn.make_world(21, 4, tmp_path)
    assert (tmp_path / "world.json").is_file()
    assert syn.World.from_json(tmp_path / "world.json").videos == world.videos
    for v in world.videos:
        path = world.path(v.video_id)
        assert path.is_file() and path.stat().st_size < 100_000
        # one frame per 1/fps window, i.e. every frame of the file
        frames = sample_frames(str(path), fps=v.fps, size=world.size)
        assert len(frames.images) == v.num_frames
        for s in v.scenes:
            i = int(s.midpoint * v.fps)
            f = frames.images[i].astype(int)
            np.testing.assert_allclose(f[1, 1], syn.COLOURS[s.background], atol=30)
            np.testing.assert_allclose(f[_inside(s, i / v.fps, world.size)], syn.COLOURS[s.colour], atol=45)
        rendered, _ = syn.render_video_frames(v, world.size)
        assert np.abs(frames.images.astype(int) - rendered).mean() < 6.0


# ------------------------------------------------------------------------------ committed bundle


@pytest.mark.video
@pytest.mark.timeout(120)
def test_committed_bundle_retrieves_above_chance(tmp_path: Path) -> None:
    pytest.importorskip("imageio_ffmpeg")
    from vtr_qdrant.model.bundle import resolve_bundle
    from vtr_qdrant.search.aggregation import MaxFrame, MeanPooling
    from vtr_qdrant.video.decode import sample_frames

    bundle = resolve_bundle("synthetic-world/v1")
    assert bundle.name == "synthetic-world/v1"
    assert sum(p.stat().st_size for p in bundle.path.iterdir()) < 8_000_000
    recipe = bundle.manifest.source.recipe
    assert recipe["script"] == "onnx_export.train_synthetic"
    assert not syn.is_heldout_seed(recipe["world"]["seed"])

    world = syn.make_world(syn.heldout_seed(50), 24, tmp_path)
    fenc = bundle.frame_encoder()
    frames = np.stack(
        [
            fenc.encode(sample_frames(str(world.path(v)), num_frames=12, size=fenc.image_size).images)
            for v in world.video_ids
        ]
    )
    assert frames.shape == (24, 12, bundle.embed_dim)
    queries = world.queries("scene")
    text = bundle.text_encoder().encode([q.text for q in queries])
    rel = syn.relevance_indices(queries, world.video_ids)
    chance_r1 = np.mean([len(r) / len(world.video_ids) for r in rel])
    best = syn.evaluate_retrieval(MaxFrame().aggregate(text, frames).scores, rel)
    mean = syn.evaluate_retrieval(MeanPooling().aggregate(text, frames).scores, rel)
    assert best["R@1"] > max(0.4, 3 * chance_r1)
    assert best["R@5"] > 0.8
    assert mean["R@1"] > 2 * chance_r1
