"""vtr-qdrant: text-to-video retrieval on Qdrant."""
__version__ = "0.1.0"
