"""Protobuf resources to plain rows, and rows to table / JSON / YAML / CSV."""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Sequence
from typing import Any

import yaml
from google.protobuf.descriptor import FieldDescriptor
from google.protobuf.message import Message

from tashi.runtime.names import HOST_STATE_NAMES, INSTANCE_STATE_NAMES, NETWORK_KIND_NAMES

ENUM_NAMES = {
    "tashi.v1.InstanceState": INSTANCE_STATE_NAMES,
    "tashi.v1.HostState": HOST_STATE_NAMES,
    "tashi.v1.NetworkKind": NETWORK_KIND_NAMES,
}
FORMATS = ("table", "json", "yaml", "csv")


def _value(field: FieldDescriptor, value: Any) -> Any:
    if field.type == FieldDescriptor.TYPE_ENUM:
        names = ENUM_NAMES.get(field.enum_type.full_name)
        if names is not None:
            return names.get(value, str(value))
        return field.enum_type.values_by_number[value].name if value in \
            field.enum_type.values_by_number else value
    if field.type == FieldDescriptor.TYPE_MESSAGE:
        if field.message_type.full_name == "google.protobuf.Timestamp":
            return value.ToJsonString() if value.seconds or value.nanos else ""
        return to_dict(value)
    return value


def to_dict(msg: Message) -> dict[str, Any]:
    """Every field (defaults included) under its proto name; enums as names."""
    out: dict[str, Any] = {}
    for field in msg.DESCRIPTOR.fields:
        value = getattr(msg, field.name)
        if field.message_type is not None and field.message_type.GetOptions().map_entry:
            out[field.name] = dict(value)
        elif field.is_repeated:
            out[field.name] = [_value(field, v) for v in value]
        elif field.containing_oneof is not None and not msg.HasField(field.name):
            continue
        else:
            out[field.name] = _value(field, value)
    return out


# Table names of nested fields that differ from the field's own name: the
# columns people used before instances carried a spec and a status.
FLAT_NAMES = {("status", "reason"): "state_reason"}


def flatten(row: dict[str, Any]) -> dict[str, Any]:
    """A resource with a spec and a status as one flat row for a table or CSV:
    the spec's and the status's fields lifted beside id, name and owner.  Where
    both have a field (nics), the status's is the one in effect and keeps the
    name; the spec's becomes `spec_<name>`."""
    parts = [p for p in ("spec", "status") if isinstance(row.get(p), dict)]
    if not parts:
        return row
    out = {k: v for k, v in row.items() if k not in parts}
    for part in parts:
        for key, value in row[part].items():
            name = FLAT_NAMES.get((part, key), key)
            if part == "status" and name in out and name in row.get("spec", {}):
                out[f"spec_{name}"] = out.pop(name)
            out[name] = value
    return out


def _cell(value: Any) -> str:
    if isinstance(value, bool):
        return "True" if value else "False"
    if isinstance(value, dict):
        return ",".join(f"{k}={v}" for k, v in value.items())
    if isinstance(value, list):
        return ",".join(_cell(v) for v in value)
    return "" if value is None else str(value)


def choose_columns(default: Sequence[str], show: Sequence[str], hide: Sequence[str],
                   available: Sequence[str]) -> list[str]:
    cols = [c for c in default if c not in hide]
    for c in show:
        if c not in cols:
            if c not in available:
                raise ValueError(f"no column {c!r}; columns are: {', '.join(available)}")
            cols.append(c)
    return cols


def render(rows: list[dict[str, Any]], fmt: str, columns: Sequence[str]) -> str:
    if fmt == "json":
        return json.dumps(rows, indent=2)
    if fmt == "yaml":
        return yaml.safe_dump(rows, sort_keys=False, default_flow_style=False).rstrip()
    if fmt == "csv":
        buf = io.StringIO()
        writer = csv.writer(buf, lineterminator="\n")
        writer.writerow(columns)
        for row in rows:
            writer.writerow([_cell(row.get(c)) for c in columns])
        return buf.getvalue().rstrip("\n")
    table = [[_cell(row.get(c)) for c in columns] for row in rows]
    widths = [max([len(c)] + [len(r[i]) for r in table]) for i, c in enumerate(columns)]
    lines = ["  ".join(c.ljust(w) for c, w in zip(columns, widths, strict=True)).rstrip(),
             "  ".join("-" * w for w in widths)]
    lines += ["  ".join(v.ljust(w) for v, w in zip(r, widths, strict=True)).rstrip()
              for r in table]
    return "\n".join(lines)
