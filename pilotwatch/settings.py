"""Settings shared by every pilotwatch command and service.

- :class:`CommonSettings`: where the local stack lives and which manifest is in force (``PILOTWATCH_HOME``,
  ``PILOTWATCH_MANIFEST``, ``--home``, ``--manifest``).
- :class:`InfluxConnection` and :class:`MqttConnection`: how a service reaches InfluxDB and the broker. Each
  service's settings hold them as sub-models (``PILOTWATCH_<SERVICE>_INFLUX__URL``, ``..._MQTT__HOST``), and
  :meth:`InfluxConnection.client` is the one place an InfluxDB client is built from settings.
- :class:`ServiceSettings`: the base of every service's settings class. Sources, strongest first: keyword
  arguments (the command line's flags), ``PILOTWATCH_<SERVICE>_*`` variables, a secrets directory, then the local
  stack of ``--home`` (what ``pilotwatch stack up`` started), then the defaults. Built when a command starts,
  never at import; building validates and touches no network.
"""

from __future__ import annotations

import contextvars
import enum
import json
import os
import socket
import types
import typing
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Self

from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator, model_validator
from pydantic.fields import FieldInfo
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

from pilotwatch.influx import InfluxV1
from pilotwatch.manifest import Manifest, load_manifest

# Values that sample files and tutorials put where a secret belongs. A deployment that still carries one has not
# been configured, and the service refuses to start rather than run with a guessable credential.
PLACEHOLDER_SECRETS = frozenset({"secret", "password", "token", "admin", "example", "xxx"})
PLACEHOLDER_FRAGMENTS = ("changethis", "changeme", "change-me", "change_me")


def refuse_placeholder(name: str, value: SecretStr | None) -> None:
    if value is None:
        return
    text = value.get_secret_value()
    lowered = text.strip().lower()
    if lowered in PLACEHOLDER_SECRETS or any(p in lowered for p in PLACEHOLDER_FRAGMENTS):
        raise ValueError(f"{name} is a placeholder value; set a real secret (e.g. from `openssl rand -hex 32`)")
    if text.strip() == "":
        raise ValueError(f"{name} is empty; leave it unset or set a real secret")


def _secret(value: SecretStr | None) -> str | None:
    return None if value is None else value.get_secret_value()


class CommonSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="PILOTWATCH_", extra="forbid")

    home: Path = Path(".pilotwatch")
    """Folder of the local stack: service data, logs, pid files, edge buffers."""
    manifest: Path | None = None
    """Pilot manifest; empty means the default manifest shipped with pilotwatch."""

    def load_manifest(self) -> Manifest:
        return load_manifest(self.manifest)

    @property
    def stack_root(self) -> Path:
        return self.home / "stack"


STACK_STATE_FILE = "stack.json"


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port nobody listens on right now (the OS picks it, so tests never collide)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


@dataclass(frozen=True)
class StackConfig:
    """Where the one-machine stack listens and keeps its data (``commands.stack`` runs it)."""

    root: Path
    mqtt_port: int = 1883
    influx_port: int = 8086
    influx_rpc_port: int = 8088
    database: str = "pilotwatch"
    host: str = "127.0.0.1"

    @property
    def mqtt_url(self) -> str:
        return f"mqtt://{self.host}:{self.mqtt_port}"

    @property
    def influx_url(self) -> str:
        return f"http://{self.host}:{self.influx_port}"

    @property
    def state_file(self) -> Path:
        return self.root / STACK_STATE_FILE

    def save(self) -> None:
        self.state_file.write_text(json.dumps({k: str(v) for k, v in asdict(self).items()}))

    @classmethod
    def load(cls, root: Path) -> StackConfig:
        """The stack recorded in ``root/stack.json`` by ``pilotwatch stack up``."""
        state = json.loads((root / STACK_STATE_FILE).read_text())
        return cls(
            root=root,
            mqtt_port=int(state["mqtt_port"]),
            influx_port=int(state["influx_port"]),
            influx_rpc_port=int(state["influx_rpc_port"]),
            database=state["database"],
            host=state["host"],
        )

    @classmethod
    def with_free_ports(cls, root: Path, database: str = "pilotwatch") -> StackConfig:
        return cls(
            root=root,
            mqtt_port=free_port(),
            influx_port=free_port(),
            influx_rpc_port=free_port(),
            database=database,
        )


# ------------------------------------------------------------------------------------------------ connections
class InfluxApi(enum.StrEnum):
    V1 = "v1"  # POST /write with database (InfluxDB 1.x, 2.x v1-compat, 3.x)
    V2 = "v2"  # influxdb-client, /api/v2/write with token, org, bucket (InfluxDB 2.x, 3.x)


