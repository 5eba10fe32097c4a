"""Retrieval-augmented generation with LlamaIndex: videos as source nodes of a query engine.

    pip install 'vtr-qdrant[llama-index]'
    python examples/rag_llama_index.py

``VideoRetriever`` returns one ``NodeWithScore`` per video (text: its caption; metadata: video
id, uri, score and the matching moment). A ``RetrieverQueryEngine`` answers from them; offline,
``MockLLM`` stands in for your LLM, so the answer is a placeholder and the sources are the point.
``filters`` take LlamaIndex ``MetadataFilters`` (or a raw Qdrant ``Filter``).
"""

from demo_collection import demo_collection
from llama_index.core.llms import MockLLM
from llama_index.core.query_engine import RetrieverQueryEngine
from llama_index.core.vector_stores.types import FilterOperator, MetadataFilter, MetadataFilters

from vtr_qdrant.integrations.llama_index import VideoRetriever

videos, world = demo_collection()
few_scenes = MetadataFilters(filters=[MetadataFilter(key="n_scenes", value=3, operator=FilterOperator.LTE)])
retriever = VideoRetriever(videos, similarity_top_k=3, filters=few_scenes)
engine = RetrieverQueryEngine.from_args(retriever, llm=MockLLM(max_tokens=8))

question = world.videos[0].scenes[-1].caption
response = engine.query(question)
print(f"question: {question!r}\nsources (videos with at most 3 scenes):")
for n in response.source_nodes:
    m = n.node.metadata
    print(f"  {m['video_id']}  score={n.score:.3f}  {m['start']:.1f}-{m['end']:.1f}s  {m['n_scenes']} scenes  {n.node.get_content()}")
