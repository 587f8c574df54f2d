"""Per-source normalizers: raw source JSON -> canonical records (``ferry.model.canonical``)."""