class InfluxConnection(BaseModel):
    """Where and how to reach InfluxDB. Queries are InfluxQL on ``/query`` whatever the version; ``api`` chooses
    the write path (v2 needs ``token``, ``org`` and ``bucket``)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    url: str = "http://127.0.0.1:8086"
    database: str = Field(default="pilotwatch", min_length=1)
    """Database (1.x) or DBRP-mapped database name (2.x, 3.x)."""
    username: str | None = None
    password: SecretStr | None = None
    token: SecretStr | None = None
    """InfluxDB 2.x/3.x token, sent as ``Authorization: Token ...``."""
    timeout_s: float = Field(default=30.0, gt=0, le=600)
    api: InfluxApi = InfluxApi.V1
    org: str | None = None
    bucket: str | None = None

    @field_validator("url")
    @classmethod
    def _http_url(cls, value: str) -> str:
        if not value.startswith(("http://", "https://")):
            raise ValueError(f"influx url must start with http:// or https://, got {value!r}")
        return value.rstrip("/")

    @field_validator("token", "password")
    @classmethod
    def _no_placeholder(cls, value: SecretStr | None, info: Any) -> SecretStr | None:
        refuse_placeholder(f"influx {info.field_name}", value)
        return value

    @model_validator(mode="after")
    def _consistent(self) -> Self:
        if self.token is not None and self.username is not None:
            raise ValueError("set influx token (InfluxDB 2.x/3.x) or username/password (1.x), not both")
        if self.api is InfluxApi.V2:
            missing = [n for n in ("token", "org", "bucket") if not getattr(self, n)]
            if missing:
                raise ValueError(f"influx api v2 needs {', '.join(missing)}")
        return self

    def client(self) -> InfluxV1:
        """The v1 HTTP client (``/query``, ``/write``) with these credentials: the one place it is built."""
        return InfluxV1(
            self.url,
            self.database,
            username=self.username,
            password=_secret(self.password),
            token=_secret(self.token),
            timeout_s=self.timeout_s,
        )


class MqttConnection(BaseModel):
    """Where and how to reach the MQTT broker."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    host: str = "127.0.0.1"
    port: int = Field(default=1883, ge=1, le=65_535)
    username: str | None = None
    password: SecretStr | None = None
    keepalive_s: int = Field(default=30, ge=5, le=3_600)

    @field_validator("password")
    @classmethod
    def _no_placeholder(cls, value: SecretStr | None) -> SecretStr | None:
        refuse_placeholder("mqtt password", value)
        return value


# ------------------------------------------------------------------------------------------------ service settings
_LOCAL_DEFAULTS: contextvars.ContextVar[Mapping[str, Any]] = contextvars.ContextVar(
    "local_defaults", default=types.MappingProxyType({})
)


class _LocalDefaults(PydanticBaseSettingsSource):
    """The weakest source but the defaults: what :meth:`ServiceSettings.for_command` found for this command."""

    def get_field_value(self, field: FieldInfo, field_name: str) -> tuple[Any, str, bool]:
        return _LOCAL_DEFAULTS.get().get(field_name), field_name, False

    def __call__(self) -> dict[str, Any]:
        return dict(_LOCAL_DEFAULTS.get())


@contextmanager
def _local_defaults(values: Mapping[str, Any]) -> Iterator[None]:
    token = _LOCAL_DEFAULTS.set(values)
    try:
        yield
    finally:
        _LOCAL_DEFAULTS.reset(token)


class ServiceSettings(BaseSettings):
    """Base of each service's settings (see the module docstring for the order of the sources)."""

    model_config = SettingsConfigDict(extra="forbid", env_nested_delimiter="__")

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        return init_settings, env_settings, dotenv_settings, file_secret_settings, _LocalDefaults(settings_cls)

    @classmethod
    def local_defaults(cls, common: CommonSettings, stack: StackConfig | None) -> dict[str, Any]:
        """What this service takes from ``--home`` and its local stack when nothing stronger says otherwise."""
        return {}

    @model_validator(mode="before")
    @classmethod
    def _no_unknown_variables(cls, data: Any) -> Any:
        """Refuse a ``PILOTWATCH_<SERVICE>_*`` variable that names no setting: pydantic-settings would ignore it,
        and a misspelt or renamed variable would silently leave the default in force."""
        prefix = str(cls.model_config.get("env_prefix", "")).upper()
        if prefix:
            known = set(_variable_names(cls, prefix))
            unknown = sorted(
                name for name in os.environ if name.upper().startswith(prefix) and name.upper() not in known
            )
            if unknown:
                raise ValueError(
                    f"unknown setting(s) {', '.join(unknown)}; {cls.__name__} reads {', '.join(sorted(known))}"
                )
        return data

    @classmethod
    def for_command(cls, common: CommonSettings, **flags: Any) -> Self:
        """Settings for a command: ``flags`` (None = not given) over the environment over the local stack."""
        root = common.stack_root
        stack = StackConfig.load(root) if (root / STACK_STATE_FILE).exists() else None
        with _local_defaults(cls.local_defaults(common, stack)):
            return cls(**_given(flags))


def _variable_names(model: type[BaseModel], prefix: str) -> Iterator[str]:
    """Every environment name that sets a field of ``model`` (sub-models: whole, as JSON, or field by field)."""
    for name, field in model.model_fields.items():
        yield f"{prefix}{name.upper()}"
        for kind in _model_types(field.annotation):
            yield from _variable_names(kind, f"{prefix}{name.upper()}__")


def _model_types(annotation: Any) -> Iterator[type[BaseModel]]:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        yield annotation
    for arg in typing.get_args(annotation):
        yield from _model_types(arg)


def _given(values: Mapping[str, Any]) -> dict[str, Any]:
    """``values`` without the flags that were not given (None), also inside sub-model dicts."""
    out: dict[str, Any] = {}
    for key, value in values.items():
        given = _given(value) if isinstance(value, Mapping) else value
        if given is not None and given != {}:
            out[key] = given
    return out


def stack_influx(stack: StackConfig | None) -> dict[str, Any]:
    """The ``influx`` sub-model's values for a local stack (empty without one)."""
    return {} if stack is None else {"url": stack.influx_url, "database": stack.database}


def stack_mqtt(stack: StackConfig | None) -> dict[str, Any]:
    return {} if stack is None else {"host": stack.host, "port": stack.mqtt_port}
