"""Operations surface shared by every layer: Prometheus metrics, OpenTelemetry traces, log context.

Sits just above ``core`` and below ``store``/``connectors``/``engine`` so each of them can report what it does;
it imports nothing of ferry beyond the foundation modules.
"""
