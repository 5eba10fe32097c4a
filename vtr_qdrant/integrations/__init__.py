"""vtr-qdrant inside RAG and search stacks: retrievers for LangChain, LlamaIndex and Haystack.

Each framework is an extra (``pip install 'vtr-qdrant[langchain]'``, ``[llama-index]``,
``[haystack]``) imported only when its module is: ``vtr_qdrant.integrations.langchain``,
``.llama_index``, ``.haystack``. Every retriever maps hits to documents through
:mod:`vtr_qdrant.integrations.documents` (one rule for text, metadata and order) and, where the
framework has an async path, awaits :class:`~vtr_qdrant.aio.AsyncVideoCollection`.

Arguments every retriever takes (besides its framework's name for the number of results):

- ``collection``: a :class:`~vtr_qdrant.collection.VideoCollection`, or an
  :class:`~vtr_qdrant.aio.AsyncVideoCollection` (the async entry point then awaits it natively;
  the sync one works from threads without a running event loop) (:mod:`.calls`);
- ``score_threshold``: drop hits whose stage-2 score is below this;
- ``aggregation``: the stage-2 aggregation name for these searches (default: the collection's);
- ``content``: ``VideoHit -> str``, the text of a hit whose payload has no caption (:mod:`.documents`).
"""
