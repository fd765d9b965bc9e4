"""API keys: a role and a scope per key, stored hashed in a YAML or JSON file.

A key is ``pw_`` plus 32 random bytes (URL-safe base64); it is shown once, when it is made, and only its
SHA-256 is stored. A plain hash is enough here because the key is random and long: there is nothing to guess
that a slow password hash would protect. The file is re-read when it changes, so keys added with
``pilotwatch api keys add`` work without restarting the API.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import os
import secrets
import threading
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from pilotwatch.manifest import Manifest, Role

KEY_PREFIX = "pw_"
ALL_CITIES = "*"
_UNLOADED = object()


class ApiKeyBase(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(min_length=1, max_length=80)
    role: Role
    cities: tuple[str, ...] = ()
    """City ids the key may read; ``*`` means every city."""
    sites: tuple[str, ...] = ()
    """Site ids the key may read, in addition to whole cities."""

    @field_validator("name")
    @classmethod
    def _printable_name(cls, value: str) -> str:
        # Names are printed in `keys list`, logs and 403 details: a control character could forge or hide a line.
        if not value.isprintable() or value != value.strip():
            raise ValueError(
                f"key name {value!r} has control characters or surrounding spaces; use printable text, e.g. ops-bkk"
            )
        return value


class ApiKeyCreate(ApiKeyBase):
    pass


class ApiKeyRecord(ApiKeyBase):
    """What the keys file holds for one key."""

    sha256: str = Field(pattern=r"^[0-9a-f]{64}$")
    created: dt.datetime

    def can_read_site(self, city_id: str, site_id: str) -> bool:
        if self.role is Role.ADMIN or ALL_CITIES in self.cities:
            return True
        return city_id in self.cities or site_id in self.sites


class ApiKeyPublic(ApiKeyBase):
    created: dt.datetime


class KeysFile(BaseModel):
    model_config = ConfigDict(extra="forbid")

    version: int = 1
    keys: list[ApiKeyRecord] = Field(default_factory=list)


class KeyStoreError(ValueError):
    pass


def hash_key(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def validate_scope(manifest: Manifest, create: ApiKeyCreate) -> None:
    """Refuse a scope that names cities or sites the manifest does not know, or a non-admin key with none."""
    city_ids = {c.id for c in manifest.cities}
    site_ids = {s.id for _, s in manifest.iter_sites()}
    for city in create.cities:
        if city != ALL_CITIES and city not in city_ids:
            raise KeyStoreError(f"unknown city {city!r}; known: {', '.join(sorted(city_ids))} or '*'")
    for site in create.sites:
        if site not in site_ids:
            raise KeyStoreError(f"unknown site {site!r}; see `pilotwatch manifest show` for site ids")
    if create.role is Role.ADMIN and (create.cities or create.sites):
        # An admin reads every site whatever its scope says; accepting a scope would promise a limit that is not there.
        raise KeyStoreError("an admin key reads every city and site; give no --city/--site, or choose another role")
    if create.role is not Role.ADMIN and not create.cities and not create.sites:
        raise KeyStoreError(f"a {create.role.value} key needs a scope: give --city and/or --site (or --city '*')")


class KeyStore:
    """Keys of one file. Reads are cached and refreshed when the file's modification time changes."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._lock = threading.Lock()
        self._stamp: tuple[int, int] | object | None = _UNLOADED
        self._by_hash: dict[str, ApiKeyRecord] = {}

    def _load_file(self) -> KeysFile:
        try:
            text = self.path.read_text(encoding="utf-8")
        except FileNotFoundError:
            return KeysFile()
        except OSError as exc:
            raise KeyStoreError(f"{self.path}: cannot read the keys file: {exc.strerror}") from None
        try:
            data: Any = json.loads(text) if self.path.suffix == ".json" else yaml.safe_load(text)
        except (json.JSONDecodeError, yaml.YAMLError) as exc:
            raise KeyStoreError(f"{self.path}: not valid {self.path.suffix.lstrip('.') or 'YAML'}: {exc}") from None
        if data is None:
            return KeysFile()
        try:
            return KeysFile.model_validate(data)
        except ValidationError as exc:
            raise KeyStoreError(f"{self.path}: {exc.errors(include_url=False)[0]['msg']}") from None

    def _refresh(self) -> None:
        try:
            stat = self.path.stat()
            stamp: tuple[int, int] | None = (stat.st_mtime_ns, stat.st_size)
        except FileNotFoundError:
            stamp = None
        if stamp == self._stamp:
            return
        records = self._load_file().keys
        self._by_hash = {r.sha256: r for r in records}
        self._stamp = stamp

    def check(self) -> str | None:
        """None when the keys file is usable, else why not (for ``/health``; the path is not included)."""
        try:
            self.records()
        except KeyStoreError as exc:
            return str(exc).removeprefix(f"{self.path}: ")
        return None

    def records(self) -> list[ApiKeyRecord]:
        with self._lock:
            self._refresh()
            return list(self._by_hash.values())

    def authenticate(self, key: str) -> ApiKeyRecord | None:
        if not key.startswith(KEY_PREFIX):
            return None
        with self._lock:
            self._refresh()
            return self._by_hash.get(hash_key(key))

    def add(self, create: ApiKeyCreate, manifest: Manifest) -> tuple[ApiKeyRecord, str]:
        """Make a key; return its record and the key itself, which is not stored anywhere."""
        validate_scope(manifest, create)
        with self._lock:
            current = self._load_file()
            if any(r.name == create.name for r in current.keys):
                raise KeyStoreError(f"a key named {create.name!r} exists already in {self.path}")
            key = KEY_PREFIX + secrets.token_urlsafe(32)
            record = ApiKeyRecord(
                **create.model_dump(), sha256=hash_key(key), created=dt.datetime.now(dt.UTC).replace(microsecond=0)
            )
            self._write(KeysFile(keys=[*current.keys, record]))
            self._stamp = _UNLOADED
        return record, key

    def remove(self, name: str) -> None:
        with self._lock:
            current = self._load_file()
            kept = [r for r in current.keys if r.name != name]
            if len(kept) == len(current.keys):
                raise KeyStoreError(f"no key named {name!r} in {self.path}")
            self._write(KeysFile(keys=kept))
            self._stamp = _UNLOADED

    def _write(self, content: KeysFile) -> None:
        data = content.model_dump(mode="json")
        text = (
            json.dumps(data, indent=2) + "\n" if self.path.suffix == ".json" else yaml.safe_dump(data, sort_keys=False)
        )
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_name(self.path.name + ".tmp")
        # Written beside and renamed, so a reader never sees half a file; 0600 because the file names who may read.
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
        tmp.replace(self.path)


def public(records: Iterable[ApiKeyRecord]) -> list[ApiKeyPublic]:
    return [ApiKeyPublic(**r.model_dump(exclude={"sha256"})) for r in records]
