"""Validation of a KServe InferenceService against KServe's own API types.

KServe's CRD schema is not installable from PyPI next to our pins (the kserve package pins protobuf below
7), but its wheel carries the OpenAPI-generated model classes of every v1beta1 type: each declares its
fields (``attribute_map``: python name -> JSON key) and their types (``openapi_types``). The Makefile
downloads that wheel (no install, no dependencies) into .venv/wheels; this module reads those tables with
``ast`` and checks a manifest field by field, recursing into KServe types, and validates the Kubernetes
types inside it (Container, ObjectMeta, ...) with kubernetes-validate's own JSON schemas.
"""

from __future__ import annotations

import ast
import json
import re
import zipfile
from functools import cache
from importlib import resources
from pathlib import Path
from typing import Any

import jsonschema
from referencing import Registry, Resource

from conftest import ROOT

WHEELS = ROOT / ".venv" / "wheels"
K8S_VERSION = "v1.37.0-local-strict"


class Invalid(Exception):
    pass


def kserve_wheel() -> Path:
    found = sorted(WHEELS.glob("kserve-*.whl"))
    if not found:
        raise FileNotFoundError(f"no kserve wheel in {WHEELS}: `make install` downloads it")
    return found[-1]


@cache
def kserve_types() -> dict[str, tuple[dict[str, str], dict[str, str]]]:
    """Type name -> (JSON key -> openapi type, JSON key -> python name), from the wheel's models."""
    types: dict[str, tuple[dict[str, str], dict[str, str]]] = {}
    with zipfile.ZipFile(kserve_wheel()) as wheel:
        for name in wheel.namelist():
            if not re.fullmatch(r"kserve/models/v\w+\.py", name):
                continue
            for node in ast.parse(wheel.read(name)).body:
                if not isinstance(node, ast.ClassDef):
                    continue
                tables: dict[str, dict[str, str]] = {}
                for item in node.body:
                    if isinstance(item, ast.Assign) and isinstance(item.targets[0], ast.Name):
                        if item.targets[0].id in ("openapi_types", "attribute_map"):
                            tables[item.targets[0].id] = ast.literal_eval(item.value)
                if "attribute_map" in tables:
                    by_key = {tables["attribute_map"][p]: tables["openapi_types"][p] for p in tables["attribute_map"]}
                    types[node.name] = (by_key, {v: k for k, v in tables["attribute_map"].items()})
    return types


@cache
def _k8s_registry() -> tuple[Registry, dict[str, Any]]:
    folder = resources.files("kubernetes_validate").joinpath("kubernetes-json-schema", K8S_VERSION)
    definitions = json.loads(folder.joinpath("_definitions.json").read_text())
    return Resource.from_contents(definitions) @ Registry(), definitions["$defs"]


def _k8s_definition(type_name: str) -> str | None:
    """V1Container -> io.k8s.api.core.v1.Container (core first), when Kubernetes defines it."""
    version, kind = re.fullmatch(r"(V\d\w*?)([A-Z]\w*)", type_name).groups()  # type: ignore[union-attr]
    _, definitions = _k8s_registry()
    suffix = f".{version.lower()}.{kind}"
    matches = sorted((k for k in definitions if k.endswith(suffix)), key=lambda k: (".core." not in k, k))
    return matches[0] if matches else None


def validate(value: Any, type_name: str = "V1beta1InferenceService", path: str = "") -> None:
    """Raise Invalid with the path of the first field that is unknown or of the wrong type."""
    list_of = re.fullmatch(r"list\[(.+)\]", type_name)
    dict_of = re.fullmatch(r"dict\(str, (.+)\)", type_name)
    if list_of:
        if not isinstance(value, list):
            raise Invalid(f"{path}: expected a list")
        for index, item in enumerate(value):
            validate(item, list_of.group(1), f"{path}[{index}]")
    elif dict_of:
        if not isinstance(value, dict):
            raise Invalid(f"{path}: expected a mapping")
        for key, item in value.items():
            validate(item, dict_of.group(1), f"{path}.{key}")
    elif type_name in ("str", "int", "bool", "float", "object", "datetime"):
        expected = {"str": str, "int": int, "bool": bool, "float": (int, float), "object": object, "datetime": str}
        if not isinstance(value, expected[type_name]) or (type_name == "int" and isinstance(value, bool)):  # type: ignore[arg-type]
            raise Invalid(f"{path}: expected {type_name}, got {type(value).__name__}")
    elif type_name in kserve_types():
        fields, _ = kserve_types()[type_name]
        if not isinstance(value, dict):
            raise Invalid(f"{path}: expected an object ({type_name})")
        for key, item in value.items():
            if key not in fields:
                raise Invalid(f"{path}.{key}: {type_name} has no field {key!r}")
            validate(item, fields[key], f"{path}.{key}")
    else:
        definition = _k8s_definition(type_name)
        if definition is None:
            raise Invalid(f"{path}: unknown type {type_name}")
        registry, _ = _k8s_registry()
        schema = {"$ref": f"https://kubernetes.io/api/_definitions.json#/$defs/{definition}"}
        try:
            jsonschema.Draft202012Validator(schema, registry=registry).validate(value)
        except jsonschema.ValidationError as exc:
            raise Invalid(f"{path}: {exc.message}") from None
