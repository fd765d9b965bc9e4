"""What a notification says: the versioned JSON document of webhooks and MQTT events, and the e-mail rendering.

Schema ``pilotwatch.notification/1`` (docs/alerts.md, "Notifications", lists every key). Within a major version
keys are only added, never renamed, removed or retyped; a receiver must ignore keys it does not know. One message
carries one or more alerts of one city, alert kind and transition (grouping), or a summary of what the hourly cap
held back, or a test.
"""

from __future__ import annotations

import datetime as dt
import enum
import html
from collections.abc import Mapping, Sequence
from email.message import EmailMessage
from typing import Any, Final

from pilotwatch.alerting import Severity, Transition, TransitionKind
from pilotwatch.manifest import AlertKind

SCHEMA: Final = "pilotwatch.notification/1"
# Keys of a transition's body the message shows, in this order, with their label. Others are passed on as-is.
DETAIL_LABELS: Final = (
    ("parameter", "Parameter"),
    ("value", "Value"),
    ("unit", "Unit"),
    ("limit", "Limit"),
    ("statistic", "Statistic"),
    ("standard", "Standard"),
    ("citation", "Citation"),
    ("qc", "QC status"),
    ("summary", "Summary"),
)


class MessageKind(enum.StrEnum):
    ALERTS = "alerts"
    SUMMARY = "summary"
    TEST = "test"


class Reason(enum.StrEnum):
    """Why a delivery exists: the transition itself, an escalation step, or a reminder of a still-firing alert."""

    TRANSITION = "transition"
    ESCALATION = "escalation"
    REPEAT = "repeat"


def iso(t_ms: int) -> str:
    return dt.datetime.fromtimestamp(t_ms / 1000, dt.UTC).isoformat().replace("+00:00", "Z")


def alert_entry(t: Transition, reason: Reason, step: int, links: Mapping[str, str]) -> dict[str, Any]:
    if t.id is None:
        raise ValueError("a transition needs its outbox id to be sent")
    return {
        "alert_id": t.alert_id,
        "transition_id": t.id,
        "transition": t.transition.value,
        "kind": t.kind.value,
        "city": t.city,
        "site": t.site,
        "device": t.device,
        "severity": t.severity.value,
        "time": iso(t.t_ms),
        "silenced": t.silenced,
        "reason": reason.value,
        "step": step,
        "details": dict(t.body),
        "links": dict(links),
    }


def transition_from_entry(entry: Mapping[str, Any]) -> Transition:
    """The transition an entry was made from (for escalation and repeat messages of a fired alert)."""
    when = dt.datetime.fromisoformat(str(entry["time"]).replace("Z", "+00:00"))
    return Transition(
        id=int(entry["transition_id"]),
        alert_id=str(entry["alert_id"]),
        transition=TransitionKind(entry["transition"]),
        kind=AlertKind(entry["kind"]),
        city=str(entry["city"]),
        site=str(entry["site"]),
        device=str(entry["device"]),
        severity=Severity(entry["severity"]),
        t_ms=round(when.timestamp() * 1000),
        silenced=bool(entry["silenced"]),
        body=dict(entry["details"]),
    )


