"""``pilotwatch api keys`` and the keys file: shown once, stored hashed, picked up by a running API."""

from __future__ import annotations

from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from api.app import create_app
from api.keys import ApiKeyCreate, KeyStore, KeyStoreError, hash_key
from api.settings import ApiSettings
from commands.cli import main
from pilotwatch.manifest import Manifest, Role


def test_keys_add_prints_the_key_once_and_stores_only_its_hash(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    keys_file = tmp_path / "keys.json"
    code = main(["api", "keys", "add", "--name", "eval-1", "--role", "evaluator", "--city", "semarang",
                 "--keys-file", str(keys_file)])  # fmt: skip
    assert code == 0
    key = capsys.readouterr().out.strip().splitlines()[-1]
    assert key.startswith("pw_")
    stored = keys_file.read_text()
    assert key not in stored
    assert hash_key(key) in stored
    assert keys_file.stat().st_mode & 0o777 == 0o600
    record = KeyStore(keys_file).authenticate(key)
    assert record is not None
    assert record.role is Role.EVALUATOR
    assert record.cities == ("semarang",)

    assert main(["api", "keys", "list", "--keys-file", str(keys_file)]) == 0
    listing = capsys.readouterr().out
    assert "eval-1" in listing
    assert "evaluator" in listing
    assert key not in listing


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--role", "operator", "--city", "paris"], "unknown city 'paris'"),
        (["--role", "operator", "--site", "nowhere"], "unknown site 'nowhere'"),
        (["--role", "operator"], "a operator key needs a scope"),
    ],
)
def test_keys_add_refuses_a_bad_scope(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], argv: list[str], message: str
) -> None:
    code = main(["api", "keys", "add", "--name", "x", "--keys-file", str(tmp_path / "k.yaml"), *argv])
    assert code == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "k.yaml").exists()


def test_keys_add_refuses_an_unknown_role(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(["api", "keys", "add", "--name", "x", "--role", "mayor", "--keys-file", str(tmp_path / "k.yaml")])
    assert "role must be one of operator, city_staff, evaluator, admin, got 'mayor'" in capsys.readouterr().err


def test_duplicate_names_and_removal(tmp_path: Path, manifest: Manifest) -> None:
    store = KeyStore(tmp_path / "keys.yaml")
    _, key = store.add(ApiKeyCreate(name="a", role=Role.ADMIN), manifest)
    with pytest.raises(KeyStoreError, match="a key named 'a' exists already"):
        store.add(ApiKeyCreate(name="a", role=Role.ADMIN), manifest)
    store.remove("a")
    assert store.authenticate(key) is None
    with pytest.raises(KeyStoreError, match="no key named 'a'"):
        store.remove("a")


def test_a_running_api_picks_up_new_and_revoked_keys(influx_url: str, tmp_path: Path, manifest: Manifest) -> None:
    keys_file = tmp_path / "keys.yaml"
    settings = ApiSettings(influx={"url": influx_url}, keys_file=keys_file)
    with TestClient(create_app(settings, manifest=manifest)) as client:
        store = KeyStore(keys_file)
        _, key = store.add(ApiKeyCreate(name="late", role=Role.CITY_STAFF, cities=("da-nang",)), manifest)
        me = client.get("/me", headers={"X-API-Key": key})
        assert me.status_code == 200
        assert me.json() == {"name": "late", "role": "city_staff", "cities": ["da-nang"], "sites": []}
        store.remove("late")
        assert client.get("/me", headers={"X-API-Key": key}).status_code == 401


def test_a_broken_keys_file_is_named_in_the_error(tmp_path: Path) -> None:
    keys_file = tmp_path / "keys.yaml"
    keys_file.write_text("keys: [{name: x}]\n")
    with pytest.raises(KeyStoreError, match=str(keys_file)):
        KeyStore(keys_file).records()
