"""A real browser session: headless Debian Chromium driven by Selenium against the real server.

Judges items with a click, a key, a reload, another key and a double click, then checks the page's
progress counter and the rows in SQLite; the start page, a Prolific arrival to its completion code, a key
pressed twice, a reload's time on task, and a phone's sticky answer bar. Saves test-artifacts/study-*.png.
Deselect with
`-m "not browser"`; skipped only when Chromium / chromedriver are not installed
(`apt-get install -y chromium chromium-driver`).
"""

from __future__ import annotations

import json
import os
import threading
import time
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
from hyperfit.study.server import link_rows, make_server  # noqa: E402
from study_fixtures import consent_all, tokens  # noqa: E402

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


def serve(study):
    server = make_server(study, "127.0.0.1", 0, threads=4)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    return server, thread, f"http://127.0.0.1:{server.effective_port}"


@pytest.fixture
def browser(tmp_path, monkeypatch, base_url):
    # Depends on base_url so that Chromium quits (closing its keep-alive connections) before the
    # server stops: waitress's loop only ends once no connection is left open.
    driver = chromium(tmp_path, monkeypatch)
    yield driver
    driver.quit()


def chromium(tmp_path, monkeypatch, phone: bool = False):
    monkeypatch.setenv("SE_OFFLINE", "true")  # Selenium Manager must not look for downloads
    options = webdriver.ChromeOptions()
    if phone:  # a touch phone: 390 x 844 CSS pixels, coarse pointer, no hover
        options.add_experimental_option("mobileEmulation", {
            "deviceMetrics": {"width": 390, "height": 844, "pixelRatio": 3.0, "touch": True},
            "userAgent": "Mozilla/5.0 (Linux; Android 14; Pixel 8) AppleWebKit/537.36 (KHTML, like Gecko) "
                         "Chrome/120.0 Mobile Safari/537.36"})
    options.binary_location = CHROMIUM
    # As root and without network: no sandbox, and nothing that phones home.
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 "--disable-dev-shm-usage", "--window-size=1280,900", f"--user-data-dir={tmp_path / 'profile'}"):
        options.add_argument(flag)
    driver = webdriver.Chrome(options=options, service=Service(executable_path=CHROMEDRIVER))
    driver.set_page_load_timeout(20)
    return driver


def wait_for_progress(driver, text: str) -> None:
    # The page is replaced on every judgement: an element read mid-navigation is stale, so retry. Chromium
    # reports some of those reads as a generic inspector error ("Node with given id does not belong to the
    # document", seen in CI) rather than as a stale element, so any WebDriverException is retried; a page
    # that never shows the text still fails with the timeout's message.
    wait = WebDriverWait(driver, 10, ignored_exceptions=(WebDriverException,))
    wait.until(lambda d: text in d.find_element(By.ID, "progress").text, message=f"progress never showed {text!r}")


def press(driver, key: str) -> None:
    ActionChains(driver).send_keys(key).perform()


def wait_ready(driver) -> None:
    """Until the item's input guard (INPUT_GUARD_MS after it appears) is over."""
    wait = WebDriverWait(driver, 10, ignored_exceptions=(WebDriverException,))
    wait.until(lambda d: "waiting" not in d.find_element(By.ID, "judge-form").get_attribute("class"),
               message="the answer buttons never became active")


def stored(study, annotator: str) -> list:
    conn = store.connect(study)
    try:
        return conn.execute("SELECT s.pos, j.choice, j.ms_on_task, j.ms_client FROM judgements j JOIN assignments s "
                            "ON s.annotator = j.annotator AND s.item = j.item WHERE j.annotator = ? "
                            "ORDER BY s.pos", (annotator,)).fetchall()
    finally:
        conn.close()


