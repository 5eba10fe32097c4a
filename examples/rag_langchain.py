"""Retrieval-augmented generation with LangChain: videos as cited context for an LLM prompt.

    pip install 'vtr-qdrant[langchain]'
    python examples/rag_langchain.py

The retriever returns one ``Document`` per video (text: its caption; metadata: video id, uri,
score and the matching moment's start / end / peak). The chain below formats them as numbered
sources with time stamps and fills a chat prompt; plug in any chat model as the last step
(offline here, so the prompt is printed instead of sent).
"""

from demo_collection import demo_collection
from langchain_core.documents import Document
from langchain_core.prompts import ChatPromptTemplate
from langchain_core.runnables import RunnableLambda, RunnablePassthrough

from vtr_qdrant.integrations.langchain import VideoRetriever

videos, world = demo_collection()
retriever = VideoRetriever(collection=videos, k=3)


def cite(docs: list[Document]) -> str:
    return "\n".join(
        f"[{i}] {d.metadata['uri']} at {d.metadata['start']:.1f}-{d.metadata['end']:.1f} s: {d.page_content}"
        for i, d in enumerate(docs, 1)
    )


prompt = ChatPromptTemplate.from_messages([
    ("system", "Answer from the video sources below and cite them as [n] with their time stamps.\n{sources}"),
    ("human", "{question}"),
])
chain = {"sources": retriever | RunnableLambda(cite), "question": RunnablePassthrough()} | prompt  # | your chat model

question = world.videos[0].scenes[-1].caption
for message in chain.invoke(question).to_messages():
    print(f"--- {message.type}\n{message.content}")
