"""The alert inbox page in headless Chromium (Debian's ``chromium``, driven by Playwright) against the API served
by uvicorn: it loads with no console errors, shows an alert the engine raised, and acknowledging it on the page
changes its state in the API."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest
from playwright.sync_api import sync_playwright

from api.settings import ApiSettings
from pilotwatch.alerting import ALERT_STORE_FILE
from pilotwatch.manifest import Manifest
from tests.api.conftest import CHROMIUM, Keys
from tests.api.test_alerts_api import decide_alerts


def test_inbox_shows_the_alert_and_acknowledges_it(
    served: str, settings: ApiSettings, manifest: Manifest, keys: Keys, tmp_path: Path
) -> None:
    if not Path(CHROMIUM).exists():
        pytest.fail(f"{CHROMIUM} is missing: scripts/bootstrap.sh installs Debian's chromium")
    decided = decide_alerts(manifest, settings.alerts_state_dir / ALERT_STORE_FILE)
    target = next(a for a, v in decided.items() if v["kind"] == "pollution" and v["city"] == "melaka")
    errors: list[str] = []
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=["--no-sandbox"])
        page = browser.new_page()
        page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
        page.on("pageerror", lambda e: errors.append(str(e)))
        page.goto(f"{served}/inbox")
        page.fill("#key", keys.staff_site)
        page.click("#login")
        row = page.locator(f'tr[data-alert="{target}"]')
        row.wait_for(timeout=10_000)
        assert "pollution" in row.inner_text()
        # only the caller's scope: Melaka's city-staff key sees no Bangkok alert and no device alert
        shown = page.locator("tr[data-alert]").evaluate_all("rows => rows.map(r => r.innerText)")
        assert shown
        assert not [t for t in shown if "bangkok" in t or "\tdevice\t" in t]
        row.locator('button[data-action="ack"]').click()
        page.locator(f'tr[data-alert="{target}"] td.status').filter(has_text="acknowledged").wait_for(timeout=10_000)
        browser.close()
    assert errors == []
    api = httpx.get(f"{served}/alerts/{target}", headers={"X-API-Key": keys.staff_site}, timeout=10)
    assert api.json()["status"] == "acknowledged"
    assert api.json()["ack_by"] == "staff-morten"
