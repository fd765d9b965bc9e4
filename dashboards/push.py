"""Push the datasource, a folder per programme and every dashboard to Grafana through its HTTP API.

Uses ``grafana-client`` (the maintained successor of ``grafana-api``). Each step is an upsert keyed by uid, so
pushing twice changes nothing the second time but the dashboards' version numbers.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from grafana_client.api import GrafanaApi
from grafana_client.client import GrafanaClientError
from pydantic import SecretStr, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from dashboards.build import DATASOURCE_NAME, DATASOURCE_UID, Json, build_all, folder_uid
from pilotwatch.manifest import Manifest

_PLACEHOLDERS = frozenset({"changethis", "changeme", "secret", "password", "token", "admin"})


class PushSettings(BaseSettings):
    """Where to push and what the datasource should point at (``PILOTWATCH_DASHBOARDS_*``)."""

    model_config = SettingsConfigDict(env_prefix="PILOTWATCH_DASHBOARDS_", extra="forbid")

    grafana_url: str = "http://127.0.0.1:3000"
    grafana_token: SecretStr | None = None
    """A Grafana service-account token with the Editor role (or Admin, to create the datasource)."""
    influx_url: str = "http://influxdb:8086"
    """InfluxDB as Grafana's server reaches it (inside compose: the service name)."""
    influx_database: str = "pilotwatch"
    influx_token: SecretStr | None = None
    """InfluxDB 2.x/3.x read token; Grafana sends it as ``Authorization: Token ...`` with each InfluxQL query."""

    @field_validator("grafana_url", "influx_url")
    @classmethod
    def _http(cls, value: str) -> str:
        if not value.startswith(("http://", "https://")):
            raise ValueError(f"URL must start with http:// or https://, got {value!r}")
        return value.rstrip("/")

    @field_validator("grafana_token", "influx_token")
    @classmethod
    def _real_secret(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None and value.get_secret_value().strip().lower() in _PLACEHOLDERS | {""}:
            raise ValueError("is empty or a placeholder; set a real token")
        return value


def datasource_model(settings: PushSettings) -> Json:
    """An InfluxDB datasource in InfluxQL mode; with a token, InfluxDB 2.x's v1 API answers through the DBRP."""
    model: Json = {
        "uid": DATASOURCE_UID,
        "name": DATASOURCE_NAME,
        "type": "influxdb",
        "access": "proxy",
        "url": settings.influx_url,
        "isDefault": True,
        "jsonData": {"dbName": settings.influx_database, "httpMode": "GET"},
    }
    if settings.influx_token is not None:
        model["jsonData"]["httpHeaderName1"] = "Authorization"
        model["secureJsonData"] = {"httpHeaderValue1": f"Token {settings.influx_token.get_secret_value()}"}
    return model


@dataclass
class PushReport:
    datasource: str = ""
    folder: str = ""
    dashboards: list[str] = field(default_factory=list)


def _exists(call: Any, *args: Any) -> bool:
    try:
        call(*args)
    except GrafanaClientError as exc:
        if exc.status_code == 404:
            return False
        raise
    return True


def push(grafana: GrafanaApi, manifest: Manifest, settings: PushSettings) -> PushReport:
    # grafana-client's methods carry no type hints; talk to it through Any rather than silence each call.
    api: Any = grafana
    report = PushReport()
    ds = datasource_model(settings)
    if _exists(api.datasource.get_datasource_by_uid, DATASOURCE_UID):
        api.datasource.update_datasource_by_uid(DATASOURCE_UID, ds)
        report.datasource = "updated"
    else:
        api.datasource.create_datasource(ds)
        report.datasource = "created"
    uid = folder_uid(manifest)
    title = manifest.programme.name
    if _exists(api.folder.get_folder, uid):
        api.folder.update_folder(uid, title=title, overwrite=True)
        report.folder = "updated"
    else:
        api.folder.create_folder(title, uid=uid)
        report.folder = "created"
    for dash_uid, dashboard in build_all(manifest).items():
        api.dashboard.update_dashboard(
            {
                "dashboard": {**dashboard, "id": None},
                "folderUid": uid,
                "overwrite": True,
                "message": "pilotwatch dashboards push",
            }
        )
        report.dashboards.append(dash_uid)
    return report


def connect(settings: PushSettings) -> GrafanaApi:
    token = settings.grafana_token.get_secret_value() if settings.grafana_token else None
    grafana: GrafanaApi = GrafanaApi.from_url(settings.grafana_url, credential=token)
    return grafana


def close(grafana: GrafanaApi) -> None:
    # grafana-client keeps a pooled HTTP session open; close it so no socket outlives the push.
    client: Any = grafana.client
    client.s.close()
