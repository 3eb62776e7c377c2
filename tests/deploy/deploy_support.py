"""What the deploy tests share: paths, the metric catalogue, a PromQL reader and a kustomize reader.

Everything here works offline: no cluster, no Prometheus, no Docker.
"""

from __future__ import annotations

import base64
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from prometheus_client.metrics import MetricWrapperBase

from shared import metrics

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
BASE = DEPLOY / "kubernetes" / "base"
OVERLAYS = sorted(path for path in (DEPLOY / "kubernetes" / "overlays").iterdir() if path.is_dir())

# --- the metric catalogue -------------------------------------------------------------------

# The sample names prometheus_client exports for each metric type.
_SUFFIXES = {
    "counter": ("_total", "_created"),
    "gauge": ("",),
    "histogram": ("_bucket", "_count", "_sum", "_created"),
    "summary": ("", "_count", "_sum", "_created"),
}

# Labels Prometheus adds to every scraped series (the Prometheus Operator adds the Kubernetes
# ones), so queries may match or group on them whatever the metric.
TARGET_LABELS = frozenset(
    {"job", "instance", "namespace", "pod", "service", "container", "endpoint"}
)


@dataclass(frozen=True)
class Series:
    """One exported sample name and the labels it carries."""

    name: str
    metric: str
    labels: frozenset[str]


def exported_series() -> dict[str, Series]:
    """Every sample name the metrics in ``shared.metrics`` export, with their labels."""
    found: dict[str, Series] = {}
    for value in vars(metrics).values():
        if not isinstance(value, MetricWrapperBase):
            continue
        for family in value.describe():
            labels = frozenset(value._labelnames)
            for suffix in _SUFFIXES[family.type]:
                extra = {"le"} if suffix == "_bucket" else set()
                name = family.name + suffix
                found[name] = Series(name, family.name, labels | extra)
    return found


# --- reading PromQL -------------------------------------------------------------------------

_KEYWORDS = frozenset(
    {"by", "without", "on", "ignoring", "group_left", "group_right", "offset", "bool"}
    | {"and", "or", "unless", "atan2"}
)
_GROUPING = frozenset({"by", "without", "on", "ignoring", "group_left", "group_right"})
# Aggregation operators may be followed by `by (...)` instead of their parenthesis.
_AGGREGATIONS = frozenset(
    {"sum", "min", "max", "avg", "group", "stddev", "stdvar", "count", "count_values"}
    | {"bottomk", "topk", "quantile", "limitk", "limit_ratio"}
)
_IDENT = re.compile(r"[A-Za-z_:][A-Za-z0-9_:]*")
_MATCHER = re.compile(
    r"""\s*([A-Za-z_][A-Za-z0-9_]*)\s*(=~|!~|!=|=)\s*("(?:[^"\\]|\\.)*"|'(?:[^'\\]|\\.)*')\s*,?"""
)


@dataclass
class Query:
    """What one PromQL expression refers to."""

    expr: str
    selectors: list[tuple[str, frozenset[str]]]  # metric name, label names matched
    grouping: set[str]  # label names in by/without/on/ignoring/group_* lists


class PromQLError(ValueError):
    """The expression is not PromQL this reader understands (unbalanced, bad matcher...)."""


def _skip_string(text: str, i: int) -> int:
    quote = text[i]
    i += 1
    while i < len(text) and text[i] != quote:
        i += 2 if text[i] == "\\" and quote != "`" else 1
    if i >= len(text):
        raise PromQLError(f"unterminated string in {text!r}")
    return i + 1


def _closing(text: str, i: int, opening: str, closing: str) -> int:
    """Index just past the bracket that closes the one at ``i``, skipping strings."""
    depth = 0
    while i < len(text):
        char = text[i]
        if char in "\"'`":
            i = _skip_string(text, i)
            continue
        if char == opening:
            depth += 1
        elif char == closing:
            depth -= 1
            if depth == 0:
                return i + 1
        i += 1
    raise PromQLError(f"unbalanced {opening}{closing} in {text!r}")


