"""The API's interactive documentation works without internet: /docs renders every route in headless Chromium
with each request to anywhere but the API itself refused, and with no console errors."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest
from playwright.sync_api import Route, sync_playwright

from tests.api.conftest import CHROMIUM


def test_the_documentation_page_renders_offline(served: str) -> None:
    if not Path(CHROMIUM).exists():
        pytest.fail(f"{CHROMIUM} is missing: scripts/bootstrap.sh installs Debian's chromium")
    errors: list[str] = []
    outside: list[str] = []

    def only_the_api(route: Route) -> None:
        if route.request.url.startswith(served):
            route.continue_()
        else:
            outside.append(route.request.url)
            route.abort()

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=["--no-sandbox"])
        page = browser.new_page()
        page.route("**/*", only_the_api)
        page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
        page.on("pageerror", lambda e: errors.append(str(e)))
        page.goto(f"{served}/docs")
        page.locator("#operations-alerts-list_alerts_alerts_get").wait_for(timeout=20_000)
        shown = page.locator(".opblock-summary-path").evaluate_all("paths => paths.map(p => p.innerText)")
        browser.close()
        documented = httpx.get(f"{served}/openapi.json", timeout=10).json()["paths"]
    assert outside == []
    assert errors == []
    assert {path.replace("\u200b", "") for path in shown} == set(documented)