def test_annotator_judges_with_clicks_keys_and_a_reload(browser, base_url, study):
    browser.get(f"{base_url}/a/{tokens(study)['ann-1']}")
    wait_for_progress(browser, "1 / 10")
    assert browser.find_element(By.ID, "text-a").text.startswith("…")
    wait_ready(browser)
    browser.find_element(By.CSS_SELECTOR, "button[value=left]").click()  # "A better"
    wait_for_progress(browser, "2 / 10")
    wait_ready(browser)
    press(browser, "2")  # B better
    wait_for_progress(browser, "3 / 10")
    browser.refresh()  # resumes at the same item
    wait_for_progress(browser, "3 / 10")
    ARTIFACTS.mkdir(exist_ok=True)
    browser.save_screenshot(str(ARTIFACTS / "study-page.png"))
    wait_ready(browser)
    press(browser, "e")  # equally good
    wait_for_progress(browser, "4 / 10")
    wait_ready(browser)
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


def test_a_key_pressed_twice_answers_only_the_item_on_screen(browser, base_url, study):
    # Before: the second press, 300 ms later, answered the next item with 178 ms on task, unseen.
    browser.get(f"{base_url}/a/{tokens(study)['ann-2']}")
    wait_for_progress(browser, "1 / 10")
    wait_ready(browser)
    press(browser, "1")
    time.sleep(0.3)
    press(browser, "1")
    wait_for_progress(browser, "2 / 10")
    time.sleep(1.2)  # long enough for a second answer to have landed
    assert "2 / 10" in browser.find_element(By.ID, "progress").text
    assert [(r[0], r[1]) for r in stored(study, "ann-2")] == [(0, "left")]


def test_time_on_task_survives_a_reload(browser, base_url, study):
    browser.get(f"{base_url}/a/{tokens(study)['ann-3']}")
    wait_for_progress(browser, "1 / 10")
    time.sleep(1.5)
    browser.refresh()
    wait_for_progress(browser, "1 / 10")
    wait_ready(browser)
    browser.find_element(By.CSS_SELECTOR, "button[value=equal]").click()
    wait_for_progress(browser, "2 / 10")
    (_pos, _choice, ms_on_task, ms_client), = stored(study, "ann-3")
    assert ms_on_task >= 1500 + 700 and ms_client < ms_on_task - 1000  # the page alone saw only the last view


def test_start_page_then_items(browser, base_url, study):
    conn = store.connect(study)
    conn.execute("UPDATE annotators SET consented_at = NULL WHERE id = 'ann-4'")
    conn.close()
    browser.get(f"{base_url}/a/{tokens(study)['ann-4']}")
    assert "what you will do" in browser.find_element(By.ID, "instructions").text.lower()
    browser.find_element(By.CSS_SELECTOR, "#practice button[value=left]").click()
    WebDriverWait(browser, 10, ignored_exceptions=(WebDriverException,)).until(
        lambda d: "Right." in d.find_element(By.ID, "practice-feedback").text)
    browser.find_element(By.ID, "consent").click()
    browser.find_element(By.ID, "start").click()
    wait_for_progress(browser, "1 / 10")
    assert stored(study, "ann-4") == []  # the practice item is never stored


def test_prolific_arrival_to_its_completion_code(tmp_path, monkeypatch, gen_file):
    from study_fixtures import create

    study = create(tmp_path / "prolific", gen_file, "--crowd", "prolific", "--completion-code", "CODE77",
                   "--raters-per-item", "1", "--queue-length", "3", "--attention-checks", "0")
    entry = next(r for r in link_rows(study, "") if r["kind"] == "entry")["link"].split("?")[0]
    server, thread, base = serve(study)
    driver = chromium(tmp_path, monkeypatch)
    try:
        driver.get(f"{base}{entry}?PROLIFIC_PID=60a1b2c3d4&STUDY_ID=st&SESSION_ID=se")
        driver.find_element(By.ID, "consent").click()
        driver.find_element(By.ID, "start").click()
        for n in (1, 2, 3):
            wait_for_progress(driver, f"{n} / 3")
            wait_ready(driver)
            driver.find_element(By.CSS_SELECTOR, "button[value=left]").click()
        code = WebDriverWait(driver, 10, ignored_exceptions=(WebDriverException,)).until(
            lambda d: d.find_element(By.ID, "completion-code"))
        assert code.text == "CODE77"
        assert "cc=CODE77" in driver.find_element(By.ID, "completion-link").get_attribute("href")
    finally:
        driver.quit()
        server.close()
        thread.join(timeout=10)


