"""The work bus for distributed mode: NATS JetStream behind the ``ferry.core.bus`` port (docs/bus.md).

``FERRY_BUS_URL`` selects it (``bus_settings``); embedded mode keeps no bus. Modules: ``jetstream`` (the adapter),
``consume`` (the worker's consumer loop), ``work`` (work items and their wire form), ``dedup`` (processed-id
stores), ``check`` (what ``ferry doctor`` reports), ``config`` (settings from the environment).
"""
