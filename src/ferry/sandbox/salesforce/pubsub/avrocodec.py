"""Apache Avro binary encoding (no container, no header: what Pub/Sub API events carry) and schema ids.

Implements the parts of the Avro 1.11 specification the org's event schemas use: null, boolean, int,
long, float, double, bytes, string, record, enum, array, map, union, fixed, and named-type references.
Written against the specification, not a library, so the tests' decoding with the `avro` package
(as Salesforce's Python example does) checks this encoder independently.

Schema ids are what the org returns: the MD5 fingerprint of the schema's Parsing Canonical Form,
base64url without padding (REST API Developer Guide, "Platform Event Schema by Schema ID": "the MD5
fingerprint of the normalized Avro schema encoded as a base-64 URL variant").
"""

from __future__ import annotations

import base64
import hashlib
import io
import struct
from typing import Any

import orjson

Schema = Any  # a parsed Avro schema in its JSON form: str (primitive or name), list (union) or dict

PRIMITIVES = frozenset({"null", "boolean", "int", "long", "float", "double", "bytes", "string"})


class AvroError(ValueError):
    """A datum that does not match its schema, or bytes that do not decode with it."""


def named_types(schema: Schema, namespace: str = "", out: dict[str, dict[str, Any]] | None = None
                ) -> dict[str, dict[str, Any]]:
    """Every named type (record, enum, fixed) by full name and by short name, for references."""
    names = {} if out is None else out
    if isinstance(schema, list):
        for branch in schema:
            named_types(branch, namespace, names)
    elif isinstance(schema, dict):
        kind = schema.get("type")
        if kind in ("record", "error", "enum", "fixed"):
            space = schema.get("namespace", namespace)
            full = _full_name(schema["name"], space)
            names[full] = schema
            names.setdefault(schema["name"].rsplit(".", 1)[-1], schema)
            for f in schema.get("fields", ()):
                named_types(f["type"], full.rpartition(".")[0], names)
        elif kind == "array":
            named_types(schema["items"], namespace, names)
        elif kind == "map":
            named_types(schema["values"], namespace, names)
        elif isinstance(kind, (dict, list)):
            named_types(kind, namespace, names)
    return names


def _full_name(name: str, namespace: str) -> str:
    return name if "." in name or not namespace else f"{namespace}.{name}"


