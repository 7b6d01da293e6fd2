"""Headless Chromium (Debian's chromium + chromedriver) driven by Selenium: the dashboard's
browser test and `bench.load --web page` open the page with it."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

CHROMIUM, CHROMEDRIVER = shutil.which("chromium"), shutil.which("chromedriver")
# Without the background-networking flags Chromium keeps trying to reach Google's hosts,
# which this machine's closed network refuses, many at a time.
FLAGS = (
    "--headless=new --no-sandbox --disable-gpu --disable-dev-shm-usage --no-first-run "
    "--disable-background-networking --disable-component-update --disable-sync --window-size=1400,1000"
)


def available() -> bool:
    return bool(CHROMIUM and CHROMEDRIVER)


def chromium(profile: Path) -> Any:
    """A browser with a new, empty profile in `profile`; quit() it when done."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM or "/usr/bin/chromium"
    for flag in FLAGS.split():
        options.add_argument(flag)
    options.add_argument(f"--user-data-dir={profile}")
    return webdriver.Chrome(service=Service(CHROMEDRIVER or "/usr/bin/chromedriver"), options=options)
