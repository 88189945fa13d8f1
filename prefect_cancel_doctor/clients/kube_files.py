"""Kubeconfig files: read (YAML or JSON), merged as client-go merges them, and the fields of an entry.

`kube_config` picks the context and resolves its connection from what these read. A field of the
wrong type is a `KubeConfigError` naming the file and the field, never its value.
"""

from __future__ import annotations

import base64
import json
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from prefect_cancel_doctor.errors import ConfigurationError


class KubeConfigError(ConfigurationError):
    """No usable Kubernetes connection: the message names the file and field, the hint what to do."""


def read_text(path: str, what: str, hint: str | None = None) -> str:
    """A file's text (UTF-8); unreadable or not UTF-8 text: a `KubeConfigError` naming it."""
    try:
        return Path(path).read_bytes().decode("utf-8")
    except OSError as exc:
        raise KubeConfigError(
            f"cannot read {what} {path} ({exc.strerror or exc})",
            hint=hint or "check the file exists and is readable by this user",
        ) from exc
    except UnicodeDecodeError as exc:
        raise KubeConfigError(
            f"{what} {path} is not UTF-8 text (byte {exc.start} is 0x{exc.object[exc.start]:02x})",
            hint=hint or "a kubeconfig and the files it names are UTF-8 text (PEM, YAML)",
        ) from exc


@dataclass
class Entry:
    """A cluster, user or context entry and the file it came from (paths are relative to it)."""

    body: dict[str, Any]
    origin: str
    #: "cluster 'prod'", "user 'admin'": how errors name the entry.
    label: str = ""

    def where(self, key: str) -> str:
        """``/path/config: user 'admin', client-key-data``: the file and the field."""
        return f"{self.origin}: {self.label + ', ' if self.label else ''}{key}"


@dataclass
class MergedConfig:
    """Several kubeconfig files merged as kubectl merges them."""

    files: list[str]
    clusters: dict[str, Entry] = field(default_factory=dict)
    users: dict[str, Entry] = field(default_factory=dict)
    contexts: dict[str, Entry] = field(default_factory=dict)
    current_context: str | None = None


def load_kubeconfig_file(path: str) -> dict[str, Any]:
    """One kubeconfig file as a dict (YAML, or JSON, which is YAML too)."""
    text = read_text(path, "the kubeconfig", hint="fix or replace the file (`kubectl config view` reads it)")
    if not text.strip():
        return {}
    try:
        document = _parse_yaml(text)
    except (ValueError, RecursionError) as exc:
        raise KubeConfigError(f"the kubeconfig {path} is not valid YAML: {str(exc)[:300]}") from exc
    if document is None:
        return {}
    if not isinstance(document, dict):
        raise KubeConfigError(f"the kubeconfig {path} is not a mapping (kind: Config)")
    return document


def _parse_yaml(text: str) -> Any:
    try:
        import yaml  # type: ignore[import-untyped,unused-ignore]
    except ImportError:
        try:
            return json.loads(text)
        except ValueError:
            raise KubeConfigError(
                "reading a YAML kubeconfig needs PyYAML",
                hint="pip install 'prefect-cancel-doctor[kubernetes]' (or pip install pyyaml)",
            ) from None
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ValueError(str(exc).splitlines()[0]) from exc


def merge_kubeconfigs(documents: Sequence[tuple[str, Mapping[str, Any]]]) -> MergedConfig:
    """client-go's merge: the first file that names a cluster, user or context wins it."""
    merged = MergedConfig([path for path, _ in documents])
    for path, document in documents:
        for key, target in (
            ("clusters", merged.clusters),
            ("users", merged.users),
            ("contexts", merged.contexts),
        ):
            entries = document.get(key) or []
            if not isinstance(entries, list):
                raise KubeConfigError(f"{path}: `{key}` is not a list")
            inner = key[:-1]  # clusters -> cluster
            for entry in entries:
                if not isinstance(entry, dict) or not isinstance(entry.get("name"), str):
                    continue
                body = entry.get(inner) or {}
                if entry["name"] not in target and isinstance(body, dict):
                    target[entry["name"]] = Entry(body, path, f"{inner} {entry['name']!r}")
        current = document.get("current-context")
        if merged.current_context is None and isinstance(current, str) and current:
            merged.current_context = current
    return merged


def entry_string(entry: Entry, key: str) -> str | None:
    """A string field (absent or empty: None); any other type is an error naming it."""
    value = entry.body.get(key)
    if value is None or value == "":
        return None
    if not isinstance(value, str):
        raise KubeConfigError(f"{entry.where(key)} is not a string", hint="fix it in the kubeconfig")
    return value


def entry_flag(entry: Entry, key: str) -> bool:
    """A boolean field; a string such as "false" is an error (kubectl refuses it too), never True."""
    value = entry.body.get(key)
    if value is None:
        return False
    if not isinstance(value, bool):
        raise KubeConfigError(f"{entry.where(key)} is not true or false", hint="fix it in the kubeconfig")
    return value


def pem_field(entry: Entry, key: str) -> str:
    """The field a PEM comes from: `key-data` when set, else `key` (a path)."""
    return f"{key}-data" if entry.body.get(f"{key}-data") else key


def entry_pem(entry: Entry, key: str) -> str | None:
    """A PEM from `key-data` (base64) or the file `key` (relative to the kubeconfig)."""
    data = entry.body.get(f"{key}-data")
    if data is not None and data != "":
        if not isinstance(data, str):
            raise KubeConfigError(f"{entry.where(key + '-data')} is not a base64 string")
        try:
            return base64.b64decode("".join(data.split()), validate=True).decode("utf-8")
        except ValueError as exc:  # binascii.Error, UnicodeDecodeError
            raise KubeConfigError(
                f"{entry.where(key + '-data')} is not base64 of a PEM text",
                hint="it holds the PEM file's content in base64 (`base64 -w0 FILE`)",
            ) from exc
    path = entry_string(entry, key)
    if path:
        resolved = relative_to(path, entry.origin)
        return read_text(
            resolved,
            f"{entry.where(key)}:",
            hint="fix the path in the kubeconfig (relative paths are relative to that file)",
        )
    return None


def relative_to(path: str, origin: str) -> str:
    expanded = os.path.expanduser(path)
    return expanded if os.path.isabs(expanded) else str(Path(origin).resolve().parent / expanded)


__all__ = [
    "Entry",
    "KubeConfigError",
    "MergedConfig",
    "entry_flag",
    "entry_pem",
    "entry_string",
    "load_kubeconfig_file",
    "merge_kubeconfigs",
    "pem_field",
    "read_text",
    "relative_to",
]
