"""Debian's Chromium under Selenium, with no browser download: /usr/bin/chromium + /usr/bin/chromedriver
(`make test-browser` installs them with apt when missing)."""

from __future__ import annotations

import contextlib
import shutil
import tempfile
import time
from collections.abc import Callable, Iterator

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
         "--disable-component-update", "--disable-sync", "--no-first-run", "--window-size=1400,860")


@contextlib.contextmanager
def chromium() -> Iterator:
    """A headless Chromium session with an empty profile; quit and profile removed afterwards."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    for binary in (CHROMIUM, CHROMEDRIVER):
        if shutil.which(binary) is None:
            raise RuntimeError(f"{binary} not found: run `make test-browser` (installs chromium chromium-driver)")
    profile = tempfile.mkdtemp(prefix="chromium-profile-")
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in (*FLAGS, f"--user-data-dir={profile}"):
        options.add_argument(flag)
    driver = webdriver.Chrome(options=options, service=Service(CHROMEDRIVER))
    try:
        yield driver
    finally:
        driver.quit()
        shutil.rmtree(profile, ignore_errors=True)


def wait_until(condition: Callable[[], object], what: str, timeout: float = 60.0) -> object:
    deadline = time.time() + timeout
    while time.time() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def page_idle(driver) -> bool:
    return driver.execute_script("return document.body.dataset.busy === '0'")


def click_at(driver, x: float, y: float, button: str = "left") -> None:
    """A real pointer click at viewport coordinates (x, y)."""
    from selenium.webdriver.common.actions.action_builder import ActionBuilder
    from selenium.webdriver.common.actions.mouse_button import MouseButton

    actions = ActionBuilder(driver)
    actions.pointer_action.move_to_location(int(round(x)), int(round(y)))
    actions.pointer_action.click(button=MouseButton.RIGHT if button == "right" else MouseButton.LEFT)
    actions.perform()


def drag(driver, start: tuple[float, float], end: tuple[float, float]) -> None:
    """Press at `start`, move to `end` in a few steps, release (viewport coordinates)."""
    from selenium.webdriver.common.actions.action_builder import ActionBuilder

    actions = ActionBuilder(driver)
    actions.pointer_action.move_to_location(int(round(start[0])), int(round(start[1])))
    actions.pointer_action.pointer_down()
    for t in (0.25, 0.5, 0.75, 1.0):
        actions.pointer_action.move_to_location(int(round(start[0] + t * (end[0] - start[0]))),
                                                int(round(start[1] + t * (end[1] - start[1]))))
    actions.pointer_action.pointer_up()
    actions.perform()
