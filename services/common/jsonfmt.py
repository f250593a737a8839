"""Protobuf messages as the JSON the contracts promise (DESIGN.md, "What the contracts promise").

Proto field names in snake_case, every key present (``null`` when unset), job states in capitals
(``SUCCEEDED``), every other enum in lower case without its prefix (``accept``,
``image_classification``), timestamps as RFC 3339 strings.
"""

from __future__ import annotations

from typing import Any

from google.protobuf import descriptor as _descriptor
from google.protobuf import timestamp_pb2
from google.protobuf.message import Message

_UPPERCASE_ENUMS = {"traineragent.v1.JobState"}


def _enum_prefix(enum: _descriptor.EnumDescriptor) -> str:
    name = enum.name
    snake = "".join(f"_{c}" if c.isupper() and i else c for i, c in enumerate(name)).upper()
    return snake + "_"


def enum_to_json(enum: _descriptor.EnumDescriptor, number: int) -> str | None:
    """``JOB_STATE_SUCCEEDED`` -> ``SUCCEEDED``; ``TASK_TYPE_IMAGE_CLASSIFICATION`` -> ``image_classification``."""
    value = enum.values_by_number.get(number)
    if value is None or number == 0:
        return None
    short = value.name.removeprefix(_enum_prefix(enum))
    return short if enum.full_name in _UPPERCASE_ENUMS else short.lower()


def enum_from_json(enum: _descriptor.EnumDescriptor, text: str) -> int:
    """The inverse of :func:`enum_to_json`; raises ValueError naming the accepted values."""
    wanted = text.strip().upper()
    prefix = _enum_prefix(enum)
    for value in enum.values:
        if value.number and value.name.removeprefix(prefix) == wanted:
            return value.number
    accepted = ", ".join(v for v in (enum_to_json(enum, x.number) for x in enum.values) if v)
    raise ValueError(f"{text!r} is not one of: {accepted}")


def _scalar(field: _descriptor.FieldDescriptor, value: Any) -> Any:
    if field.type == field.TYPE_ENUM:
        return enum_to_json(field.enum_type, value)
    if field.type == field.TYPE_MESSAGE:
        return message_to_json(value)
    if field.type == field.TYPE_BYTES:
        return value.hex()
    return value


def message_to_json(message: Message) -> Any:
    """A message as a JSON-ready value (dict, or a string for a Timestamp)."""
    if isinstance(message, timestamp_pb2.Timestamp):
        return message.ToJsonString() if (message.seconds or message.nanos) else None
    out: dict[str, Any] = {}
    for field in message.DESCRIPTOR.fields:
        value = getattr(message, field.name)
        if field.message_type is not None and field.message_type.GetOptions().map_entry:
            value_field = field.message_type.fields_by_name["value"]
            out[field.name] = {k: _scalar(value_field, v) for k, v in value.items()}
        elif field.is_repeated:
            out[field.name] = [_scalar(field, v) for v in value]
        elif field.has_presence and not message.HasField(field.name):
            out[field.name] = None
        else:
            out[field.name] = _scalar(field, value)
    return out