def _matchers(body: str) -> frozenset[str]:
    names: list[str] = []
    pos = 0
    while pos < len(body):
        if not body[pos:].strip():
            break
        match = _MATCHER.match(body, pos)
        if match is None:
            raise PromQLError(f"cannot read label matchers {{{body}}}")
        names.append(match.group(1))
        pos = match.end()
    return frozenset(names)


def _next_char(text: str, i: int) -> tuple[str, int]:
    while i < len(text) and text[i].isspace():
        i += 1
    return (text[i] if i < len(text) else ""), i


def _word(query: Query, word: str, expr: str, i: int) -> int:
    """Take in the identifier ``word`` at ``i``; returns where reading goes on."""
    following, j = _next_char(expr, i + len(word))
    lowered = word.lower()
    if lowered in _GROUPING and following == "(":
        end = _closing(expr, j, "(", ")")
        names = [part.strip() for part in expr[j + 1 : end - 1].split(",")]
        query.grouping.update(name for name in names if name)
        return end
    if lowered in _KEYWORDS or lowered in _AGGREGATIONS or following == "(":
        return i + len(word)  # a keyword, an aggregation or a function name
    labels: frozenset[str] = frozenset()
    end = i + len(word)
    if following == "{":
        end = _closing(expr, j, "{", "}")
        labels = _matchers(expr[j + 1 : end - 1])
    query.selectors.append((word, labels))
    return end


def parse(expr: str) -> Query:
    """Find the metric selectors and grouping labels in ``expr``.

    Not a full PromQL parser: it tells metric names from functions, keywords, numbers and
    durations, reads label matchers, and skips strings and range brackets, which is all the
    checks need. Grafana's ``$variables`` may appear inside strings and ranges.
    """
    query = Query(expr, [], set())
    i = 0
    while i < len(expr):
        char = expr[i]
        if char in "\"'`":
            i = _skip_string(expr, i)
        elif char == "[":
            i = _closing(expr, i, "[", "]")
        elif char == "{":
            raise PromQLError(f"selector without a metric name in {expr!r}")
        elif char.isdigit() or (char == "." and expr[i + 1 : i + 2].isdigit()):
            i += 1
            while i < len(expr) and (expr[i].isalnum() or expr[i] in "._"):
                i += 1  # numbers and durations (5m, 1h30m, 0.95, 1e3)
        elif ident := _IDENT.match(expr, i):
            i = _word(query, ident.group(0), expr, i)
        else:
            i += 1
    if expr.count("(") != expr.count(")"):
        raise PromQLError(f"unbalanced parentheses in {expr!r}")
    return query


def unknown_references(expr: str, catalogue: dict[str, Series]) -> list[str]:
    """Everything in ``expr`` that names a metric or label the waitroom does not export."""
    query = parse(expr)
    problems: list[str] = []
    if not query.selectors:
        problems.append("selects no metric")
    known_labels: set[str] = set(TARGET_LABELS)
    for name, labels in query.selectors:
        if name == "up":
            if not labels <= TARGET_LABELS:
                problems.append(f"up{{{', '.join(sorted(labels - TARGET_LABELS))}}}")
            continue
        series = catalogue.get(name)
        if series is None:
            problems.append(f"unknown metric {name}")
            continue
        known_labels |= series.labels
        wrong = labels - series.labels - TARGET_LABELS
        if wrong:
            problems.append(f"{name} has no label {', '.join(sorted(wrong))}")
    wrong_grouping = query.grouping - known_labels
    if wrong_grouping:
        problems.append(f"grouping by unknown labels {', '.join(sorted(wrong_grouping))}")
    return problems


# --- reading the kustomize base -------------------------------------------------------------


def load_documents(path: Path) -> list[dict[str, Any]]:
    """The non-empty YAML documents of ``path``."""
    with path.open() as handle:
        return [doc for doc in yaml.safe_load_all(handle) if doc]


def _env_file(path: Path) -> dict[str, str]:
    values: dict[str, str] = {}
    for line in path.read_text().splitlines():
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        key, sep, value = line.partition("=")
        if not sep:
            raise ValueError(f"{path}: not KEY=VALUE: {line!r}")
        values[key.strip()] = value
    return values


