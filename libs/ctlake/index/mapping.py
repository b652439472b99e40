"""Elasticsearch mappings generated from Spark schemas (``ctlake.lake.schemas`` is the one truth).

A column declared there appears in the mapping of every index entity that reads it; nothing is
written by hand. Type rules (``es_field``):

================================  =============================================================
Spark type                        Elasticsearch field
================================  =============================================================
string                            ``keyword`` (``ignore_above`` 4096: an over-long value is kept
                                  in ``_source`` but not indexed, never a rejected document);
                                  names ending ``_json``, ``_detail``, ``_message`` or ``error``
                                  are ``text`` (standard analyzer, core Lucene)
boolean / int / long / float /    ``boolean`` / ``integer`` / ``long`` / ``float`` / ``double``
double
timestamp / date                  ``date`` (ISO-8601, UTC)
array<X>                          the field of X (Elasticsearch fields hold arrays as they are)
struct                            ``object`` with its own properties (strict as the root)
map<string, number>               ``object`` with ``subobjects: false`` and ``dynamic: true``
                                  plus one dynamic template for ``<field>.*`` of the map's
                                  numeric type: every key becomes a numeric field
                                  ``<field>.<key>`` (dots in keys stay in the name); a value
                                  of another type is rejected and reported. Known keys (the
                                  radiomics feature names, the evaluation metrics) are declared
                                  up front so they exist before the first document.
map<string, other>                ``flattened`` (keys searchable, values as keywords)
binary                            left out: bytes, masks and pixels never go to the index
================================  =============================================================

Everything else in the document is ``dynamic: strict``: an undeclared field is a rejected
document, reported in ``ops.index_rejections`` with Elasticsearch's reason.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Mapping

from pyspark.sql import types as T

KEYWORD_IGNORE_ABOVE = 4096
TEXT_SUFFIXES = ("_json", "_detail", "_message", "error")

_NUMERIC = {
    T.BooleanType: "boolean",
    T.ByteType: "byte",
    T.ShortType: "short",
    T.IntegerType: "integer",
    T.LongType: "long",
    T.FloatType: "float",
    T.DoubleType: "double",
}


def is_text(name: str) -> bool:
    """Free-text columns (messages, details, JSON blobs) are analysed ``text``, not ``keyword``."""
    return name.endswith(TEXT_SUFFIXES)


def es_field(name: str, dt: T.DataType, *, known_keys: Iterable[str] = ()) -> dict | None:
    """The Elasticsearch field for a Spark column, or None when the column is never indexed."""
    if isinstance(dt, T.ArrayType):
        return es_field(name, dt.elementType, known_keys=known_keys)
    if isinstance(dt, T.BinaryType):
        return None
    if isinstance(dt, T.StringType):
        if is_text(name):
            return {"type": "text"}
        return {"type": "keyword", "ignore_above": KEYWORD_IGNORE_ABOVE}
    if isinstance(dt, (T.TimestampType, T.TimestampNTZType, T.DateType)):
        return {"type": "date"}
    if isinstance(dt, T.DecimalType):
        return {"type": "double"}
    for spark_type, es_type in _NUMERIC.items():
        if isinstance(dt, spark_type):
            return {"type": es_type}
    if isinstance(dt, T.StructType):
        props = fields_mapping(dt.fields)
        return {"type": "object", "properties": props}
    if isinstance(dt, T.MapType):
        value = es_field(name, dt.valueType)
        if isinstance(dt.keyType, T.StringType) and value and value["type"] in _NUMERIC.values() \
                and value["type"] != "boolean":
            return {"type": "object", "dynamic": "true", "subobjects": False,
                    "properties": {k: dict(value) for k in sorted(set(known_keys))}}
        return {"type": "flattened"}
    raise TypeError(f"column {name!r}: no Elasticsearch mapping for Spark type {dt.simpleString()}")


def map_value_type(dt: T.DataType) -> str | None:
    """For a numeric map column: the Elasticsearch type of its values (for the dynamic template)."""
    if isinstance(dt, T.MapType):
        value = es_field("", dt.valueType)
        if isinstance(dt.keyType, T.StringType) and value and value["type"] in _NUMERIC.values() \
                and value["type"] != "boolean":
            return value["type"]
    return None


def fields_mapping(fields: Iterable[T.StructField], *,
                   known_keys: Mapping[str, Iterable[str]] | None = None) -> dict:
    """``properties`` for ``fields`` (binary columns left out)."""
    known_keys = known_keys or {}
    props: dict = {}
    for f in fields:
        m = es_field(f.name, f.dataType, known_keys=known_keys.get(f.name, ()))
        if m is not None:
            props[f.name] = m
    return props


def build_mapping(fields: Iterable[T.StructField], *,
                  known_keys: Mapping[str, Iterable[str]] | None = None, meta: dict | None = None) -> dict:
    """A complete ``dynamic: strict`` mapping: properties plus one dynamic template per numeric map."""
    fields = list(fields)
    templates = []
    for f in fields:
        vtype = map_value_type(f.dataType)
        if vtype:
            templates.append({f"{f.name}_values": {"path_match": f"{f.name}.*", "mapping": {"type": vtype}}})
    mapping: dict = {"dynamic": "strict", "date_detection": False, "numeric_detection": False,
                     "properties": fields_mapping(fields, known_keys=known_keys)}
    if templates:
        mapping["dynamic_templates"] = templates
    if meta:
        mapping["_meta"] = meta
    return mapping


def mapping_hash(mapping: dict, settings: dict | None = None) -> str:
    """8 hex digits over the mapping and index settings (``_meta`` excluded): the version of an index."""
    body = {k: v for k, v in mapping.items() if k != "_meta"}
    text = json.dumps({"mappings": body, "settings": settings or {}}, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:8]


def leaf_fields(mapping: dict) -> dict[str, str]:
    """Dotted field path -> Elasticsearch type for every declared leaf (objects descended)."""
    out: dict[str, str] = {}

    def walk(props: dict, prefix: str) -> None:
        for name, m in props.items():
            path = f"{prefix}{name}"
            if "properties" in m:
                walk(m["properties"], path + ".")
            else:
                out[path] = m.get("type", "object")

    walk(mapping.get("properties", {}), "")
    return out
