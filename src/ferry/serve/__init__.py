"""``ferry serve``: one long-running process per host that takes webhooks in, makes each event durable before it
acknowledges it, loads what is staged in micro-batches through the batch run's own plan and load path, and
runs each pipeline's ``schedule:`` of incremental batch runs. docs/serve.md describes it.

An application layer like ``ferry.cli``: it builds on the engine and reaches connectors only through the
registry and the contracts (``ferry.core.contracts``, ``ferry.core.webhooks``).
"""