def _generated(kind: str, spec: dict[str, Any], directory: Path) -> dict[str, Any]:
    """The ConfigMap or Secret kustomize generates from ``spec`` (without the hash suffix)."""
    values: dict[str, str] = {}
    for env in spec.get("envs", []):
        values.update(_env_file(directory / env))
    for literal in spec.get("literals", []):
        key, _, value = literal.partition("=")
        values[key] = value
    for entry in spec.get("files", []):
        key, _, name = entry.rpartition("=")
        values[key or Path(name).name] = (directory / name).read_text()
    document: dict[str, Any] = {
        "apiVersion": "v1",
        "kind": kind,
        "metadata": {"name": spec["name"]},
    }
    if kind == "Secret":
        document["type"] = spec.get("type", "Opaque")
        document["data"] = {k: base64.b64encode(v.encode()).decode() for k, v in values.items()}
    else:
        document["data"] = values
    return document


def referenced_files(kustomization: dict[str, Any]) -> list[str]:
    """Every local path a kustomization names: resources, patches and generator sources."""
    files = list(kustomization.get("resources", []))
    files += [patch["path"] for patch in kustomization.get("patches", []) if "path" in patch]
    for key in ("configMapGenerator", "secretGenerator"):
        for spec in kustomization.get(key, []):
            files += spec.get("envs", [])
            files += [entry.rpartition("=")[2] for entry in spec.get("files", [])]
    return files


def _merge(base: dict[str, Any], patch: dict[str, Any]) -> dict[str, Any]:
    """A strategic-merge patch as far as the overlays use it: maps merge, the rest replaces."""
    merged = dict(base)
    for key, value in patch.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = _merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def _key(obj: dict[str, Any]) -> tuple[str, str]:
    return obj["kind"], obj["metadata"]["name"]


def render(directory: Path = BASE) -> list[dict[str, Any]]:
    """The objects a kustomization directory produces, as far as the waitroom's use it.

    Resources (files, and directories holding a kustomization), ConfigMap and Secret
    generators (with behavior create, merge or replace), patches by file, and the namespace.
    Name hashes and the image transformer are kustomize's business and change nothing the
    tests check; an unsupported field fails here rather than being ignored.
    """
    kustomization = load_documents(directory / "kustomization.yaml")[0]
    supported = {"apiVersion", "kind", "namespace", "resources", "images", "patches"}
    unsupported = set(kustomization) - supported - {"configMapGenerator", "secretGenerator"}
    assert not unsupported, f"{directory}: the test reader cannot apply {unsupported}"
    objects: dict[tuple[str, str], dict[str, Any]] = {}
    for resource in kustomization.get("resources", []):
        path = directory / resource
        documents = render(path) if path.is_dir() else load_documents(path)
        objects.update((_key(doc), doc) for doc in documents)
    for key, kind in (("configMapGenerator", "ConfigMap"), ("secretGenerator", "Secret")):
        for spec in kustomization.get(key, []):
            generated = _generated(kind, spec, directory)
            behavior = spec.get("behavior", "create")
            existing = objects.get(_key(generated))
            assert (existing is None) == (behavior == "create"), f"{behavior} {spec['name']}"
            if behavior == "merge" and existing is not None:
                generated["data"] = {**existing["data"], **generated["data"]}
            objects[_key(generated)] = generated
    for patch in kustomization.get("patches", []):
        (document,) = load_documents(directory / patch["path"])
        objects[_key(document)] = _merge(objects[_key(document)], document)
    result = list(objects.values())
    if "namespace" in kustomization:
        for obj in result:
            obj["metadata"] = {**obj["metadata"], "namespace": kustomization["namespace"]}
    return result


def by_kind(objects: list[dict[str, Any]], kind: str) -> dict[str, dict[str, Any]]:
    """The objects of one kind, by name."""
    return {obj["metadata"]["name"]: obj for obj in objects if obj["kind"] == kind}
