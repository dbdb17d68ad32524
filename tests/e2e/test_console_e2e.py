"""The web console (GET /console) in a real browser, headless Chromium driven by selenium, against the local stack.

A user pastes a key, transcribes the shipped sample, sees its words and plays from one, sees the usage chart change,
downloads the CSV, follows a job; a wrong key gets a clear message. Screenshots of each view are written to a
temporary folder, or to docs/ with INFERY_CONSOLE_SCREENSHOTS=docs (how README's screenshots are made).

Chromium runs with a fresh profile and without any of its own network traffic (no component updates, sync,
background networking), so the page and the local stack are all it talks to.
"""

from __future__ import annotations

import base64
import csv
import io
import os
import shutil
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests
from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.common.keys import Keys
from selenium.webdriver.remote.webdriver import WebDriver
from selenium.webdriver.support.ui import WebDriverWait

from tests.support.stack import ROOT, RunningStack

pytestmark = pytest.mark.e2e


SAMPLE = ROOT / "samples" / "meeting.mp3"
# words of samples/meeting.txt that Whisper tiny.en hears in espeak-ng's voice
SAMPLE_WORDS = ("morning", "planning", "meeting", "quarterly", "report", "finance", "friday", "credits")
WAIT_SECONDS = 120
CHROMIUM_FLAGS = (
    "--headless=new",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-default-apps",
    "--mute-audio",
    "--autoplay-policy=no-user-gesture-required",
    "--window-size=1280,1000",
    # a microphone that plays a tone, allowed without asking: the Record button is tested too
    "--use-fake-ui-for-media-stream",
    "--use-fake-device-for-media-stream",
)


def _binary(*names: str) -> str:
    for name in names:
        found = shutil.which(name) or (f"/usr/bin/{name}" if Path(f"/usr/bin/{name}").exists() else None)
        if found:
            return found
    pytest.fail(
        f"{' or '.join(names)} is needed for the browser tests: apt-get install chromium chromium-driver "
        "(make test installs them as root on Debian)"
    )


@pytest.fixture(scope="module")
def screenshots(tmp_path_factory: pytest.TempPathFactory) -> Path:
    wanted = os.environ.get("INFERY_CONSOLE_SCREENSHOTS")
    folder = ROOT / wanted if wanted else tmp_path_factory.mktemp("console-screenshots")
    folder.mkdir(parents=True, exist_ok=True)
    return folder