def test_phone_layout_has_a_sticky_answer_bar_and_no_key_hints(tmp_path, monkeypatch):
    from study_fixtures import create, make_run, write_jsonl

    gen = make_run(tmp_path, n=4)
    rows = [json.loads(line) for line in gen.read_text().splitlines()]
    long = " ".join(["The little fox ran over the quiet hill and found a river."] * 10) + " "
    write_jsonl(gen, [{**r, "continuation": long} for r in rows])
    contexts = gen.parent.parent / "data" / "contexts.jsonl"
    write_jsonl(contexts, [{**json.loads(line), "reference": long.replace("fox", "cat")}
                           for line in contexts.read_text().splitlines()])
    study = consent_all(create(tmp_path / "phone", gen, "--annotators", "1", "--attention-checks", "0"))
    server, thread, base = serve(study)
    driver = chromium(tmp_path, monkeypatch, phone=True)
    try:
        driver.get(f"{base}/a/{tokens(study)['ann-1']}")
        wait_for_progress(driver, "1 / 4")
        wait_ready(driver)
        bar = driver.find_element(By.ID, "judge-form")
        inner = driver.execute_script("return window.innerHeight")
        page = driver.execute_script("return document.documentElement.scrollHeight")
        assert page > 1.5 * inner  # a long pair: without the bar the buttons sat far below
        assert bar.value_of_css_property("position") == "sticky"
        top = driver.execute_script("return arguments[0].getBoundingClientRect().bottom", bar)
        assert top <= inner + 1  # the answer buttons are on screen without scrolling
        assert not driver.find_element(By.CSS_SELECTOR, ".choices kbd").is_displayed()  # no key hints on touch
        ARTIFACTS.mkdir(exist_ok=True)
        driver.save_screenshot(str(ARTIFACTS / "study-phone.png"))
        driver.find_element(By.CSS_SELECTOR, "button[value=right]").click()
        wait_for_progress(driver, "2 / 4")
        assert [(r[0], r[1]) for r in stored(study, "ann-1")] == [(0, "right")]
    finally:
        driver.quit()
        server.close()
        thread.join(timeout=10)


def test_shortcuts_can_be_turned_off_and_focus_is_not_the_selected_style(browser, base_url, study):
    browser.get(f"{base_url}/a/{tokens(study)['ann-1']}")
    wait_for_progress(browser, "1 / 10")
    wait_ready(browser)
    button = browser.find_element(By.CSS_SELECTOR, "button[value=left]")
    browser.execute_script("arguments[0].setAttribute('aria-pressed', 'true')", button)
    selected = button.value_of_css_property("background-color")
    browser.execute_script("arguments[0].removeAttribute('aria-pressed')", button)
    press(browser, "\ue004")  # Tab: keyboard focus lands on a control and shows its ring
    focused = browser.switch_to.active_element
    assert focused.value_of_css_property("outline-style") == "solid"
    if focused.tag_name == "button" and focused.get_attribute("value") == "left":
        assert focused.value_of_css_property("background-color") != selected
    browser.find_element(By.ID, "shortcuts").click()  # off
    browser.find_element(By.TAG_NAME, "h1").click()
    press(browser, "1")
    time.sleep(1.0)
    assert "1 / 10" in browser.find_element(By.ID, "progress").text and stored(study, "ann-1") == []
    browser.refresh()  # the choice is remembered
    wait_for_progress(browser, "1 / 10")
    wait_ready(browser)
    assert not browser.find_element(By.ID, "shortcuts").is_selected()
    press(browser, "1")
    time.sleep(1.0)
    assert stored(study, "ann-1") == []
