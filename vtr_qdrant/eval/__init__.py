"""Retrieval evaluation: general metrics (R@K, MdR, MnR) and the runner over query files."""
