"""A real browser session: headless Debian Chromium driven by Selenium against the real server.

Judges items with a click, a key, a reload, another key and a double click, then checks the page's
progress counter and the rows in SQLite. Saves test-artifacts/study-page.png. Deselect with
`-m "not browser"`; skipped only when Chromium / chromedriver are not installed
(`apt-get install -y chromium chromium-driver`).
"""

from __future__ import annotations

import os
import threading
from pathlib import Path

import pytest

CHROMIUM, CHROMEDRIVER = "/usr/bin/chromium", "/usr/bin/chromedriver"
if not (os.path.exists(CHROMIUM) and os.path.exists(CHROMEDRIVER)):
    pytest.skip(f"{CHROMIUM} or {CHROMEDRIVER} missing: apt-get install -y chromium chromium-driver",
                allow_module_level=True)

from selenium import webdriver  # noqa: E402  (only once Chromium is known to exist)
from selenium.common.exceptions import WebDriverException  # noqa: E402
from selenium.webdriver.chrome.service import Service  # noqa: E402
from selenium.webdriver.common.action_chains import ActionChains  # noqa: E402
from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.support.ui import WebDriverWait  # noqa: E402

from hyperfit.study import store  # noqa: E402
from hyperfit.study.server import make_server  # noqa: E402
from study_fixtures import tokens  # noqa: E402

pytestmark = pytest.mark.browser
ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts"


@pytest.fixture
def base_url(study):
    server = make_server(study, "127.0.0.1", 0, threads=4)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.effective_port}"
    server.close()
    thread.join(timeout=10)


@pytest.fixture
def browser(tmp_path, monkeypatch, base_url):
    # Depends on base_url so that Chromium quits (closing its keep-alive connections) before the
    # server stops: waitress's loop only ends once no connection is left open.
    monkeypatch.setenv("SE_OFFLINE", "true")  # Selenium Manager must not look for downloads
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    # As root and without network: no sandbox, and nothing that phones home.
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 "--disable-dev-shm-usage", "--window-size=1280,900", f"--user-data-dir={tmp_path / 'profile'}"):
        options.add_argument(flag)
    driver = webdriver.Chrome(options=options, service=Service(executable_path=CHROMEDRIVER))
    driver.set_page_load_timeout(20)
    yield driver
    driver.quit()


def wait_for_progress(driver, text: str) -> None:
    # The page is replaced on every judgement: an element read mid-navigation is stale, so retry. Chromium
    # reports some of those reads as a generic inspector error ("Node with given id does not belong to the
    # document", seen in CI) rather than as a stale element, so any WebDriverException is retried; a page
    # that never shows the text still fails with the timeout's message.
    wait = WebDriverWait(driver, 10, ignored_exceptions=(WebDriverException,))
    wait.until(lambda d: text in d.find_element(By.ID, "progress").text, message=f"progress never showed {text!r}")


def press(driver, key: str) -> None:
    ActionChains(driver).send_keys(key).perform()


def test_annotator_judges_with_clicks_keys_and_a_reload(browser, base_url, study):
    browser.get(f"{base_url}/a/{tokens(study)['ann-1']}")
    wait_for_progress(browser, "1 / 10")
    assert browser.find_element(By.ID, "text-a").text.startswith("…")
    browser.find_element(By.CSS_SELECTOR, "button[value=left]").click()  # "A better"
    wait_for_progress(browser, "2 / 10")
    press(browser, "2")  # B better
    wait_for_progress(browser, "3 / 10")
    browser.refresh()  # resumes at the same item
    wait_for_progress(browser, "3 / 10")
    ARTIFACTS.mkdir(exist_ok=True)
    browser.save_screenshot(str(ARTIFACTS / "study-page.png"))
    press(browser, "e")  # equally good
    wait_for_progress(browser, "4 / 10")
    ActionChains(browser).double_click(browser.find_element(By.CSS_SELECTOR, "button[value=right]")).perform()
    wait_for_progress(browser, "5 / 10")

    conn = store.connect(study)
    rows = conn.execute("SELECT s.pos, j.choice, j.ms_on_task FROM judgements j JOIN assignments s "
                        "ON s.annotator = j.annotator AND s.item = j.item WHERE j.annotator = 'ann-1' "
                        "ORDER BY s.pos").fetchall()
    conn.close()
    assert [(r[0], r[1]) for r in rows] == [(0, "left"), (1, "right"), (2, "equal"), (3, "right")]
    assert all(r[2] is not None and r[2] > 0 for r in rows)  # time on task measured in the page
    assert (ARTIFACTS / "study-page.png").stat().st_size > 10_000
