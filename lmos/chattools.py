"""Tool declarations of the chat format: validation and the system-turn block that lists them.

A caller allows the model some tools by *declaring* them: a name, a
description and a JSON-schema of the arguments, in lmos's shape
``{"name", "description", "parameters"}`` or OpenAI's ``{"type": "function",
"function": {...}}``.  One format serves lmos's own tools and a client's
functions, so the OpenAI front end maps ``tools=[...]`` straight onto it and a
model trained on lmos's tools reads a client's tool the same way.

The model sees the declarations as one compact block appended to the system
turn (:func:`tool_block`)::

    Tools:
    weather(city: string, unit?: "c"|"f") - Current weather of a city.

A full JSON schema would cost a small model hundreds of tokens of its
1,024-token window; a signature line is what it needs to name the tool and fill
in simple string and number arguments.  ``?`` marks an optional argument, an
enum lists its values.  :data:`lmos.chatformat.CHAT_TEMPLATE` renders the same
block from the same declarations (a test checks they agree).

Validation refuses a bad declaration with ``EINVAL`` naming the exact field
(``tools[1].parameters.properties.city.type: unknown type 'strng'``), because
a client cannot fix what it is not told.  This module is stdlib only and sits
below :mod:`lmos.chatformat` in the import graph.
"""

from __future__ import annotations

import copy
import json
import re
from typing import Any

from lmos.errors import Errno, SyscallError

NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_.-]{0,63}$")
TYPES = ("string", "integer", "number", "boolean", "array", "object")
MAX_TOOLS = 64
MAX_PROPERTIES = 32
MAX_ENUM = 32
MAX_DESCRIPTION_CHARS = 4096
BLOCK_DESCRIPTION_CHARS = 120
BLOCK_HEADER = "Tools:"


def _bad(path: str, message: str) -> SyscallError:
    return SyscallError(Errno.EINVAL, f"{path}: {message}")


def _check_name(value: Any, path: str, what: str) -> str:
    if not isinstance(value, str):
        raise _bad(path, f"{what} must be a string")
    if not NAME.match(value):
        raise _bad(path, f"bad {what} {value!r} (letters, digits, _ . -; at most 64; no digit first)")
    return value


def _check_property(schema: Any, path: str) -> dict[str, Any]:
    if not isinstance(schema, dict):
        raise _bad(path, "must be an object (a JSON schema)")
    if "enum" in schema:
        values = schema["enum"]
        if not isinstance(values, list) or not values:
            raise _bad(path + ".enum", "must be a non-empty list")
        if len(values) > MAX_ENUM:
            raise _bad(path + ".enum", f"at most {MAX_ENUM} values")
        for i, v in enumerate(values):
            if not isinstance(v, str | int | float | bool):
                raise _bad(f"{path}.enum[{i}]", "values must be strings, numbers or booleans")
    elif "type" not in schema:
        raise _bad(path, "needs a 'type' or an 'enum'")
    if "type" in schema:
        kind = schema["type"]
        if not isinstance(kind, str):
            raise _bad(path + ".type", f"must be one of {'|'.join(TYPES)} (one string)")
        if kind not in TYPES:
            raise _bad(path + ".type", f"unknown type {kind!r} (one of {'|'.join(TYPES)})")
    if "description" in schema and not isinstance(schema["description"], str):
        raise _bad(path + ".description", "must be a string")
    return copy.deepcopy(schema)


def _check_parameters(params: Any, path: str) -> dict[str, Any]:
    if params is None:
        return {"type": "object", "properties": {}, "required": []}
    if not isinstance(params, dict):
        raise _bad(path, "must be an object (a JSON schema of type 'object')")
    if params.get("type", "object") != "object":
        raise _bad(path + ".type", f"must be 'object', not {params.get('type')!r}")
    props = params.get("properties")
    props = {} if props is None else props
    if not isinstance(props, dict):
        raise _bad(path + ".properties", "must be an object mapping argument names to schemas")
    if len(props) > MAX_PROPERTIES:
        raise _bad(path + ".properties", f"at most {MAX_PROPERTIES} arguments")
    checked: dict[str, Any] = {}
    for key, schema in props.items():
        _check_name(key, f"{path}.properties", "argument name")
        checked[key] = _check_property(schema, f"{path}.properties.{key}")
    required = params.get("required")
    required = [] if required is None else required
    if not isinstance(required, list):
        raise _bad(path + ".required", "must be a list of argument names")
    for i, key in enumerate(required):
        if not isinstance(key, str) or key not in checked:
            raise _bad(f"{path}.required[{i}]", f"{key!r} is not one of the properties")
    out = {k: copy.deepcopy(v) for k, v in params.items() if k not in ("properties", "required")}
    out.update({"type": "object", "properties": checked, "required": list(required)})
    return out


