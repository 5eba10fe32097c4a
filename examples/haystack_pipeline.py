"""A Haystack pipeline: video retrieval feeding a prompt builder.

    pip install 'vtr-qdrant[haystack]'
    python examples/haystack_pipeline.py

``VideoRetriever`` is a Haystack component (``run`` / ``run_async``, ``to_dict`` / ``from_dict``
that store the collection's connection settings). Its documents carry the caption as content and
the video id, uri, score and matching moment as meta; the prompt builder cites them. Add a
generator after the builder for the LLM step (offline here, so the prompt is printed).
"""

from demo_collection import demo_collection
from haystack import Pipeline
from haystack.components.builders import PromptBuilder

from vtr_qdrant.integrations.haystack import VideoRetriever

TEMPLATE = """Answer from these video sources, citing [n] and the time stamps.
{% for doc in documents %}[{{ loop.index }}] {{ doc.meta.uri }} at {{ "%.1f"|format(doc.meta.start) }}-{{ "%.1f"|format(doc.meta.end) }} s: {{ doc.content }}
{% endfor %}Question: {{ question }}"""

videos, world = demo_collection()
pipe = Pipeline()
pipe.add_component("videos", VideoRetriever(collection=videos, top_k=3))
pipe.add_component("prompt", PromptBuilder(template=TEMPLATE, required_variables=["documents", "question"]))
pipe.connect("videos.documents", "prompt.documents")

question = world.videos[0].scenes[-1].caption
out = pipe.run({"videos": {"query": question, "filters": {"field": "meta.n_scenes", "operator": ">=", "value": 2}},
                "prompt": {"question": question}})
print(out["prompt"]["prompt"])
