"""The page in a real browser: headless system Chromium driven by Selenium.

Type a query, see result cards with their thumbnails, click the first, and check that the
``<video>`` loads the file (through HTTP ranges) and stands at the hit's moment start. A screenshot
is saved in the test's tmp folder and in ``artifacts/`` (or ``$VTR_QDRANT_ARTIFACTS``).
``make test`` installs Chromium first when it can (tests/serve/install_chromium.sh); without it
the test is skipped and says why.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest
from served_world import ServedWorld, edge_app, live_server, served  # noqa: F401

ROOT = Path(__file__).resolve().parents[2]


def _browser() -> tuple[str, str]:
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    driver = shutil.which("chromedriver")
    if not chromium or not driver:
        pytest.skip("the system chromium and chromedriver are not installed (tests/serve/install_chromium.sh installs them as root)")
    pytest.importorskip("selenium")
    return chromium, driver


@pytest.mark.timeout(120)
def test_search_click_and_play_from_the_moment(served: ServedWorld, tmp_path: Path) -> None:
    chromium, driver_path = _browser()
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys
    from selenium.webdriver.support.ui import WebDriverWait

    opts = webdriver.ChromeOptions()
    opts.binary_location = chromium
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu", "--window-size=1280,1400",
                "--mute-audio", "--no-first-run", f"--user-data-dir={tmp_path / 'profile'}"):
        opts.add_argument(arg)
    # a scene after the first (its moment starts well after 0) that only one video shows
    video, query = next((v, sc.caption) for v in served.world.videos for sc in v.scenes[1:]
                        if sum(sc.key in {o.key for o in w.scenes} for w in served.world.videos) == 1)
    with live_server(edge_app(served)) as url:
        browser = webdriver.Chrome(service=Service(executable_path=driver_path), options=opts)
        try:
            browser.set_page_load_timeout(30)
            wait = WebDriverWait(browser, 30)
            browser.get(url + "/")
            wait.until(lambda b: "videos" in b.find_element(By.ID, "collection").text)
            box = browser.find_element(By.ID, "q")
            box.send_keys(query, Keys.ENTER)
            wait.until(lambda b: len(b.find_elements(By.CSS_SELECTOR, ".card")) > 0)
            first = browser.find_elements(By.CSS_SELECTOR, ".card")[0]
            vid, start = first.get_attribute("data-video-id"), float(first.get_attribute("data-start") or "nan")
            assert vid == video.video_id and start > 0.5, (vid, start, query)
            thumb = first.find_element(By.TAG_NAME, "img")
            wait.until(lambda b: b.execute_script("return arguments[0].complete && arguments[0].naturalWidth > 0", thumb))
            assert "/thumbnail?t=" in (thumb.get_attribute("src") or "")
            assert f"{start:.1f} s" in first.text and "score" in first.text
            first.click()
            wait.until(lambda b: b.execute_script("const v = document.getElementById('player'); return v.dataset.ready === 'yes' && v.readyState >= 1"))
            state = browser.execute_script(
                "const v = document.getElementById('player'); return {t: v.currentTime, d: v.duration, err: v.error && v.error.code,"
                " src: v.currentSrc, mark: document.getElementById('moment-mark').style.left}")
            assert state["err"] is None and state["src"].endswith(f"/videos/{vid}/media")
            assert abs(state["t"] - start) <= 0.5, state
            assert state["d"] == pytest.approx(video.duration, abs=0.2)
            assert float(state["mark"].rstrip("%")) == pytest.approx(100 * start / state["d"], abs=1.0)
            shot = tmp_path / "serve-page.png"
            assert browser.save_screenshot(str(shot)) and shot.stat().st_size > 10_000
            artifacts = Path(os.environ.get("VTR_QDRANT_ARTIFACTS", ROOT / "artifacts"))
            artifacts.mkdir(parents=True, exist_ok=True)
            shutil.copy(shot, artifacts / "serve-page.png")
        finally:
            browser.quit()
