"""Each integration names its extra when its framework is missing."""

from __future__ import annotations

import importlib
import sys

import pytest

from vtr_qdrant import MissingDependencyError


@pytest.mark.parametrize(
    "module, framework, extra",
    [("langchain", "langchain_core", "langchain"), ("llama_index", "llama_index.core", "llama-index"), ("haystack", "haystack", "haystack")],
)
def test_a_missing_framework_names_the_extra(module: str, framework: str, extra: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, framework, None)  # import of it now raises ImportError
    monkeypatch.delitem(sys.modules, f"vtr_qdrant.integrations.{module}", raising=False)
    with pytest.raises(MissingDependencyError, match=rf"pip install 'vtr-qdrant\[{extra}\]'"):
        importlib.import_module(f"vtr_qdrant.integrations.{module}")