def validate_tool(tool: Any, path: str) -> dict[str, Any]:
    """One declaration, either shape, as an lmos dict ``{"name", "description", "parameters"}``."""
    if not isinstance(tool, dict):
        raise _bad(path, "a tool declaration must be an object")
    if "function" in tool or tool.get("type") not in (None, "function"):
        if tool.get("type", "function") != "function":
            raise _bad(path + ".type", f"unknown tool type {tool.get('type')!r} (only 'function')")
        tool, path = tool.get("function"), path + ".function"
        if not isinstance(tool, dict):
            raise _bad(path, "must be an object with name, description and parameters")
    if "name" not in tool:
        raise _bad(path + ".name", "missing")
    name = _check_name(tool["name"], path + ".name", "tool name")
    desc = tool.get("description")
    if desc is not None and not isinstance(desc, str):
        raise _bad(path + ".description", "must be a string")
    if desc is not None and len(desc) > MAX_DESCRIPTION_CHARS:
        raise _bad(path + ".description", f"longer than {MAX_DESCRIPTION_CHARS} characters")
    params = _check_parameters(tool.get("parameters"), path + ".parameters")
    return {"name": name, "description": desc or "", "parameters": params}


def validate_tools(tools: Any) -> list[dict[str, Any]]:
    """Check tool declarations and return them normalised to lmos's shape.

    Raises ``SyscallError(EINVAL, "<field path>: <what is wrong>")`` naming the
    wrong field, e.g. ``tools[1].parameters.properties.city.type: unknown type
    'strng' (...)``.  Missing ``parameters`` means the tool takes no arguments.
    """
    if not isinstance(tools, list):
        raise _bad("tools", "must be a list of tool declarations")
    if len(tools) > MAX_TOOLS:
        raise _bad("tools", f"at most {MAX_TOOLS} tools")
    out: list[dict[str, Any]] = []
    seen: set[str] = set()
    for i, tool in enumerate(tools):
        decl = validate_tool(tool, f"tools[{i}]")
        if decl["name"] in seen:
            raise _bad(f"tools[{i}].name", f"duplicate tool name {decl['name']!r}")
        seen.add(decl["name"])
        out.append(decl)
    return out


def _arg_text(key: str, schema: dict[str, Any], required: list[str]) -> str:
    if "enum" in schema:
        kind = "|".join(json.dumps(v, ensure_ascii=False) for v in schema["enum"])
    else:
        kind = str(schema["type"])
    return f"{key}{'' if key in required else '?'}: {kind}"


def tool_line(tool: dict[str, Any]) -> str:
    """``name(arg: type, opt?: type, unit: "c"|"f") - description`` for one validated declaration.

    The description is its first line, stripped, at most 120 characters; the
    ``" - description"`` part is left out when that is empty.
    """
    params = tool["parameters"]
    args = ", ".join(_arg_text(k, s, params["required"]) for k, s in params["properties"].items())
    desc = tool["description"].split("\n")[0].strip()[:BLOCK_DESCRIPTION_CHARS]
    return f"{tool['name']}({args})" + (f" - {desc}" if desc else "")


def tool_block(tools: list[Any]) -> str:
    """The system-turn block declaring ``tools`` (validated first): ``Tools:`` and one line per tool."""
    return "\n".join([BLOCK_HEADER, *(tool_line(t) for t in validate_tools(tools))])


def tool_names(tools: list[Any] | None) -> list[str]:
    """The declared tools' names, in order (the only tools a model may call)."""
    return [t["name"] for t in validate_tools(tools)] if tools else []
