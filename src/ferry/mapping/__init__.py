"""Mapping specs (the `objects:` section of a pipeline), compiled to fast functions, and target validation."""
