"""Who gets a transition: the manifest's alert routes joined with the recipients file.

A route (``alerts:`` in the manifest) names a city (or ``*``), an alert kind, roles and channels; the recipients
file gives each (city, role) its addresses per channel. :meth:`Router.addresses` is the whole answer for a
transition, so the test "every recipient of the role and city, and nobody else" tests exactly this function
through the delivered messages.
"""

from __future__ import annotations

from dataclasses import dataclass

from notify.recipients import Address, Recipients
from pilotwatch.manifest import AlertKind, AlertRoute, EscalationStep, Manifest


@dataclass(frozen=True)
class Router:
    manifest: Manifest
    recipients: Recipients

    def routes(self, city: str, kind: AlertKind) -> list[AlertRoute]:
        return [r for r in self.manifest.alerts if r.alert is kind and r.city in ("*", city)]

    def addresses(self, city: str, kind: AlertKind) -> set[Address]:
        out: set[Address] = set()
        for route in self.routes(city, kind):
            out |= self.recipients.addresses(city, list(route.roles), list(route.channels))
        return out

    def escalation_steps(self, city: str, kind: AlertKind) -> list[EscalationStep]:
        """The steps of the first route that has any: two routes escalating one alert would page people twice."""
        for route in self.routes(city, kind):
            if route.escalation:
                return list(route.escalation)
        return []

    def escalation_addresses(self, city: str, kind: AlertKind, step: int) -> set[Address]:
        """Addresses of escalation step ``step`` (1-based); channels default to those of the route."""
        for route in self.routes(city, kind):
            if route.escalation:
                if not 1 <= step <= len(route.escalation):
                    return set()
                s = route.escalation[step - 1]
                channels = list(s.channels) or list(route.channels)
                return self.recipients.addresses(city, list(s.roles), channels)
        return set()
