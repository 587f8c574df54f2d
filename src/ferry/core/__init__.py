"""ferry's shared vocabulary, below every connector: what a Source and a Sink are, and the words they speak.

Nothing here names a system. The engine, the mapping and the store see only these types; a connector
package (``ferry.connectors.<system>``) implements the protocols in ``contracts`` and ``ports``.

- ``schema``: the target's objects and fields as its describe reports them.
- ``records``: mapped records, structured references to parents.
- ``results``: the target's per-record answers.
- ``writes``: write strategies with their cost in API calls, and the planner's choice.
- ``dialect``: how a target measures, converts and renders values (lengths, references).
- ``contracts``: the Source and Sink protocols, capabilities, pages and their opaque read state.
- ``ports``: the state store, one port per concern, dataclasses in and out.
"""
