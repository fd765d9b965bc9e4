"""notify: deliver alert transitions to people, exactly once per (transition, recipient).

In: the ``alert_transitions`` outbox that the alert engine appends to in the same transaction as each decision
(:mod:`pilotwatch.alerting`), the manifest's alert routes (``alerts:`` → roles, channels, escalation) and a
recipients file (per city and role: e-mail addresses, webhooks with their signing secrets, MQTT topics).

Out: e-mails (SMTP with STARTTLS and login), signed JSON webhooks and MQTT messages (a retained per-site topic
and an event topic), plus a durable record of every delivery, attempt, dead letter, silence hold and escalation
in the notifier's own SQLite database.

Guarantees (tested against real receivers, see docs/alerts.md, "Notifications"):

- Every transition after the fan-out cursor becomes one delivery row per (transition, channel, recipient) in the
  same transaction that advances the cursor, so a crash re-reads at most what it had not yet recorded, and the
  UNIQUE key makes re-reading harmless.
- Deliveries are packed into messages in a transaction *before* anything is sent; a message keeps its members and
  its idempotency key across retries and restarts. A crash between a receiver accepting a message and the
  notifier recording it re-sends the identical message with the same key, which the receiver drops: exactly once
  at the receiver, at least once on the wire.
- The engine decides, the notifier delivers: this package never changes an alert. An ACKNOWLEDGED transition
  from a signed acknowledge link is appended by the API (:mod:`pilotwatch.ack_links`), not by this package.
"""
