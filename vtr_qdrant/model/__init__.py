"""Models: bundle manifests, resolving and caching bundles, ONNX Runtime sessions, preprocessing,
the tokenizer and the text / frame encoders (stage ``model`` of the pipeline)."""
