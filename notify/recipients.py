"""Who hears about alerts: a recipients file per city and role, validated on load.

In: a YAML file (``notifications.recipients`` in the manifest, or ``PILOTWATCH_NOTIFY_RECIPIENTS_FILE``). Out: an
immutable :class:`Recipients` that answers "which addresses of which channel does role R of city C have", or a
:class:`RecipientsError` that names the file, the path inside it and what is wrong, worded like manifest errors.

Webhook signing secrets never sit in the file: an entry names an environment variable or a secrets file, and a
missing, short or empty secret is an error at load time, never a default.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Self

import yaml
from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, SecretStr, ValidationError, model_validator

from pilotwatch.manifest import AlertChannel, Manifest, Role, validation_problems

RECIPIENTS_VERSION = 1
ALL_CITIES = "*"
# A signing secret is only as good as its entropy; 16 characters is the least `openssl rand -hex 8` gives.
MIN_SECRET_LENGTH = 16
_EMAIL = re.compile(r"^[^@\s<>,;]+@[^@\s<>,;]+\.[^@\s<>,;]+$")
_NAME = re.compile(r"^[a-z0-9][a-z0-9_.-]{0,63}$")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Webhook(_Strict):
    name: str = Field(pattern=_NAME.pattern, description="stable id of this endpoint; part of delivery keys")
    url: str
    secret_env: str | None = Field(default=None, description="environment variable holding the signing secret")
    secret_file: Path | None = Field(default=None, description="file holding the signing secret (docker secret)")
    _secret: SecretStr = PrivateAttr()

    @model_validator(mode="after")
    def _resolve_secret(self) -> Self:
        if not self.url.startswith(("https://", "http://")):
            raise ValueError(f"url must start with https:// or http://, got {self.url!r}")
        if (self.secret_env is None) == (self.secret_file is None):
            raise ValueError("set exactly one of secret_env or secret_file; a webhook is never sent unsigned")
        if self.secret_env is not None:
            value = os.environ.get(self.secret_env)
            if value is None:
                raise ValueError(f"environment variable {self.secret_env} (secret_env) is not set")
            where = f"environment variable {self.secret_env}"
        else:
            assert self.secret_file is not None
            try:
                value = self.secret_file.read_text(encoding="utf-8")
            except OSError as exc:
                raise ValueError(f"cannot read secret_file {str(self.secret_file)!r}: {exc.strerror}") from None
            where = f"secret_file {str(self.secret_file)!r}"
        value = value.strip()
        if len(value) < MIN_SECRET_LENGTH:
            raise ValueError(
                f"the signing secret in {where} has {len(value)} characters; use at least {MIN_SECRET_LENGTH}"
                " (e.g. `openssl rand -hex 32`)"
            )
        self._secret = SecretStr(value)
        return self

    @property
    def secret(self) -> SecretStr:
        return self._secret


class MqttTarget(_Strict):
    topic: str = Field(
        min_length=1,
        max_length=200,
        description="topic prefix: events go to <topic>/events, the retained state of a site to <topic>/sites/<site>",
    )

    @model_validator(mode="after")
    def _plain_topic(self) -> Self:
        if any(c in self.topic for c in "+#\0") or self.topic.startswith("$") or self.topic.endswith("/"):
            raise ValueError(f"topic {self.topic!r} must be a plain prefix: no + # or $ and no trailing /")
        return self


class RecipientGroup(_Strict):
    city: str = Field(min_length=1, description="a city id of the manifest, or * for every city")
    role: Role
    email: list[str] = Field(default_factory=list)
    webhooks: list[Webhook] = Field(default_factory=list)
    mqtt: list[MqttTarget] = Field(default_factory=list)

    @model_validator(mode="after")
    def _valid(self) -> Self:
        for address in self.email:
            if not _EMAIL.match(address):
                raise ValueError(f"{address!r} is not an e-mail address")
        if not (self.email or self.webhooks or self.mqtt):
            raise ValueError("a recipient group needs at least one e-mail address, webhook or MQTT topic")
        return self


class RecipientsFile(_Strict):
    version: int
    recipients: list[RecipientGroup] = Field(default_factory=list)

    @model_validator(mode="after")
    def _version_and_unique_names(self) -> Self:
        if self.version != RECIPIENTS_VERSION:
            raise ValueError(
                f"recipients file version {self.version} is not supported; this reads {RECIPIENTS_VERSION}"
            )
        names: dict[str, str] = {}
        for group in self.recipients:
            for hook in group.webhooks:
                if names.setdefault(hook.name, hook.url) != hook.url:
                    raise ValueError(f"webhook name {hook.name!r} is used for two different urls")
        return self


class RecipientsError(ValueError):
    """A recipients file that cannot be used; ``problems`` lists (path inside the file, message)."""

    def __init__(self, source: str, problems: list[tuple[str, str]]) -> None:
        self.source = source
        self.problems = problems
        lines = [f"{source}: {len(problems)} problem(s) in the recipients file"]
        lines += [f"  - {path or '<top>'}: {message}" for path, message in problems]
        super().__init__("\n".join(lines))


@dataclass(frozen=True, slots=True, order=True)
class Address:
    """One place a message goes. ``recipient`` is the e-mail address, the webhook's name or the MQTT prefix."""

    channel: AlertChannel
    recipient: str


@dataclass(frozen=True)
class Recipients:
    file: RecipientsFile
    source: str

    def groups(self, city: str, role: Role) -> Iterator[RecipientGroup]:
        for group in self.file.recipients:
            if group.role is role and group.city in (city, ALL_CITIES):
                yield group

    def addresses(self, city: str, roles: list[Role], channels: list[AlertChannel]) -> set[Address]:
        """Every address of the given roles of ``city`` on the given channels; nobody else."""
        out: set[Address] = set()
        for role in roles:
            for group in self.groups(city, role):
                if AlertChannel.EMAIL in channels:
                    out.update(Address(AlertChannel.EMAIL, a.lower()) for a in group.email)
                if AlertChannel.WEBHOOK in channels:
                    out.update(Address(AlertChannel.WEBHOOK, h.name) for h in group.webhooks)
                if AlertChannel.MQTT in channels:
                    out.update(Address(AlertChannel.MQTT, m.topic) for m in group.mqtt)
        return out

    def webhook(self, name: str) -> Webhook:
        for group in self.file.recipients:
            for hook in group.webhooks:
                if hook.name == name:
                    return hook
        raise KeyError(name)


def parse_recipients(data: Any, source: str, manifest: Manifest | None = None) -> Recipients:
    if not isinstance(data, dict):
        raise RecipientsError(source, [("", f"the recipients file must be a mapping, got {type(data).__name__}")])
    try:
        parsed = RecipientsFile.model_validate(data)
    except ValidationError as exc:
        raise RecipientsError(source, validation_problems(exc, data)) from None
    if manifest is not None:
        city_ids = {c.id for c in manifest.cities}
        problems = [
            (f"recipients[{i}].city", f"unknown city {g.city!r}; known: {sorted(city_ids)} or '*'")
            for i, g in enumerate(parsed.recipients)
            if g.city != ALL_CITIES and g.city not in city_ids
        ]
        if problems:
            raise RecipientsError(source, problems)
    return Recipients(parsed, source)


def load_recipients(path: str | Path, manifest: Manifest | None = None) -> Recipients:
    source = str(path)
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise RecipientsError(source, [("", f"cannot read the file: {exc.strerror}")]) from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise RecipientsError(source, [("", f"not valid YAML: {getattr(exc, 'problem', exc)}")]) from None
    return parse_recipients(data, source, manifest)
