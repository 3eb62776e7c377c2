"""The dashboard and the alert rules query only metrics and labels the processes export."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from typing import Any

import pytest
from deploy_support import DEPLOY, PromQLError, exported_series, load_documents, parse
from deploy_support import unknown_references as unknown

DASHBOARD = DEPLOY / "grafana" / "waitroom-dashboard.json"
ALERTS = DEPLOY / "prometheus" / "alerts.yml"
CATALOGUE = exported_series()


def _dashboard() -> dict[str, Any]:
    data: dict[str, Any] = json.loads(DASHBOARD.read_text())
    return data


def _panels(panels: list[dict[str, Any]]) -> Iterator[dict[str, Any]]:
    for panel in panels:
        yield panel
        yield from _panels(panel.get("panels", []))  # collapsed rows hold their panels


def _dashboard_queries() -> list[tuple[str, str]]:
    """(where, PromQL) for every panel target and every query variable."""
    found = []
    for panel in _panels(_dashboard()["panels"]):
        for target in panel.get("targets", []):
            found.append((f"panel {panel['title']!r} {target['refId']}", target["expr"]))
    for variable in _dashboard()["templating"]["list"]:
        if variable["type"] != "query":
            continue
        query = variable["query"]["query"]
        # label_values(metric, label) is Grafana's, not PromQL: check it as a selector and label.
        match = re.fullmatch(r"label_values\((.+),\s*([A-Za-z_][A-Za-z0-9_]*)\)", query)
        assert match, f"variable {variable['name']}: unexpected query {query!r}"
        found.append((f"variable {variable['name']}", f"max by ({match[2]}) ({match[1]})"))
    return found


def _alert_rules() -> list[dict[str, Any]]:
    groups = load_documents(ALERTS)[0]["groups"]
    return [rule for group in groups for rule in group["rules"]]


def test_the_catalogue_knows_the_exported_suffixes() -> None:
    """The names below are how prometheus_client exports each type; the checks rest on it."""
    assert "waitroom_admissions_total" in CATALOGUE
    assert "waitroom_admissions" not in CATALOGUE
    assert "waitroom_wait_seconds_bucket" in CATALOGUE
    assert "le" in CATALOGUE["waitroom_wait_seconds_bucket"].labels
    assert "waitroom_wait_seconds" not in CATALOGUE
    assert "waitroom_queue_length" in CATALOGUE
    assert "waitroom_queue_length_total" not in CATALOGUE


@pytest.mark.parametrize(
    ("expr", "problem"),
    [
        ("rate(waitroom_admission_total[5m])", "unknown metric waitroom_admission_total"),
        ("waitroom_queue_length_total", "unknown metric waitroom_queue_length_total"),
        ("sum by (evnt) (waitroom_queue_length)", "grouping by unknown labels evnt"),
        ('waitroom_queue_length{evnt="a"}', "waitroom_queue_length has no label evnt"),
        ("histogram_quantile(0.9, rate(waitroom_wait_seconds[5m]))", "unknown metric"),
        ("sum(rate(process_cpu_seconds_total[1m]))", "unknown metric process_cpu_seconds_total"),
    ],
)
def test_the_check_rejects_wrong_references(expr: str, problem: str) -> None:
    assert any(p.startswith(problem) for p in unknown(expr, CATALOGUE)), unknown(expr, CATALOGUE)


def test_the_reader_refuses_what_it_cannot_read() -> None:
    with pytest.raises(PromQLError):
        parse('sum(rate(waitroom_joins_total{event="a}[5m]))')
    with pytest.raises(PromQLError):
        parse('{__name__="waitroom_joins_total"}')


def test_dashboard_queries_refer_only_to_exported_metrics() -> None:
    queries = _dashboard_queries()
    assert len(queries) > 20
    problems = {where: unknown(expr, CATALOGUE) for where, expr in queries}
    assert {where: p for where, p in problems.items() if p} == {}


def test_alert_rules_refer_only_to_exported_metrics() -> None:
    problems = {rule["alert"]: unknown(rule["expr"], CATALOGUE) for rule in _alert_rules()}
    assert {name: p for name, p in problems.items() if p} == {}


def test_dashboard_shows_what_an_operator_watches() -> None:
    text = " ".join(expr for _, expr in _dashboard_queries())
    for name in (
        "waitroom_queue_length",
        "waitroom_admissions_total",
        "waitroom_checkout_users",
        "waitroom_checkout_capacity",
        "waitroom_wait_seconds_bucket",
        "waitroom_rpc_duration_seconds_bucket",
        "waitroom_rpc_duration_seconds_count",
        "waitroom_outbox_backlog",
        "waitroom_outbox_relay_lag_seconds_bucket",
        "waitroom_dead_letters_total",
        "waitroom_checkout_messages_total",
        "waitroom_lock_owned",
    ):
        assert name in text, f"no panel shows {name}"
    quantiles = [
        expr
        for _, expr in _dashboard_queries()
        if "histogram_quantile(0.99," in expr and "waitroom_wait_seconds_bucket" in expr
    ]
    assert quantiles, "no wait-time percentile panel"


def test_dashboard_is_importable() -> None:
    """What Grafana needs to import it: unique ids, a datasource variable, panels on the grid."""
    dashboard = _dashboard()
    assert dashboard["uid"] and dashboard["title"] and dashboard["schemaVersion"] >= 36
    names = [v["name"] for v in dashboard["templating"]["list"]]
    assert "datasource" in names and len(names) == len(set(names))
    panels = list(_panels(dashboard["panels"]))
    ids = [panel["id"] for panel in panels]
    assert len(ids) == len(set(ids))
    cells: set[tuple[int, int]] = set()
    for panel in panels:
        grid = panel["gridPos"]
        assert grid["x"] + grid["w"] <= 24, panel["title"]
        area = {
            (x, y)
            for x in range(grid["x"], grid["x"] + grid["w"])
            for y in range(grid["y"], grid["y"] + grid["h"])
        }
        assert not area & cells, f"panel {panel['title']!r} overlaps another"
        cells |= area
        if panel["type"] == "row":
            continue
        assert panel["datasource"]["uid"] == "${datasource}", panel["title"]
        ref_ids = [target["refId"] for target in panel["targets"]]
        assert ref_ids and len(ref_ids) == len(set(ref_ids)), panel["title"]


def test_every_alert_has_a_severity_a_summary_and_a_runbook() -> None:
    """The runbook anchors point at docs/operations.md's sections (test_deploy_docs checks
    that a section exists for every alert)."""
    rules = _alert_rules()
    names = [rule["alert"] for rule in rules]
    assert len(names) == len(set(names))
    for rule in rules:
        assert rule["labels"]["severity"] in {"critical", "warning"}, rule["alert"]
        assert rule["annotations"]["summary"], rule["alert"]
        anchor = rule["alert"].lower()
        assert rule["annotations"]["runbook"] == f"docs/operations.md#{anchor}"


def test_alerts_cover_what_an_operator_must_know_at_once() -> None:
    exprs = {rule["alert"]: rule["expr"] for rule in _alert_rules()}
    uses = {name: {s for s, _ in parse(expr).selectors} for name, expr in exprs.items()}

    def alerting_on(*metrics: str) -> list[str]:
        return [name for name, used in uses.items() if set(metrics) <= used]

    assert alerting_on("waitroom_queue_length", "waitroom_admissions_total"), "admission stalled"
    assert alerting_on("waitroom_checkout_users", "waitroom_checkout_capacity"), "over the cap"
    assert alerting_on("waitroom_dead_letters_total"), "DLQ growing"
    assert alerting_on("waitroom_outbox_backlog"), "outbox backlog growing"
    assert alerting_on("up"), "a process down"
    assert alerting_on("waitroom_rpc_duration_seconds_count"), "RPC errors"
