"""The JSON schema of ``orchestrate report --format json`` (schema_version 1) and a small validator.

The validator handles the subset of JSON Schema used here: type (one or a list), properties,
required, additionalProperties: false, items, enum, minimum, maximum, const. Bump SCHEMA_VERSION in
report.py and document the change in docs/report.md whenever a key is renamed or removed; adding
an optional key keeps the version.
"""
from __future__ import annotations

from typing import Any

NUM = ["number", "null"]
INT = ["integer", "null"]
STR = ["string", "null"]
NUM_ = {"type": NUM}


def _obj(props: dict[str, Any], required: list[str] | None = None) -> dict[str, Any]:
    return {"type": "object", "properties": props, "required": required if required is not None else list(props),
            "additionalProperties": False}


_STATS = _obj({"mean": NUM_, "median": {"type": NUM}, "p10": {"type": NUM},
               "n": {"type": "integer", "minimum": 0}})
_VERDICT = {"type": "string", "enum": ["pass", "fail", "n/a"]}
_ENV = _obj({"zh": {"type": "string"}, "en": {"type": "string"}})

REPORT_SCHEMA: dict[str, Any] = _obj({
    "schema_version": {"const": 1},
    "lang": {"type": "string", "enum": ["zh", "en"]},
    "run": _obj({
        "run_id": {"type": "string"}, "job": {"type": STR}, "status": {"type": STR}, "image": {"type": STR},
        "image_id": {"type": STR}, "started": {"type": STR}, "ended": {"type": STR}, "duration_s": NUM_,
        "hosts": {"type": "array", "items": {"type": "string"}}, "attempt": {"type": INT},
    }),
    "config": _obj({
        "model": {"type": STR}, "device_kind": {"type": STR}, "device": {"type": STR},
        "device_count": {"type": "integer", "minimum": 1}, "nnodes": {"type": "integer", "minimum": 1},
        "world_size": {"type": INT}, "precision": {"type": STR}, "global_batch": {"type": INT},
        "epochs": {"type": INT}, "steps": {"type": INT}, "torch_version": {"type": STR},
        "data": {"type": ["string", "object", "null"]},
    }),
    "env": _ENV,
    "result": _obj({
        "top1": {"type": NUM, "minimum": 0, "maximum": 1}, "top5": {"type": NUM, "minimum": 0, "maximum": 1},
        "accuracy_source": {"type": STR, "enum": ["summary", "epoch", None]},
        "img_s": NUM_, "img_s_median": NUM_, "total_time_s": NUM_,
    }),
    "baseline": {"type": ["object", "null"], "properties": {
        "name": {"type": "string"}, "env": _ENV, "hosts": {"type": INT}, "devices_per_host": {"type": INT},
        "device": {"type": STR}, "model": {"type": "string"}, "precision": {"type": STR},
        "global_batch": {"type": INT}, "top1": {"type": NUM}, "top5": {"type": NUM}, "img_s": NUM_,
        "image_size": {"type": INT}, "source": {"type": "string"},
    }, "required": ["name", "env", "model", "top1", "img_s", "source"], "additionalProperties": False},
    "comparison": {"type": ["object", "null"], "properties": {
        "acc_rel_err": {"type": NUM, "minimum": 0}, "acc_tolerance": {"type": "number", "minimum": 0},
        "verdict": _VERDICT, "throughput_ratio": {"type": NUM, "minimum": 0},
    }, "required": ["acc_rel_err", "acc_tolerance", "verdict", "throughput_ratio"], "additionalProperties": False},
    "verdict": _VERDICT,
    "warnings": {"type": "array", "items": _obj({"code": {"type": "string", "enum": [
        "status", "no_summary", "model", "global_batch", "precision", "device_count", "no_accuracy"]},
        "message": {"type": "string"}})},
    "nodes": {"type": "array", "items": _obj({
        "node_rank": {"type": "integer", "minimum": 0}, "host": {"type": "string"},
        "ranks": {"type": "array", "items": {"type": "integer"}}, "img_s": _STATS,
        "data_wait_frac": {"type": NUM, "minimum": 0, "maximum": 1}, "exit_code": {"type": INT}})},
    "ranks": {"type": "array", "items": _obj({
        "rank": {"type": "integer", "minimum": 0}, "node_rank": {"type": "integer", "minimum": 0},
        "host": {"type": "string"}, "img_s_device": _STATS,
        "data_wait_frac": {"type": NUM, "minimum": 0, "maximum": 1}, "peak_mem_bytes": {"type": INT}})},
    "epochs": {"type": "array", "items": _obj({
        "epoch": {"type": INT}, "train_loss": NUM_, "val_loss": NUM_, "top1": NUM_, "top5": NUM_,
        "img_s_global": NUM_})},
    "scaling": {"type": ["object", "null"], "properties": {
        "from_run": {"type": "string"}, "from_device_count": {"type": "integer"}, "from_img_s": NUM_,
        "device_count": {"type": "integer"}, "img_s": NUM_, "k": NUM_, "efficiency": NUM_,
    }, "required": ["from_run", "from_device_count", "from_img_s", "device_count", "img_s", "k", "efficiency"],
        "additionalProperties": False},
    "conclusion": {"type": "string"},
})

_TYPES = {
    "object": lambda v: isinstance(v, dict),
    "array": lambda v: isinstance(v, list),
    "string": lambda v: isinstance(v, str),
    "integer": lambda v: isinstance(v, int) and not isinstance(v, bool),
    "number": lambda v: isinstance(v, (int, float)) and not isinstance(v, bool),
    "boolean": lambda v: isinstance(v, bool),
    "null": lambda v: v is None,
}


def validate(value: Any, schema: dict[str, Any], path: str = "$") -> list[str]:
    """Every violation as 'path: problem'; an empty list means valid."""
    errs: list[str] = []
    if "const" in schema and value != schema["const"]:
        return [f"{path}: expected {schema['const']!r}, got {value!r}"]
    if "type" in schema:
        types = schema["type"] if isinstance(schema["type"], list) else [schema["type"]]
        if not any(_TYPES[t](value) for t in types):
            return [f"{path}: expected {'|'.join(types)}, got {type(value).__name__} {value!r:.60}"]
    if "enum" in schema and value not in schema["enum"]:
        errs.append(f"{path}: {value!r} not one of {schema['enum']}")
    if _TYPES["number"](value):
        if "minimum" in schema and value < schema["minimum"]:
            errs.append(f"{path}: {value} < minimum {schema['minimum']}")
        if "maximum" in schema and value > schema["maximum"]:
            errs.append(f"{path}: {value} > maximum {schema['maximum']}")
    if isinstance(value, dict):
        props = schema.get("properties", {})
        for key in schema.get("required", []):
            if key not in value:
                errs.append(f"{path}: missing key {key!r}")
        for key, v in value.items():
            if key in props:
                errs += validate(v, props[key], f"{path}.{key}")
            elif schema.get("additionalProperties") is False:
                errs.append(f"{path}: unexpected key {key!r}")
    if isinstance(value, list) and "items" in schema:
        for i, v in enumerate(value):
            errs += validate(v, schema["items"], f"{path}[{i}]")
    return errs
