"""A viewer page as a PNG, rendered by headless Chromium (Debian: `apt-get install chromium`).

Used by the browser test and by bench/screenshot_viewer.py (the README's screenshot). Chromium
runs with a fresh profile folder and everything that would reach the network turned off.
"""

from __future__ import annotations

import shutil
import subprocess
import tempfile
from pathlib import Path

CHROMIUM_NAMES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")


def find_chromium() -> str | None:
    return next((path for path in map(shutil.which, CHROMIUM_NAMES) if path), None)


def screenshot(html: str | Path, png: str | Path, width: int = 1100, height: int = 900, timeout: float = 120) -> Path:
    """Render the local file `html` at width x height CSS pixels into `png` (atomic: the file
    appears only when Chromium wrote it)."""
    chromium = find_chromium()
    if chromium is None:
        raise FileNotFoundError("no Chromium found (apt-get install chromium)")
    png = Path(png)
    png.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="fsgen-chromium-") as profile:
        shot = Path(profile) / "shot.png"
        cmd = [chromium, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
               "--disable-background-networking", "--disable-component-update", "--disable-sync",
               "--hide-scrollbars", f"--user-data-dir={profile}/profile", f"--screenshot={shot}",
               f"--window-size={width},{height}", Path(html).resolve().as_uri()]
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
        if done.returncode != 0 or not shot.is_file():
            raise RuntimeError(f"chromium failed (exit {done.returncode}): {done.stderr.strip()[-500:]}")
        shutil.move(shot, png)
    return png
