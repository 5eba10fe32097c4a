"""vtr-qdrant inside RAG and search stacks: retrievers for LangChain, LlamaIndex and Haystack.

Each framework is an extra (``pip install 'vtr-qdrant[langchain]'``, ``[llama-index]``,
``[haystack]``) imported only when its module is: ``vtr_qdrant.integrations.langchain``,
``.llama_index``, ``.haystack``. Every retriever maps hits to documents through
:mod:`vtr_qdrant.integrations.documents` (one rule for text, metadata and order) and, where the
framework has an async path, awaits :class:`~vtr_qdrant.aio.AsyncVideoCollection`.
"""
