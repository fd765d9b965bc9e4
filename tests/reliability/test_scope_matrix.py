"""Every key kind × every route × in- and out-of-scope ids, with the routes taken from the app's own OpenAPI
document, against a real InfluxDB holding readings of every device.

A route added later (alerts, evaluation, ...) is in the matrix the moment it is in the app. It needs at most a
table entry below:

- ``SCOPE_PARAMS``: a parameter that names a city, site or device, and which of the three it names. The matrix
  then tries an id inside and one outside each key's scope.
- ``VALUE_PARAMS``: how to fill any other required parameter, given the device the request is about.
- ``ROUTE_ROLES``: the roles a route admits, when not every role.
- ``PUBLIC``: a route that needs no key.
- ``FIXED_QUERY``: optional parameters a route must be sent with (the alert stream's ``follow=false``).
- ``COVERED_ELSEWHERE``: a route whose ids cannot be derived from a device, with the test that runs its role ×
  scope matrix instead.

A required parameter or a keyless route missing from these tables fails the test, naming what to add.

What counts as a leak: a keyless or wrong key getting anything but 401; a key outside its role getting anything
but 403; an out-of-scope id getting anything but 403/404 (or, for an optional filter, a 2xx); and any 2xx body
naming a site or device outside the key's scope.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import pytest
from fastapi.testclient import TestClient

from api.keys import ALL_CITIES
from pilotwatch.manifest import City, Device, Manifest, Role, Site
from tests.reliability.conftest import POINTS, STEP_MS, T0, KeyKind


@dataclass(frozen=True)
class Target:
    """One device and where it stands: the ids a request may name."""

    city: City
    site: Site
    device: Device


SCOPE_PARAMS: dict[str, str] = {
    "site_id": "site",
    "site": "site",
    "device_id": "device",
    "device": "device",
    "city": "city",
    "city_id": "city",
}
VALUE_PARAMS: dict[str, Callable[[Target], str]] = {
    "sensor": lambda t: t.device.sensors[0].id,
    # The seeded readings' hour, so 2xx bodies carry data a leak would show.
    "start": lambda t: (T0 - dt.timedelta(minutes=5)).isoformat(),
    "end": lambda t: (T0 + dt.timedelta(milliseconds=POINTS * STEP_MS)).isoformat(),
}
ROUTE_ROLES: dict[tuple[str, str], frozenset[Role]] = {
    ("get", "/export.csv"): frozenset({Role.EVALUATOR, Role.ADMIN}),
    ("get", "/evaluation/{city_id}/estimates"): frozenset({Role.EVALUATOR, Role.ADMIN}),
}
PUBLIC: frozenset[tuple[str, str]] = frozenset(
    {
        ("get", "/health"),
        # A signed, expiring, one-use token is the credential (tests/notify/test_ack_link.py).
        ("get", "/ack-link/{token}"),
        ("post", "/ack-link/{token}"),
    }
)
FIXED_QUERY: dict[tuple[str, str], dict[str, str]] = {
    # The live stream is endless by design: the matrix asks for what is there, then stops.
    ("get", "/alerts/stream"): {"follow": "false"},
}
COVERED_ELSEWHERE: dict[tuple[str, str], str] = {
    # Ids the matrix cannot derive from a device: alerts and silences are decided or created first, then every one
    # of these routes is tried with every role and city, in and out of scope.
    **dict.fromkeys(
        (
            ("get", "/alerts/{alert_id}"),
            ("post", "/alerts/{alert_id}/ack"),
            ("post", "/alerts/{alert_id}/resolve"),
            ("post", "/alerts/{alert_id}/close"),
            ("post", "/alerts/{alert_id}/assign"),
            ("post", "/alerts/{alert_id}/comment"),
            ("post", "/silences"),
            ("delete", "/silences/{silence_id}"),
        ),
        "tests/api/test_alerts_api.py",
    ),
    # A whole evidence pack per request (figures, Parquet, a zip) is too slow for every key × site; it has the
    # scope rules of /estimates (in the matrix), tried per role and scope in tests/evaluation.
    ("get", "/evaluation/{city_id}/pack.zip"): "tests/evaluation/test_api_evaluation.py",
}


def can_read(kind: KeyKind, target: Target) -> bool:
    if kind.role is Role.ADMIN or ALL_CITIES in kind.cities:
        return True
    return target.city.id in kind.cities or target.site.id in kind.sites


def city_wide(kind: KeyKind, target: Target) -> bool:
    return kind.role is Role.ADMIN or ALL_CITIES in kind.cities or target.city.id in kind.cities


def targets(manifest: Manifest) -> list[Target]:
    return [Target(city, site, device) for city, site, device in manifest.iter_devices()]


def id_of(target: Target, what: str) -> str:
    return {"city": target.city.id, "site": target.site.id, "device": target.device.id}[what]


def mentions(body: str, ident: str) -> bool:
    """Whether a JSON or CSV body names this id as a whole value (not as part of a longer id)."""
    return f'"{ident}"' in body or f",{ident}," in body or f"site: {ident} " in body


@dataclass
class Matrix:
    """What the matrix tried and what went wrong (collected, so one run lists every leak, not the first)."""

    requests: int = 0
    failures: list[str] = field(default_factory=list)

    def fail(self, text: str) -> None:
        self.failures.append(text)


def operations(schema: dict[str, Any]) -> list[tuple[str, str, dict[str, Any]]]:
    return [(method, path, op) for path, ops in schema["paths"].items() for method, op in ops.items()]


def build_request(
    path: str, op: dict[str, Any], target: Target, *, with_optional_scope: bool
) -> tuple[str, dict[str, str], list[str]]:
    """The concrete path and query for ``target``, and the scope kinds the request names."""
    query: dict[str, str] = {}
    named: list[str] = []
    for param in op.get("parameters", []):
        name, where, required = param["name"], param["in"], param.get("required", False)
        if where not in {"path", "query"}:
            continue
        if name in SCOPE_PARAMS:
            if not required and not with_optional_scope:
                continue
            value = id_of(target, SCOPE_PARAMS[name])
            named.append(SCOPE_PARAMS[name])
        elif name in VALUE_PARAMS:
            value = VALUE_PARAMS[name](target)
        elif required:
            pytest.fail(f"{path}: required {where} parameter {name!r} is in no table of {__name__}; add it")
        else:
            continue
        if where == "path":
            path = path.replace("{" + name + "}", value)
        else:
            query[name] = value
    return path, query, named


def check_leaks(matrix: Matrix, label: str, body: str, kind: KeyKind, everything: list[Target]) -> None:
    for other in everything:
        if can_read(kind, other):
            continue
        for ident in (other.site.id, other.device.id):
            if mentions(body, ident):
                matrix.fail(f"{label}: body names {ident!r}, outside the scope of key {kind.name}")


def test_every_key_kind_on_every_route_leaks_nothing(
    api: TestClient, key_kinds: list[KeyKind], manifest: Manifest
) -> None:
    schema = api.get("/openapi.json").json()
    everything = targets(manifest)
    matrix = Matrix()
    routes = operations(schema)
    assert len(routes) >= 8, "the app lost routes?"
    for method, path, op in routes:
        if (method, path) in COVERED_ELSEWHERE:
            continue
        if not op.get("security"):
            assert (method, path) in PUBLIC, f"{method.upper()} {path} needs no key; add it to PUBLIC if meant"
            continue
        allowed_roles = ROUTE_ROLES.get((method, path), frozenset(Role))
        scoped = any(p["name"] in SCOPE_PARAMS for p in op.get("parameters", []))
        for kind in key_kinds:
            inside = [t for t in everything if can_read(kind, t)]
            outside = [t for t in everything if not can_read(kind, t)]
            cases: list[tuple[str, Target, bool]] = []
            if kind.role is None:
                cases = [("any", everything[0], True)]
            else:
                # One target per site is enough to cover every scope boundary; keep the matrix small.
                seen_sites: set[str] = set()
                for label, group in (("in", inside), ("out", outside)):
                    for t in group:
                        if t.site.id not in seen_sites:
                            seen_sites.add(t.site.id)
                            cases.append((label, t, True))
                if scoped:
                    cases.append(("unfiltered", everything[0], False))
            for where, target, with_scope in cases:
                concrete, query, named = build_request(path, op, target, with_optional_scope=with_scope)
                query.update(FIXED_QUERY.get((method, path), {}))
                headers = {"X-API-Key": kind.key} if kind.key else {}
                response = api.request(method.upper(), concrete, params=query, headers=headers)
                matrix.requests += 1
                status, body = response.status_code, response.text
                label = f"{method.upper()} {concrete}?{query} key={kind.name} ({where})"
                if kind.role is None:
                    if status != 401:
                        matrix.fail(f"{label}: {status}, expected 401")
                    for t in everything:
                        if mentions(body, t.site.id) or mentions(body, t.device.id):
                            matrix.fail(f"{label}: an unauthenticated answer names {t.device.id}")
                    continue
                if kind.role not in allowed_roles:
                    if status != 403:
                        matrix.fail(f"{label}: {status}, expected 403 for role {kind.role.value}")
                    continue
                if where == "in" and "city" in named and not city_wide(kind, target) and status == 403:
                    continue  # a key for some sites of a city may not see what covers the whole city
                if where == "in" or not named:
                    if not 200 <= status < 300:
                        matrix.fail(
                            f"{label}: {status} {body[:200]}; expected 2xx (if this route admits fewer roles, "
                            "add it to ROUTE_ROLES)"
                        )
                elif where == "out":
                    required_scope = any(
                        p["name"] in SCOPE_PARAMS and p.get("required", False) for p in op.get("parameters", [])
                    )
                    if required_scope and status not in {403, 404}:
                        matrix.fail(f"{label}: {status}, expected 403 for an id outside the scope")
                if 200 <= status < 300:
                    check_leaks(matrix, label, body, kind, everything)
    print(f"scope matrix: {len(routes)} routes, {len(key_kinds)} key kinds, {matrix.requests} requests")
    assert not matrix.failures, f"{len(matrix.failures)} leaks or wrong answers:\n" + "\n".join(matrix.failures[:40])
    assert matrix.requests > 100


def test_a_route_missing_from_the_tables_fails_the_matrix(manifest: Manifest) -> None:
    """The guard itself: a new route with a parameter nobody described is not silently skipped."""
    op = {"parameters": [{"name": "alert_id", "in": "path", "required": True}]}
    with pytest.raises(pytest.fail.Exception, match="alert_id"):
        build_request("/alerts/{alert_id}", op, targets(manifest)[0], with_optional_scope=True)