@pytest.fixture(scope="module")
def downloads(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("console-downloads")


@pytest.fixture(scope="module")
def browser(downloads: Path) -> Iterator[WebDriver]:
    profile = tempfile.mkdtemp(prefix="infery-chromium-")
    options = webdriver.ChromeOptions()
    options.binary_location = _binary("chromium", "chromium-browser")
    for flag in (*CHROMIUM_FLAGS, f"--user-data-dir={profile}"):
        options.add_argument(flag)
    options.add_experimental_option(
        "prefs", {"download.default_directory": str(downloads), "download.prompt_for_download": False}
    )
    # a driver given by path: selenium's own driver manager never runs (it would look for downloads)
    driver = webdriver.Chrome(options=options, service=Service(_binary("chromedriver")))
    driver.execute_cdp_cmd("Browser.setDownloadBehavior", {"behavior": "allow", "downloadPath": str(downloads)})
    try:
        yield driver
    finally:
        driver.quit()
        shutil.rmtree(profile, ignore_errors=True)


@pytest.fixture(scope="module")
def console_url(stack: RunningStack) -> str:
    return stack.base_url.removesuffix("/v1") + "/console"


@pytest.fixture(scope="module")
def console_key(stack: RunningStack) -> tuple[str, str]:
    """A key of its own (the session's stack is shared): its id and the key."""
    return stack.create_key("console-user", 2_000)


def wait_for(driver: WebDriver, condition, message: str, timeout: float = WAIT_SECONDS):
    return WebDriverWait(driver, timeout, poll_frequency=0.2).until(lambda _: condition(), message)


def text_of(driver: WebDriver, element_id: str) -> str:
    return driver.find_element(By.ID, element_id).text


def shoot(driver: WebDriver, folder: Path, name: str) -> Path:
    """The whole page from its top, not just the window."""
    width, height = driver.execute_script(
        "return [document.documentElement.clientWidth, document.documentElement.scrollHeight]"
    )
    shot = driver.execute_cdp_cmd(
        "Page.captureScreenshot",
        {
            "format": "png",
            "captureBeyondViewport": True,
            "clip": {"x": 0, "y": 0, "width": width, "height": min(height, 2400), "scale": 1},
        },
    )
    path = folder / f"{name}.png"
    path.write_bytes(base64.b64decode(shot["data"]))
    return path


def paste_key(driver: WebDriver, key: str) -> None:
    field = driver.find_element(By.ID, "api-key")
    field.clear()
    field.send_keys(key)
    driver.find_element(By.ID, "use-key").click()


def open_tab(driver: WebDriver, name: str) -> None:
    driver.find_element(By.ID, f"tab-{name}").click()
    wait_for(driver, lambda: driver.find_element(By.ID, f"panel-{name}").is_displayed(), f"the {name} tab")


def usage_credits(driver: WebDriver) -> int:
    return int(text_of(driver, "usage-credits").replace(",", ""))


def chart_bars(driver: WebDriver) -> list[dict[str, str]]:
    return driver.execute_script(
        "return Array.from(document.querySelectorAll('#usage-svg rect.bar')).map(bar => ({"
        "date: bar.dataset.date, model: bar.dataset.model, credits: bar.dataset.credits}))"
    )


def transcribe_sample(driver: WebDriver, *, as_job: bool) -> list[str]:
    """Choose the sample, transcribe it as verbose_json with word timings; the words shown."""
    open_tab(driver, "playground")
    driver.find_element(By.ID, "audio-file").send_keys(str(SAMPLE))
    wait_for(driver, lambda: "meeting.mp3" in text_of(driver, "file-info"), "the chosen file is shown")
    job_box = driver.find_element(By.ID, "as-job")
    if job_box.is_selected() != as_job:
        job_box.click()
    driver.find_element(By.ID, "transcribe").click()
    wait_for(
        driver,
        lambda: text_of(driver, "playground-status").startswith(("Done", "The transcription failed")),
        "the transcription to finish",
    )
    assert text_of(driver, "playground-status").startswith("Done"), text_of(driver, "playground-status")
    return [word.text for word in driver.find_elements(By.CSS_SELECTOR, "#segments button.word")]


def test_a_wrong_key_gets_a_clear_message_and_no_console(
    browser: WebDriver, console_url: str, screenshots: Path
) -> None:
    browser.get(console_url)
    assert browser.title == "infery console"
    paste_key(browser, "inf_abc")
    wait_for(browser, lambda: "refused" in text_of(browser, "key-status"), "a refusal")
    message = text_of(browser, "key-status")
    assert "This key was refused" in message and "46 letters and digits" in message, message
    assert "inf_abc" not in message
    assert not browser.find_element(By.ID, "main").is_displayed()
    assert browser.execute_script("return sessionStorage.getItem('infery-console-key')") is None
    shoot(browser, screenshots, "console-wrong-key")

    from infery.domain.keys import generate_api_key

    paste_key(browser, generate_api_key())
    wait_for(browser, lambda: "Incorrect API key" in text_of(browser, "key-status"), "an unknown key refused")


def test_a_user_transcribes_plays_a_word_sees_usage_change_and_downloads_the_csv(
    browser: WebDriver,
    console_url: str,
    console_key: tuple[str, str],
    stack: RunningStack,
    screenshots: Path,
    downloads: Path,
) -> None:
    key_id, api_key = console_key
    browser.get(console_url)
    paste_key(browser, api_key)
    wait_for(browser, lambda: browser.find_element(By.ID, "main").is_displayed(), "the console after the key")
    assert text_of(browser, "key-id") == key_id and text_of(browser, "key-balance") == "2,000"
    assert browser.execute_script("return sessionStorage.getItem('infery-console-key')") == api_key
    assert browser.find_element(By.ID, "api-key").get_attribute("value") == ""  # not left on the page

    open_tab(browser, "usage")
    wait_for(browser, lambda: text_of(browser, "usage-credits") == "0", "the usage of a new key")
    assert chart_bars(browser) == []

    # the playground: the sample, synchronously, with word timings
    words = transcribe_sample(browser, as_job=False)
    heard = " ".join(words).lower()
    assert sum(word in heard for word in SAMPLE_WORDS) >= 6, heard
    assert len(browser.find_elements(By.CSS_SELECTOR, "#segments li")) >= 2
    charged = stack.usage(api_key)["total"]["credits"]
    assert charged >= 4  # 20.5 s of audio
    assert text_of(browser, "key-balance") == f"{2_000 - charged:,}"

    # a word plays the recording from where it was said
    target = next(
        word
        for word in browser.find_elements(By.CSS_SELECTOR, "#segments button.word")
        if "quarterly" in word.text.lower()
    )
    start = float(target.get_attribute("data-start"))
    assert start > 3
    target.click()
    wait_for(
        browser,
        lambda: browser.execute_script("return document.getElementById('player').currentTime") >= start - 0.05,
        "the player to move to the word",
    )
    position = browser.execute_script("return document.getElementById('player').currentTime")
    assert start - 0.05 <= position < start + 5, (start, position)
    assert "current" in target.get_attribute("class")
    shoot(browser, screenshots, "console-playground")

    # usage: the chart, the totals and the recent requests now show the request
    open_tab(browser, "usage")
    wait_for(browser, lambda: usage_credits(browser) == charged, "the usage to show the request")
    bars = chart_bars(browser)
    assert len(bars) == 1 and int(bars[0]["credits"]) == charged and bars[0]["model"], bars
    assert "1" == text_of(browser, "usage-requests")
    recent = browser.find_elements(By.CSS_SELECTOR, "#recent-requests tbody tr")
    assert len(recent) == 1 and "settled" in recent[0].text
    shoot(browser, screenshots, "console-usage")

    # the CSV: the ledger of the period, as GET /v1/usage?format=csv gives it
    browser.find_element(By.ID, "usage-csv").click()
    wait_for(browser, lambda: [path for path in downloads.glob("*.csv")], "the CSV download")
    [download] = downloads.glob("*.csv")
    time.sleep(0.5)  # written in one piece, but give the browser a moment to close it
    rows = list(csv.DictReader(io.StringIO(download.read_text())))
    assert download.name == f"infery-usage-{key_id}-30d.csv"
    assert {row["kind"] for row in rows} >= {"topup", "reserve", "settle"}
    assert sum(int(row["credits"]) for row in rows) == 2_000 - charged
    assert sum(int(row["billed_credits"] or 0) for row in rows if row["kind"] == "settle") == charged

    # the upload flow: the same sample as a job, with both progress bars
    words = transcribe_sample(browser, as_job=True)
    assert sum(word in " ".join(words).lower() for word in SAMPLE_WORDS) >= 6, words
    assert browser.find_element(By.ID, "upload-progress").get_attribute("value") == "100"
    assert browser.find_element(By.ID, "job-progress").get_attribute("value") == "100"
    total_after_job = stack.usage(api_key)["total"]["credits"]
    assert total_after_job > charged

    # jobs: the key's job, finished, with its transcript
    open_tab(browser, "jobs")
    wait_for(browser, lambda: "succeeded" in browser.find_element(By.ID, "jobs-table").text, "the job listed")
    rows = browser.find_elements(By.CSS_SELECTOR, "#jobs-table tbody tr")
    assert len(rows) == 1 and "meeting.mp3" in rows[0].text
    rows[0].find_element(By.TAG_NAME, "button").click()
    wait_for(browser, lambda: browser.find_element(By.ID, "job-result").is_displayed(), "the job's transcript")
    assert "quarterly" in text_of(browser, "job-result-text").lower()
    shoot(browser, screenshots, "console-jobs")

    # the usage chart changes with it
    open_tab(browser, "usage")
    wait_for(browser, lambda: usage_credits(browser) == total_after_job, "the usage after the job")
    assert sum(int(bar["credits"]) for bar in chart_bars(browser)) == total_after_job

    # the key stays for this tab only: a reload keeps it, Forget key removes it
    browser.refresh()
    wait_for(browser, lambda: browser.find_element(By.ID, "main").is_displayed(), "the key kept on reload")
    browser.find_element(By.ID, "forget-key").click()
    assert browser.execute_script("return sessionStorage.getItem('infery-console-key')") is None
    assert not browser.find_element(By.ID, "main").is_displayed()


def test_the_console_is_labelled_and_works_from_the_keyboard(
    browser: WebDriver, console_url: str, console_key: tuple[str, str]
) -> None:
    browser.get(console_url)
    paste_key(browser, console_key[1])
    wait_for(browser, lambda: browser.find_element(By.ID, "main").is_displayed(), "the console")
    unlabelled = browser.execute_script("""
        const named = (element) => element.labels?.length || element.getAttribute('aria-label')
            || element.getAttribute('aria-labelledby') || (element.tagName === 'BUTTON' && element.textContent.trim());
        return Array.from(document.querySelectorAll('input, select, button, progress'))
            .filter((element) => !named(element)).map((element) => element.outerHTML.slice(0, 80));""")
    assert unlabelled == []

    playground = browser.find_element(By.ID, "tab-playground")
    playground.click()
    playground.send_keys(Keys.ARROW_RIGHT)
    focused = browser.switch_to.active_element
    assert focused.get_attribute("id") == "tab-usage" and focused.get_attribute("aria-selected") == "true"
    assert browser.find_element(By.ID, "panel-usage").is_displayed()
    assert not browser.find_element(By.ID, "panel-playground").is_displayed()
    focused.send_keys(Keys.END)
    assert browser.switch_to.active_element.get_attribute("id") == "tab-jobs"
    browser.switch_to.active_element.send_keys(Keys.HOME)
    assert browser.switch_to.active_element.get_attribute("id") == "tab-playground"

    # the page loads nothing from anywhere else, and says so to the browser too
    headers = requests.get(console_url, timeout=30).headers
    assert "default-src 'none'" in headers["Content-Security-Policy"]
    sources = browser.execute_script(
        "return Array.from(document.querySelectorAll('script[src], link[href], img[src]'))"
        ".map((element) => element.src || element.href)"
    )
    assert sources and all(source.startswith(console_url.rsplit("/console", 1)[0]) for source in sources), sources


def test_a_dropped_file_and_a_recording_can_be_transcribed(
    browser: WebDriver, console_url: str, console_key: tuple[str, str]
) -> None:
    browser.get(console_url)
    paste_key(browser, console_key[1])
    wait_for(browser, lambda: browser.find_element(By.ID, "main").is_displayed(), "the console")

    # a file dropped on the drop zone, as a file manager drops it
    browser.execute_script(
        """
        const bytes = Uint8Array.from(atob(arguments[0]), (c) => c.charCodeAt(0));
        const transfer = new DataTransfer();
        transfer.items.add(new File([bytes], "dropped.mp3", {type: "audio/mpeg"}));
        const zone = document.getElementById("drop-zone");
        zone.dispatchEvent(new DragEvent("dragover", {dataTransfer: transfer, bubbles: true, cancelable: true}));
        zone.dispatchEvent(new DragEvent("drop", {dataTransfer: transfer, bubbles: true, cancelable: true}));
        """,
        base64.b64encode(SAMPLE.read_bytes()).decode(),
    )
    wait_for(browser, lambda: "dropped.mp3" in text_of(browser, "file-info"), "the dropped file")
    browser.find_element(By.ID, "format").send_keys("text")  # a plain-text answer: no words to click
    browser.find_element(By.ID, "transcribe").click()
    wait_for(
        browser,
        lambda: text_of(browser, "playground-status").startswith(("Done", "The transcription failed")),
        "the dropped file's transcript",
    )
    assert text_of(browser, "playground-status").startswith("Done"), text_of(browser, "playground-status")
    assert "quarterly" in text_of(browser, "transcript-text").lower()
    assert browser.find_elements(By.CSS_SELECTOR, "#segments button.word") == []

    # the microphone (Chromium's fake one: a tone) recorded for two seconds, then sent as it was recorded
    record = browser.find_element(By.ID, "record")
    record.click()
    wait_for(browser, lambda: record.get_attribute("aria-pressed") == "true", "the recording to start")
    time.sleep(2)
    record.click()
    wait_for(browser, lambda: "recording." in text_of(browser, "file-info"), "the recording as the file")
    browser.find_element(By.ID, "transcribe").click()
    wait_for(
        browser,
        lambda: text_of(browser, "playground-status").startswith(("Done", "The transcription failed")),
        "the recording's transcript",
    )
    assert text_of(browser, "playground-status").startswith("Done"), text_of(browser, "playground-status")
