"""Data: manifests, audio loading, datasets, samplers and shards."""
