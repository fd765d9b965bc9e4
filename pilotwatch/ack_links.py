"""Redeeming a signed acknowledge link: one use, then an ACKNOWLEDGED transition in the engine's outbox.

:func:`redeem_ack_token` is the public function the API's ``/ack-link/{token}`` route calls. In one transaction
of the alert engine's database it records the token id in ``ack_link_uses`` (its primary key makes a second
use fail) and appends an ACKNOWLEDGED :class:`~pilotwatch.alerting.Transition` for the alert, so the use and the
acknowledgement are stored together or not at all. The engine's store owns the alert row and reacts to the
transition like to any other acknowledgement; the notifier sees it in the outbox and stops escalating.
"""

from __future__ import annotations

import enum
import sqlite3
import time
from dataclasses import dataclass

from pilotwatch.alerting import Severity, Transition, TransitionKind, append_transition, create_transitions_table
from pilotwatch.manifest import AlertKind
from pilotwatch.signing import AckClaims, verify_ack_token

ACK_USES_DDL = """
CREATE TABLE IF NOT EXISTS ack_link_uses (
    token_id TEXT PRIMARY KEY,
    alert_id TEXT NOT NULL,
    recipient TEXT NOT NULL,
    used_ms INTEGER NOT NULL,
    transition_id INTEGER NOT NULL
);
"""


class RedeemProblem(enum.StrEnum):
    ALREADY_USED = "already_used"
    UNKNOWN_ALERT = "unknown_alert"


class RedeemError(ValueError):
    def __init__(self, problem: RedeemProblem, detail: str) -> None:
        self.problem = problem
        super().__init__(detail)


@dataclass(frozen=True, slots=True)
class Redeemed:
    claims: AckClaims
    transition_id: int


def connect_alerts_db(path: str) -> sqlite3.Connection:
    """The engine's database in WAL mode with a busy timeout, so a short engine write never fails the request."""
    conn = sqlite3.connect(path, timeout=10.0, isolation_level=None)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA busy_timeout=10000")
    return conn


def redeem_ack_token(conn: sqlite3.Connection, secret: str, token: str, now_s: float | None = None) -> Redeemed:
    """Verify ``token`` (:class:`pilotwatch.signing.AckTokenError` if forged, malformed or expired) and acknowledge.

    ``conn`` is in autocommit mode (``isolation_level=None``); this opens and ends its own transaction.
    """
    now = time.time() if now_s is None else now_s
    claims = verify_ack_token(secret, token, now)
    create_transitions_table(conn)
    conn.executescript(ACK_USES_DDL)
    conn.execute("BEGIN IMMEDIATE")
    try:
        last = conn.execute(
            "SELECT kind, city, site, device, severity FROM alert_transitions WHERE alert_id = ? ORDER BY id DESC"
            " LIMIT 1",
            (claims.alert_id,),
        ).fetchone()
        if last is None:
            raise RedeemError(RedeemProblem.UNKNOWN_ALERT, f"no alert {claims.alert_id!r}")
        used = conn.execute("SELECT used_ms FROM ack_link_uses WHERE token_id = ?", (claims.token_id,)).fetchone()
        if used is not None:
            raise RedeemError(RedeemProblem.ALREADY_USED, "this acknowledge link has been used already")
        transition_id = append_transition(
            conn,
            Transition(
                alert_id=claims.alert_id,
                transition=TransitionKind.ACKNOWLEDGED,
                kind=AlertKind(last[0]),
                city=str(last[1]),
                site=str(last[2]),
                device=str(last[3]),
                severity=Severity(last[4]),
                t_ms=int(now * 1000),
                body={"by": claims.recipient, "via": "ack_link"},
            ),
        )
        conn.execute(
            "INSERT INTO ack_link_uses (token_id, alert_id, recipient, used_ms, transition_id) VALUES (?, ?, ?, ?, ?)",
            (claims.token_id, claims.alert_id, claims.recipient, int(now * 1000), transition_id),
        )
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    conn.execute("COMMIT")
    return Redeemed(claims, transition_id)
