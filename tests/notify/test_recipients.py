"""The recipients file and the manifest's new keys: valid files load, broken ones fail naming path and cause,
and secrets come only from the environment or a secrets file."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest
import yaml

from notify.recipients import Address, RecipientsError, load_recipients, parse_recipients
from notify.routing import Router
from notify.settings import NotifySettings
from pilotwatch.manifest import AlertChannel, AlertKind, Manifest, ManifestError, Role, load_manifest, parse_manifest
from tests.conftest import DEFAULT_MANIFEST
from tests.notify.conftest import SECRETS, recipients_document


@pytest.fixture
def doc(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    monkeypatch.setenv("PW_T_BKK", SECRETS["bkk-staff-hook"])
    monkeypatch.setenv("PW_T_DUTY", SECRETS["duty-hook"])
    secret_file = tmp_path / "mlk.secret"
    secret_file.write_text(SECRETS["mlk-staff-hook"])
    return recipients_document("https://hooks.example", "pilotwatch/v1/alerts/bangkok/ops", secret_file)


def problems(data: Any, manifest: Manifest | None = None) -> list[tuple[str, str]]:
    with pytest.raises(RecipientsError) as err:
        parse_recipients(data, "recipients.yaml", manifest)
    assert str(err.value).startswith("recipients.yaml: ")
    return err.value.problems


def test_the_shipped_manifest_still_loads_and_has_no_recipients_file() -> None:
    manifest = load_manifest()
    assert manifest.notifications is None
    assert all(route.escalation == [] for route in manifest.alerts)


def test_a_valid_file_resolves_addresses_per_city_and_role(doc: dict[str, Any], manifest: Manifest) -> None:
    recipients = parse_recipients(doc, "recipients.yaml", manifest)
    assert recipients.addresses("bangkok", [Role.CITY_STAFF], list(AlertChannel)) == {
        Address(AlertChannel.EMAIL, "bkk-staff@city.example"),
        Address(AlertChannel.WEBHOOK, "bkk-staff-hook"),
    }
    # The * group (admin) applies to every city; a city without a group of the role gets nobody.
    assert recipients.addresses("jakarta", [Role.ADMIN], [AlertChannel.EMAIL]) == {
        Address(AlertChannel.EMAIL, "duty@pilot.example")
    }
    assert recipients.addresses("jakarta", [Role.CITY_STAFF], list(AlertChannel)) == set()
    assert recipients.webhook("mlk-staff-hook").secret.get_secret_value() == SECRETS["mlk-staff-hook"]
    # The shipped routes: pollution goes to city staff by webhook and e-mail.
    assert Router(manifest, recipients).addresses("bangkok", AlertKind.POLLUTION) == {
        Address(AlertChannel.EMAIL, "bkk-staff@city.example"),
        Address(AlertChannel.WEBHOOK, "bkk-staff-hook"),
    }


def test_a_missing_secret_is_an_error_naming_the_entry(doc: dict[str, Any], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("PW_T_BKK")
    assert problems(doc) == [("recipients[0].webhooks[0]", "environment variable PW_T_BKK (secret_env) is not set")]


def test_a_short_secret_and_a_secret_in_no_place_are_refused(
    doc: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PW_T_BKK", "short")
    del doc["recipients"][4]["webhooks"][0]["secret_env"]
    found = dict(problems(doc))
    assert found["recipients[0].webhooks[0]"].startswith("the signing secret in environment variable PW_T_BKK has 5")
    assert found["recipients[4].webhooks[0]"] == (
        "set exactly one of secret_env or secret_file; a webhook is never sent unsigned"
    )


def test_unreadable_secret_file(doc: dict[str, Any], tmp_path: Path) -> None:
    doc["recipients"][3]["webhooks"][0]["secret_file"] = str(tmp_path / "missing")
    ((path, message),) = problems(doc)
    assert path == "recipients[3].webhooks[0]"
    assert message.startswith(f"cannot read secret_file '{tmp_path / 'missing'}'")


@pytest.mark.parametrize(
    ("change", "path", "message"),
    [
        (
            lambda d: d["recipients"][1].update(email=["not-an-address"]),
            "recipients[1]",
            "'not-an-address' is not an e-mail address",
        ),
        (
            lambda d: d["recipients"][1].update(emial=["x@y.org"]),
            "recipients[1].emial",
            "unknown key (check the spelling; see docs/manifest.md for the allowed keys)",
        ),
        (
            lambda d: d["recipients"][1].update(role="mayor"),
            "recipients[1].role",
            "Input should be 'operator', 'city_staff', 'evaluator' or 'admin'",
        ),
        (
            lambda d: d["recipients"][2]["mqtt"][0].update(topic="alerts/#"),
            "recipients[2].mqtt[0]",
            "topic 'alerts/#' must be a plain prefix: no + # or $ and no trailing /",
        ),
        (
            lambda d: d["recipients"][1].update(email=[]),
            "recipients[1]",
            "a recipient group needs at least one e-mail address, webhook or MQTT topic",
        ),
        (lambda d: d.update(version=2), "", "recipients file version 2 is not supported; this reads 1"),
    ],
)
def test_a_broken_entry_names_its_path(doc: dict[str, Any], change: Any, path: str, message: str) -> None:
    change(doc)
    assert problems(doc) == [(path, message)]


def test_an_unknown_city_is_named(doc: dict[str, Any], manifest: Manifest) -> None:
    doc["recipients"][1]["city"] = "bangkokk"
    ((path, message),) = problems(doc, manifest)
    assert path == "recipients[1].city"
    assert message.startswith("unknown city 'bangkokk'; known: ['bangkok', ")


def test_the_manifest_points_to_the_recipients_file_and_validates_escalation(
    doc: dict[str, Any], tmp_path: Path
) -> None:
    raw: dict[str, Any] = copy.deepcopy(yaml.safe_load(DEFAULT_MANIFEST.read_text()))
    raw["notifications"] = {"recipients": "recipients.yaml"}
    raw["alerts"][0]["escalation"] = [{"after_s": 1800, "roles": ["admin"]}, {"after_s": 900, "roles": ["operator"]}]
    with pytest.raises(ManifestError) as err:
        parse_manifest(raw, "m.yaml")
    assert err.value.problems == [
        ("alerts[0].escalation", "escalation steps must have rising after_s, got [1800.0, 900.0]")
    ]
    raw["alerts"][0]["escalation"] = [{"after_s": 1800, "roles": ["admin"], "channels": ["email"]}]
    (tmp_path / "manifest.yaml").write_text(yaml.safe_dump(raw, sort_keys=False))
    (tmp_path / "recipients.yaml").write_text(yaml.safe_dump(doc))
    manifest = load_manifest(tmp_path / "manifest.yaml")
    settings = NotifySettings(manifest=tmp_path / "manifest.yaml")
    recipients = load_recipients(settings.resolve_recipients_file(manifest), manifest)
    router = Router(manifest, recipients)
    assert router.escalation_addresses("melaka", AlertKind.POLLUTION, 1) == {
        Address(AlertChannel.EMAIL, "duty@pilot.example")
    }
    assert router.escalation_addresses("melaka", AlertKind.POLLUTION, 2) == set()


def test_settings_refuse_placeholders_and_unreadable_secret_files(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="smtp_password is a placeholder value"):
        NotifySettings(smtp_password="changeme")
    with pytest.raises(ValueError, match="cannot read ack_link_secret_file"):
        NotifySettings(ack_link_secret_file=tmp_path / "nope")
    (tmp_path / "ack").write_text("an-ack-link-secret-from-a-file-0001\n")
    settings = NotifySettings(ack_link_secret_file=tmp_path / "ack")
    assert settings.ack_link_secret is not None
    assert settings.ack_link_secret.get_secret_value() == "an-ack-link-secret-from-a-file-0001"
    with pytest.raises(ValueError, match="no recipients file"):
        NotifySettings().resolve_recipients_file(load_manifest())


def test_the_commented_sample_recipients_file_loads(manifest: Manifest, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PILOTWATCH_WEBHOOK_SECRET_BKK", "a-real-secret-from-the-environment")
    sample = Path(__file__).resolve().parents[2] / "notify" / "recipients.sample.yaml"
    recipients = load_recipients(sample, manifest)
    assert Router(manifest, recipients).addresses("bangkok", AlertKind.POLLUTION) == {
        Address(AlertChannel.EMAIL, "environment-duty@bangkok.example.org"),
        Address(AlertChannel.WEBHOOK, "bkk-incidents"),
    }
    assert Router(manifest, recipients).addresses("da-nang", AlertKind.DEVICE) == {
        Address(AlertChannel.EMAIL, "pilot-operations@pilotwatch.example.org"),
        Address(AlertChannel.MQTT, "pilotwatch/v1/alerts/control-room"),
    }
