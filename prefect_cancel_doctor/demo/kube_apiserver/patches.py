"""PATCH bodies and selectors as the API server applies them: label and field selectors, JSON merge
patches (RFC 7386), Kubernetes' strategic merge patches and JSON patches (RFC 6902).

Pure functions on JSON documents (no cluster, no Docker); they import only `status`.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Mapping
from typing import Any

from prefect_cancel_doctor.demo.kube_apiserver.status import ApiStatus

#: The content types of a strategic merge patch and of a JSON merge patch.
STRATEGIC = "application/strategic-merge-patch+json"
MERGE = "application/merge-patch+json"


# -- label and field selectors ---------------------------------------------------------


def parse_label_selector(text: str) -> Callable[[Mapping[str, str]], bool]:
    """A predicate for a label selector: ``a=b``, ``a==b``, ``a!=b``, ``a``, ``!a``, ``a in (x,y)``,
    ``a notin (x)``."""
    # (key, operator, values): operators "in", "notin", "exists", "!exists".
    requirements: list[tuple[str, str, frozenset[str]]] = []
    for part in (p.strip() for p in _split_selector(text)):
        if not part:
            continue
        if " notin " in part or " in " in part:
            operator = "notin" if " notin " in part else "in"
            key, _, values = part.partition(f" {operator} ")
            wanted = frozenset(v.strip() for v in values.strip().strip("()").split(","))
            requirements.append((key.strip(), operator, wanted))
        elif "!=" in part:
            key, _, value = part.partition("!=")
            requirements.append((key.strip(), "notin", frozenset({value.strip()})))
        elif "=" in part:
            key, _, value = part.replace("==", "=").partition("=")
            requirements.append((key.strip(), "in", frozenset({value.strip()})))
        elif part.startswith("!"):
            requirements.append((part[1:].strip(), "!exists", frozenset()))
        else:
            requirements.append((part, "exists", frozenset()))

    def matches(labels: Mapping[str, str]) -> bool:
        for key, operator, values in requirements:
            value = labels.get(key)
            ok = {
                "in": value in values,
                "notin": value not in values,
                "exists": key in labels,
                "!exists": key not in labels,
            }[operator]
            if not ok:
                return False
        return True

    return matches


def _split_selector(text: str) -> list[str]:
    parts, depth, current = [], 0, ""
    for char in text:
        if char == "(":
            depth += 1
        elif char == ")":
            depth -= 1
        if char == "," and depth == 0:
            parts.append(current)
            current = ""
        else:
            current += char
    parts.append(current)
    return parts


def parse_field_selector(text: str) -> Callable[[Mapping[str, Any]], bool]:
    """A predicate for ``path.to.field=value`` / ``!=`` terms on a document."""
    terms: list[tuple[list[str], str, bool]] = []
    for part in text.split(","):
        if not part.strip():
            continue
        negate = "!=" in part
        key, _, value = part.replace("==", "=").partition("!=" if negate else "=")
        terms.append((key.strip().split("."), value.strip(), negate))

    def matches(document: Mapping[str, Any]) -> bool:
        for path, value, negate in terms:
            current: Any = document
            for step in path:
                current = current.get(step) if isinstance(current, dict) else None
            if (str(current) == value) == negate:
                return False
        return True

    return matches


# -- patches ---------------------------------------------------------------------------


def json_merge_patch(target: Any, patch: Any) -> Any:
    """RFC 7386."""
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    result = dict(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        else:
            result[key] = json_merge_patch(result.get(key), value)
    return result


#: List fields merged by a key in a strategic merge patch (the rest are replaced).
_MERGE_KEYS = {
    "containers": "name",
    "ephemeralContainers": "name",
    "env": "name",
    "volumes": "name",
    "volumeMounts": "mountPath",
}


def strategic_merge_patch(target: Any, patch: Any) -> Any:
    """Kubernetes' strategic merge patch for the fields used here: lists of named objects merge by key,
    ``$setElementOrder/…`` and ``$retainKeys`` directives are accepted and ignored, null deletes."""
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    result = dict(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if key.startswith("$"):
            continue
        if value is None:
            result.pop(key, None)
        elif key in _MERGE_KEYS and isinstance(value, list):
            merge_key = _MERGE_KEYS[key]
            merged = [copy.deepcopy(item) for item in result.get(key) or []]
            for item in value:
                if not isinstance(item, dict):
                    continue
                existing = next((m for m in merged if m.get(merge_key) == item.get(merge_key)), None)
                if item.get("$patch") == "delete":
                    merged = [m for m in merged if m is not existing]
                elif existing is not None:
                    merged[merged.index(existing)] = strategic_merge_patch(existing, item)
                else:
                    merged.append({k: v for k, v in item.items() if not k.startswith("$")})
            result[key] = merged
        else:
            result[key] = strategic_merge_patch(result.get(key), value)
    return result


class JsonPatchError(Exception):
    """A JSON patch operation that does not apply to the document."""


def json_patch(target: Any, operations: Any) -> Any:
    """RFC 6902 (add, remove, replace, move, copy, test) on a copy of `target`.

    Raises `ApiStatus` 400 when `operations` is not a list of operations (the API server's
    "cannot unmarshal" answer), and `JsonPatchError` when an operation does not apply.
    """
    if not isinstance(operations, list) or not all(isinstance(o, dict) for o in operations):
        raise ApiStatus(
            400, "BadRequest", "json: cannot unmarshal object into Go value of type jsonpatch.Patch"
        )
    document = copy.deepcopy(target)
    for operation in operations:
        op, path = operation.get("op"), operation.get("path")
        if not isinstance(path, str):
            raise JsonPatchError(f"operation {op!r} has no path")
        if op == "test":
            if _pointer_get(document, path) != operation.get("value"):
                raise JsonPatchError(f"testing value {path} failed")
        elif op == "remove":
            document = _pointer_remove(document, path)
        elif op == "add":
            if "value" not in operation:
                raise JsonPatchError("add operation has no value")
            document = _pointer_add(document, path, copy.deepcopy(operation["value"]))
        elif op == "replace":
            if "value" not in operation:
                raise JsonPatchError("replace operation has no value")
            document = _pointer_remove(document, path)
            document = _pointer_add(document, path, copy.deepcopy(operation["value"]))
        elif op in ("move", "copy"):
            source = operation.get("from")
            if not isinstance(source, str):
                raise JsonPatchError(f"{op} operation has no from")
            value = copy.deepcopy(_pointer_get(document, source))
            if op == "move":
                document = _pointer_remove(document, source)
            document = _pointer_add(document, path, value)
        else:
            raise JsonPatchError(f"unexpected kind of operation {op!r}")
    return document


def _pointer(path: str) -> list[str]:
    if path == "":
        return []
    if not path.startswith("/"):
        raise JsonPatchError(f"invalid JSON pointer {path!r}")
    return [part.replace("~1", "/").replace("~0", "~") for part in path[1:].split("/")]


def _index(container: list[Any], token: str, *, end_ok: bool = False) -> int:
    if end_ok and token == "-":
        return len(container)
    if not token.isdigit() or (len(token) > 1 and token.startswith("0")):
        raise JsonPatchError(f"invalid array index {token!r}")
    index = int(token)
    if index > len(container) or (index == len(container) and not end_ok):
        raise JsonPatchError(f"array index {index} out of bounds")
    return index


def _parent(document: Any, tokens: list[str]) -> Any:
    current = document
    for token in tokens[:-1]:
        if isinstance(current, dict) and token in current:
            current = current[token]
        elif isinstance(current, list):
            current = current[_index(current, token)]
        else:
            raise JsonPatchError(f"doc is missing path: {token!r}")
    return current


def _pointer_get(document: Any, path: str) -> Any:
    tokens = _pointer(path)
    if not tokens:
        return document
    parent, last = _parent(document, tokens), tokens[-1]
    if isinstance(parent, dict) and last in parent:
        return parent[last]
    if isinstance(parent, list):
        return parent[_index(parent, last)]
    raise JsonPatchError(f"doc is missing path: {path!r}")


def _pointer_remove(document: Any, path: str) -> Any:
    tokens = _pointer(path)
    if not tokens:
        return None
    parent, last = _parent(document, tokens), tokens[-1]
    if isinstance(parent, dict) and last in parent:
        del parent[last]
    elif isinstance(parent, list):
        del parent[_index(parent, last)]
    else:
        raise JsonPatchError(f"unable to remove nonexistent key: {last}: missing value")
    return document


def _pointer_add(document: Any, path: str, value: Any) -> Any:
    tokens = _pointer(path)
    if not tokens:
        return value
    parent, last = _parent(document, tokens), tokens[-1]
    if isinstance(parent, dict):
        parent[last] = value
    elif isinstance(parent, list):
        parent.insert(_index(parent, last, end_ok=True), value)
    else:
        raise JsonPatchError(f"doc is missing path: {path!r}")
    return document


def apply_patch(target: Any, patch: Any, content_type: str) -> Any:
    """A PATCH body applied as its content type says: JSON patch, strategic merge, or JSON merge."""
    if "json-patch" in content_type:
        try:
            return json_patch(target, patch)
        except JsonPatchError as exc:
            # The API server's answer to an operation that does not apply (jsonpatch's own
            # words are not passed on).
            raise ApiStatus(
                422, "Invalid", "the server rejected our request due to an error in our request", {}
            ) from exc
    if not isinstance(patch, dict):
        raise ApiStatus(
            400, "BadRequest", "json: cannot unmarshal array into Go value of type map[string]interface {}"
        )
    merge = strategic_merge_patch if "strategic-merge-patch" in content_type else json_merge_patch
    return merge(target, patch)