def message_document(
    *,
    key: str,
    kind: MessageKind,
    channel: str,
    recipient: str,
    created_ms: int,
    alerts: Sequence[Mapping[str, Any]] = (),
    held_back: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    return {
        "schema": SCHEMA,
        "idempotency_key": key,
        "kind": kind.value,
        "created": iso(created_ms),
        "recipient": {"channel": channel, "address": recipient},
        "alerts": [dict(a) for a in alerts],
        "held_back": dict(held_back) if held_back is not None else None,
    }


def subject(doc: Mapping[str, Any]) -> str:
    alerts: list[Mapping[str, Any]] = doc["alerts"]
    if doc["kind"] == MessageKind.TEST:
        return "[pilotwatch] test message"
    if doc["kind"] == MessageKind.SUMMARY:
        return f"[pilotwatch] {doc['held_back']['count']} notifications held back by the hourly limit"
    first = alerts[0]
    what = first["kind"].replace("_", " ")
    escalated = " (escalated: not acknowledged)" if first["reason"] == Reason.ESCALATION else ""
    reminder = " (still firing)" if first["reason"] == Reason.REPEAT else ""
    if len(alerts) == 1:
        place = first["site"] or first["device"] or first["city"]
        return f"[pilotwatch] {first['severity']} {what} alert {first['transition']} at {place}{escalated}{reminder}"
    return f"[pilotwatch] {len(alerts)} {what} alerts {first['transition']} in {first['city']}{escalated}{reminder}"


def _detail_lines(details: Mapping[str, Any]) -> list[tuple[str, str]]:
    known = [(label, str(details[k])) for k, label in DETAIL_LABELS if details.get(k) not in (None, "")]
    labelled = {k for k, _ in DETAIL_LABELS}
    rest = [(k, str(v)) for k, v in sorted(details.items()) if k not in labelled and not isinstance(v, dict | list)]
    return known + rest


def text_body(doc: Mapping[str, Any]) -> str:
    lines = [subject(doc).removeprefix("[pilotwatch] "), ""]
    if doc["held_back"] is not None:
        held = doc["held_back"]
        lines.append(f"{held['count']} notifications were held back since {held['since']}:")
        lines += [f"  {n} × {what}" for what, n in sorted(held["by"].items())]
        lines.append("")
    for a in doc["alerts"]:
        lines.append(f"{a['severity'].upper()} {a['kind']} {a['transition']} - alert {a['alert_id']}")
        lines.append(f"  City: {a['city']}   Site: {a['site'] or '-'}   Device: {a['device'] or '-'}   At: {a['time']}")
        lines += [f"  {label}: {value}" for label, value in _detail_lines(a["details"])]
        for name, url in a["links"].items():
            lines.append(f"  {name.capitalize()}: {url}")
        lines.append("")
    lines.append(f"Message {doc['idempotency_key']}")
    return "\n".join(lines) + "\n"


def html_body(doc: Mapping[str, Any]) -> str:
    e = html.escape
    parts = [f"<h2>{e(subject(doc).removeprefix('[pilotwatch] '))}</h2>"]
    if doc["held_back"] is not None:
        held = doc["held_back"]
        items = "".join(f"<li>{n} × {e(what)}</li>" for what, n in sorted(held["by"].items()))
        parts.append(f"<p>{held['count']} notifications were held back since {e(held['since'])}:</p><ul>{items}</ul>")
    for a in doc["alerts"]:
        rows = [("City", a["city"]), ("Site", a["site"] or "-"), ("Device", a["device"] or "-"), ("At", a["time"])]
        rows += _detail_lines(a["details"])
        table = "".join(f"<tr><th align='left'>{e(k)}</th><td>{e(v)}</td></tr>" for k, v in rows)
        links = " · ".join(f"<a href='{e(url)}'>{e(name.capitalize())}</a>" for name, url in a["links"].items())
        parts.append(
            f"<h3>{e(a['severity'].upper())} {e(a['kind'])} {e(a['transition'])}: {e(a['alert_id'])}</h3>"
            f"<table>{table}</table><p>{links}</p>"
        )
    parts.append(f"<p style='color:#888'>Message {e(doc['idempotency_key'])}</p>")
    return "<html><body>" + "".join(parts) + "</body></html>"


def email_message(doc: Mapping[str, Any], sender: str, to: str) -> EmailMessage:
    msg = EmailMessage()
    msg["From"] = sender
    msg["To"] = to
    msg["Subject"] = subject(doc)
    # The idempotency key as Message-ID: mail systems that see one message twice (a resend after a crash) can
    # recognise it, and tests count distinct Message-IDs at the server.
    msg["Message-ID"] = f"<{doc['idempotency_key']}@pilotwatch>"
    msg["X-Pilotwatch-Idempotency-Key"] = doc["idempotency_key"]
    # Which transitions the message carries, for a mail rule or a ticket system that files alerts by id.
    msg["X-Pilotwatch-Transitions"] = ",".join(str(a.get("transition_id", "")) for a in doc["alerts"])
    msg.set_content(text_body(doc))
    msg.add_alternative(html_body(doc), subtype="html")
    return msg
