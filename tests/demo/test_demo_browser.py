"""The demo page in a real browser: Debian's headless Chromium driven by selenium through
Debian's chromedriver (nothing is downloaded). A screenshot is saved, and the page's kill
button takes down the memcached node holding the session while the session carries on."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.support.wait import WebDriverWait

from pymsm.demo import Demo, DemoConfig

pytestmark = pytest.mark.integration

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
ARGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--window-size=1280,900",
)


@pytest.fixture(scope="module")
def browser() -> Iterator[webdriver.Chrome]:
    for path, package in ((CHROMIUM, "chromium"), (CHROMEDRIVER, "chromium-driver")):
        if not Path(path).exists() and shutil.which(Path(path).name) is None:
            pytest.fail(f"{path} is missing: apt-get install -y {package} (.ci/run does this)")
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for arg in ARGS:
        options.add_argument(arg)
    driver = webdriver.Chrome(options=options, service=Service(executable_path=CHROMEDRIVER))
    driver.set_page_load_timeout(20)
    yield driver
    driver.quit()


@pytest.fixture(scope="module")
def demo() -> Iterator[Demo]:
    with Demo(DemoConfig(port=0)) as running:
        yield running


def text(driver: webdriver.Chrome, css: str) -> str:
    return str(driver.find_element(By.CSS_SELECTOR, css).text)


def message_after_click(driver: webdriver.Chrome, button_id: str) -> str:
    """Click a form button and wait for the page its redirect lands on (a loaded machine may
    take a moment; click() returns before the navigation)."""
    driver.find_element(By.ID, button_id).click()
    found = WebDriverWait(driver, 20).until(
        lambda d: d.find_elements(By.CSS_SELECTOR, "#message") or False
    )
    return str(found[0].text)


def test_demo_page_in_chromium_and_its_kill_button(
    browser: webdriver.Chrome, demo: Demo, tmp_path_factory: pytest.TempPathFactory
) -> None:
    browser.get(demo.url + "/")
    first_node = text(browser, "#node")
    sid = text(browser, "#session-id")
    assert first_node in ("app1", "app2") and text(browser, "#count") == "1"
    # round robin sends the next page to the other app; a backend the balancer holds down for a
    # moment (a health check slow on a loaded machine) may skip a turn, so allow a few
    visits = 1
    while visits < 6:
        browser.get(demo.url + "/")
        visits += 1
        assert text(browser, "#session-id") == sid and text(browser, "#count") == str(visits)
        if text(browser, "#node") != first_node:
            break
    assert text(browser, "#node") != first_node, "the balancer never sent the page elsewhere"
    shot = tmp_path_factory.mktemp("demo") / "demo-page.png"
    assert browser.save_screenshot(str(shot)) and shot.stat().st_size > 10_000

    home = text(browser, "#session-id .node")
    assert f"killed memcached {home}" in message_after_click(browser, f"kill-memcached-{home}")
    row = browser.find_element(By.CSS_SELECTOR, f'#cluster tr[data-node="{home}"]')
    assert row.get_attribute("data-up") == "false" and "killed" in row.text
    assert [n["up"] for n in demo.state()["memcached"] if n["name"] == home] == [False]
    browser.get(demo.url + "/")
    assert text(browser, "#count") == str(visits + 2)  # the redirect's page was one visit
    assert text(browser, "#session-id .base") == sid.split("-")[0]
    assert text(browser, "#session-id .node") != home
    assert f"started memcached {home}" in message_after_click(browser, f"start-memcached-{home}")
