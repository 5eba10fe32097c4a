"""Storage: point ids and payloads, the collection schema, the one stage-1 plan, and the back ends
that execute it (qdrant-client local mode / server, Qdrant Edge)."""
