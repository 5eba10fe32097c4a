"""Stage 2 of search: text-conditioned aggregations (parameter-free and the X-Pool head), the one
aggregation resolver and head loader, candidate scoring with its caches, and hits with moments."""