class Codec:
    """Binary encoder and decoder for one schema."""

    def __init__(self, schema: Schema) -> None:
        self.schema = schema
        self.names = named_types(schema)

    # --- encoding -----------------------------------------------------------------------------------

    def encode(self, datum: Any) -> bytes:
        buf = io.BytesIO()
        self._write(self.schema, datum, buf)
        return buf.getvalue()

    def _resolve(self, schema: Schema) -> Schema:
        if isinstance(schema, str) and schema not in PRIMITIVES:
            try:
                return self.names[schema]
            except KeyError:
                raise AvroError(f"unknown Avro type {schema!r}") from None
        if isinstance(schema, dict) and isinstance(schema.get("type"), str) and schema["type"] in PRIMITIVES:
            return schema["type"]  # {"type": "long", "logicalType": ...}
        return schema

    def _write(self, schema: Schema, datum: Any, out: io.BytesIO) -> None:
        schema = self._resolve(schema)
        if isinstance(schema, list):
            index = self._branch(schema, datum)
            out.write(_zigzag(index))
            self._write(schema[index], datum, out)
        elif isinstance(schema, str):
            self._write_primitive(schema, datum, out)
        else:
            self._write_complex(schema, datum, out)

    def _write_primitive(self, kind: str, datum: Any, out: io.BytesIO) -> None:
        if kind == "null":
            if datum is not None:
                raise AvroError(f"{datum!r} is not null")
        elif kind == "boolean":
            if not isinstance(datum, bool):
                raise AvroError(f"{datum!r} is not a boolean")
            out.write(b"\x01" if datum else b"\x00")
        elif kind in ("int", "long"):
            if isinstance(datum, bool) or not isinstance(datum, int):
                raise AvroError(f"{datum!r} is not an {kind}")
            out.write(_zigzag(datum))
        elif kind in ("float", "double"):
            if isinstance(datum, bool) or not isinstance(datum, (int, float)):
                raise AvroError(f"{datum!r} is not a {kind}")
            out.write(struct.pack("<f" if kind == "float" else "<d", float(datum)))
        elif kind in ("bytes", "string"):
            raw = datum.encode("utf-8") if kind == "string" and isinstance(datum, str) else datum
            if not isinstance(raw, bytes):
                raise AvroError(f"{datum!r} is not {kind}")
            out.write(_zigzag(len(raw)))
            out.write(raw)

    def _write_complex(self, schema: dict[str, Any], datum: Any, out: io.BytesIO) -> None:
        kind = schema["type"]
        if kind in ("record", "error"):
            if not isinstance(datum, dict):
                raise AvroError(f"{schema['name']}: {datum!r} is not a record")
            for f in schema["fields"]:
                value = datum.get(f["name"], f.get("default"))
                try:
                    self._write(f["type"], value, out)
                except AvroError as exc:
                    raise AvroError(f"{schema['name']}.{f['name']}: {exc}") from None
        elif kind == "enum":
            try:
                out.write(_zigzag(schema["symbols"].index(datum)))
            except ValueError:
                raise AvroError(f"{datum!r} is not a symbol of {schema['name']}") from None
        elif kind in ("array", "map"):
            items = list(datum.items()) if kind == "map" else list(datum)
            if items:
                out.write(_zigzag(len(items)))
                for item in items:
                    if kind == "map":
                        self._write_primitive("string", item[0], out)
                        self._write(schema["values"], item[1], out)
                    else:
                        self._write(schema["items"], item, out)
            out.write(b"\x00")
        elif kind == "fixed":
            if not isinstance(datum, bytes) or len(datum) != schema["size"]:
                raise AvroError(f"{datum!r} is not fixed[{schema['size']}]")
            out.write(datum)
        else:
            raise AvroError(f"unsupported Avro type {kind!r}")

    def _branch(self, union: list[Schema], datum: Any) -> int:
        for index, branch in enumerate(union):
            if self._matches(self._resolve(branch), datum):
                return index
        raise AvroError(f"{datum!r} matches no branch of {union}")

    @staticmethod
    def _matches(schema: Schema, datum: Any) -> bool:
        kind = schema if isinstance(schema, str) else schema.get("type")
        checks: dict[str, Any] = {
            "null": lambda d: d is None,
            "boolean": lambda d: isinstance(d, bool),
            "int": lambda d: isinstance(d, int) and not isinstance(d, bool) and -2**31 <= d < 2**31,
            "long": lambda d: isinstance(d, int) and not isinstance(d, bool),
            "float": lambda d: isinstance(d, (int, float)) and not isinstance(d, bool),
            "double": lambda d: isinstance(d, (int, float)) and not isinstance(d, bool),
            "bytes": lambda d: isinstance(d, bytes),
            "string": lambda d: isinstance(d, str),
            "record": lambda d: isinstance(d, dict),
            "map": lambda d: isinstance(d, dict),
            "array": lambda d: isinstance(d, (list, tuple)),
            "enum": lambda d: isinstance(d, str) and d in schema["symbols"],
            "fixed": lambda d: isinstance(d, bytes) and len(d) == schema["size"],
        }
        check = checks.get(str(kind))
        return bool(check and check(datum))

    # --- decoding -----------------------------------------------------------------------------------

    def decode(self, data: bytes) -> Any:
        buf = io.BytesIO(data)
        try:
            value = self._read(self.schema, buf)
        except (struct.error, UnicodeDecodeError, IndexError) as exc:
            raise AvroError(f"payload does not decode with the schema: {exc}") from None
        if buf.read(1):
            raise AvroError("payload has bytes left over after the schema's record")
        return value

    def _read(self, schema: Schema, buf: io.BytesIO) -> Any:
        schema = self._resolve(schema)
        if isinstance(schema, list):
            index = _read_long(buf)
            if not 0 <= index < len(schema):
                raise AvroError(f"union branch {index} out of range")
            return self._read(schema[index], buf)
        if isinstance(schema, str):
            return self._read_primitive(schema, buf)
        return self._read_complex(schema, buf)

    @staticmethod
    def _read_primitive(kind: str, buf: io.BytesIO) -> Any:
        if kind == "null":
            return None
        if kind == "boolean":
            return _read_exact(buf, 1) != b"\x00"
        if kind in ("int", "long"):
            return _read_long(buf)
        if kind == "float":
            return struct.unpack("<f", _read_exact(buf, 4))[0]
        if kind == "double":
            return struct.unpack("<d", _read_exact(buf, 8))[0]
        raw = _read_exact(buf, _read_long(buf))
        return raw.decode("utf-8") if kind == "string" else raw

    def _read_complex(self, schema: dict[str, Any], buf: io.BytesIO) -> Any:
        kind = schema["type"]
        if kind in ("record", "error"):
            return {f["name"]: self._read(f["type"], buf) for f in schema["fields"]}
        if kind == "enum":
            index = _read_long(buf)
            if not 0 <= index < len(schema["symbols"]):
                raise AvroError(f"enum index {index} out of range")
            return schema["symbols"][index]
        if kind == "fixed":
            return _read_exact(buf, schema["size"])
        items: list[Any] = []
        while count := _read_long(buf):
            if count < 0:
                _read_long(buf)  # a negative count is followed by the block's size in bytes
                count = -count
            for _ in range(count):
                if kind == "map":
                    items.append((self._read_primitive("string", buf), self._read(schema["values"], buf)))
                else:
                    items.append(self._read(schema["items"], buf))
        return dict(items) if kind == "map" else items


