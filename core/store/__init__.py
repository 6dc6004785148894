"""Storage: typed records of models, reports and the registry (no torch), checkpoints (state_dict + JSON,
loaded with ``weights_only=True``), atomic writes, and the registry with one default per task."""
