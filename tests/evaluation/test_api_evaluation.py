"""The evaluators' routes on data stored in a real InfluxDB: estimates as JSON, the pack as a zip, and scoping."""

from __future__ import annotations

import io
import json
import subprocess
import threading
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from api.app import create_app
from api.deps import API_KEY_HEADER
from api.keys import ApiKeyCreate, KeyStore
from api.settings import ApiSettings
from pilotwatch.manifest import Role
from tests.evaluation.conftest import TRUE_DO_EFFECT, EvaluationStore

FAST = {"replicates": 99}


def serve(
    evaluation_store: EvaluationStore, folder: Path, **settings: Any
) -> Iterator[tuple[TestClient, dict[str, str]]]:
    store = KeyStore(folder / "keys.yaml")
    keys = {}
    for name, role, cities, sites in (
        ("eval-bkk", Role.EVALUATOR, ("bangkok",), ()),
        ("eval-one-site", Role.EVALUATOR, (), ("bkk-pratunam-pier",)),
        ("op-bkk", Role.OPERATOR, ("bangkok",), ()),
    ):
        _, keys[name] = store.add(
            ApiKeyCreate(name=name, role=role, cities=cities, sites=sites), evaluation_store.manifest
        )
    api_settings = ApiSettings(
        influx={"url": evaluation_store.influx_url, "database": evaluation_store.database},
        keys_file=folder / "keys.yaml",
        **settings,
    )
    with TestClient(create_app(api_settings, manifest=evaluation_store.manifest)) as client:
        yield client, keys


@pytest.fixture(scope="module")
def api(
    evaluation_store: EvaluationStore, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[TestClient, dict[str, str]]]:
    yield from serve(evaluation_store, tmp_path_factory.mktemp("api"))


def test_estimates_json_finds_the_effect(api: tuple[TestClient, dict[str, str]]) -> None:
    client, keys = api
    response = client.get("/evaluation/bangkok/estimates", params=FAST, headers={API_KEY_HEADER: keys["eval-bkk"]})
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["qc_flags_used"] == [1]
    baci = next(
        r
        for r in body["estimates"]
        if r["site"] == "bkk-pratunam-pier" and r["parameter"] == "do" and r["quantity"] == "baci_relative"
    )
    assert baci["low"] <= TRUE_DO_EFFECT <= baci["high"]
    assert baci["coverage_baseline"] > 0.9


def test_pack_zip_streams_a_pack_that_checks(api: tuple[TestClient, dict[str, str]], tmp_path: Path) -> None:
    client, keys = api
    response = client.get("/evaluation/bangkok/pack.zip", params=FAST, headers={API_KEY_HEADER: keys["eval-bkk"]})
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "application/zip"
    assert "pilotwatch-bangkok-evidence.zip" in response.headers["content-disposition"]
    with zipfile.ZipFile(io.BytesIO(response.content)) as archive:
        archive.extractall(tmp_path)
    pack = tmp_path / "pilotwatch-bangkok"
    check = subprocess.run(["sha256sum", "-c", "SHA256SUMS"], check=False, cwd=pack, capture_output=True, text=True)
    assert check.returncode == 0, check.stdout + check.stderr
    summary = json.loads((pack / "summary.json").read_text())
    json_body = client.get("/evaluation/bangkok/estimates", params=FAST, headers={API_KEY_HEADER: keys["eval-bkk"]})
    assert summary["estimates"] == json_body.json()["estimates"]  # same data, same seed: the same numbers


@pytest.mark.parametrize(
    ("key", "path", "code", "detail"),
    [
        (None, "/evaluation/bangkok/estimates", 401, "missing API key: send it in the X-API-Key header"),
        (
            "op-bkk",
            "/evaluation/bangkok/estimates",
            403,
            "this needs role evaluator or admin; key 'op-bkk' has role operator",
        ),
        (
            "eval-one-site",
            "/evaluation/bangkok/pack.zip",
            403,
            "key 'eval-one-site' has no access to site 'bkk-asok-pier'",
        ),
        ("eval-bkk", "/evaluation/atlantis/estimates", 404, "unknown city 'atlantis'"),
    ],
)
def test_routes_are_scoped(
    api: tuple[TestClient, dict[str, str]], key: str | None, path: str, code: int, detail: str
) -> None:
    client, keys = api
    headers = {API_KEY_HEADER: keys[key]} if key else {}
    response = client.get(path, params=FAST, headers=headers)
    assert response.status_code == code
    assert response.json() == {"detail": detail}


def test_bad_query_is_refused(api: tuple[TestClient, dict[str, str]]) -> None:
    client, keys = api
    response = client.get(
        "/evaluation/bangkok/estimates", params={"replicates": 5}, headers={API_KEY_HEADER: keys["eval-bkk"]}
    )
    assert response.status_code == 422
    assert "replicates" in response.json()["detail"]


def as_of(client: TestClient, key: str, replicates: int) -> str:
    response = client.get(
        "/evaluation/bangkok/estimates", params={"replicates": replicates}, headers={API_KEY_HEADER: key}
    )
    assert response.status_code == 200, response.text
    return str(response.json()["as_of"])


def test_an_evaluation_is_computed_once_and_served_again(api: tuple[TestClient, dict[str, str]]) -> None:
    """Concurrent and repeated requests for the same evaluation share one computation (one ``as_of``); other
    bootstrap settings are another evaluation."""
    client, keys = api
    results: list[str] = []
    threads = [threading.Thread(target=lambda: results.append(as_of(client, keys["eval-bkk"], 101))) for _ in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
    assert len(results) == 3
    assert len(set(results)) == 1
    assert as_of(client, keys["eval-bkk"], 101) == results[0]
    assert as_of(client, keys["eval-bkk"], 103) > results[0]


def test_without_a_cache_every_request_computes(evaluation_store: EvaluationStore, tmp_path: Path) -> None:
    for client, keys in serve(evaluation_store, tmp_path, evaluation_cache_s=0):
        first = as_of(client, keys["eval-bkk"], 99)
        assert as_of(client, keys["eval-bkk"], 99) > first