def _zigzag(n: int) -> bytes:
    n = (n << 1) ^ (n >> 63)
    out = bytearray()
    while n & ~0x7F:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


def _read_long(buf: io.BytesIO) -> int:
    shift = result = 0
    while True:
        byte = _read_exact(buf, 1)[0]
        result |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return (result >> 1) ^ -(result & 1)
        shift += 7
        if shift > 63:
            raise AvroError("varint too long")


def _read_exact(buf: io.BytesIO, n: int) -> bytes:
    data = buf.read(n)
    if len(data) != n:
        raise AvroError("payload ends early")
    return data


# --- schema ids -------------------------------------------------------------------------------------

_CANONICAL_KEYS = ("name", "type", "fields", "symbols", "items", "values", "size")


def canonical_form(schema: Schema, namespace: str = "", seen: set[str] | None = None) -> str:
    """The schema's Parsing Canonical Form (Avro specification, "Parsing Canonical Form for Schemas")."""
    seen = set() if seen is None else seen
    if isinstance(schema, str):
        name = schema if schema in PRIMITIVES else _full_name(schema, namespace)
        return orjson.dumps(name).decode()
    if isinstance(schema, list):
        return "[" + ",".join(canonical_form(s, namespace, seen) for s in schema) + "]"
    kind = schema["type"]
    if isinstance(kind, str) and kind in PRIMITIVES:
        return orjson.dumps(kind).decode()
    if not isinstance(kind, str):
        return canonical_form(kind, namespace, seen)
    parts: list[str] = []
    space = namespace
    if kind in ("record", "error", "enum", "fixed"):
        full = _full_name(schema["name"], schema.get("namespace", namespace))
        if full in seen:
            return orjson.dumps(full).decode()
        seen.add(full)
        space = full.rpartition(".")[0]
        parts.append(f'"name":{orjson.dumps(full).decode()}')
    for key in _CANONICAL_KEYS[1:]:
        if key == "type":
            parts.append(f'"type":{orjson.dumps("record" if kind == "error" else kind).decode()}')
        elif key == "fields" and key in schema:
            fields = [f'{{"name":{orjson.dumps(f["name"]).decode()},"type":{canonical_form(f["type"], space, seen)}}}'
                      for f in schema["fields"]]
            parts.append('"fields":[' + ",".join(fields) + "]")
        elif key == "symbols" and key in schema:
            parts.append(f'"symbols":{orjson.dumps(schema["symbols"]).decode()}')
        elif key in ("items", "values") and key in schema:
            parts.append(f'"{key}":{canonical_form(schema[key], space, seen)}')
        elif key == "size" and key in schema:
            parts.append(f'"size":{int(schema["size"])}')
    return "{" + ",".join(parts) + "}"


def schema_id(schema: Schema) -> str:
    """The org's schema id: MD5 of the Parsing Canonical Form, base64url, no padding (22 characters)."""
    digest = hashlib.md5(canonical_form(schema).encode("utf-8"), usedforsecurity=False).digest()
    return base64.urlsafe_b64encode(digest).decode("ascii").rstrip("=")
