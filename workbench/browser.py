"""Headless Chromium driven over its DevTools protocol: read the built review as a person would.

    python -m workbench.browser install   # make sure Debian's chromium is there (apt-get as root)
    python -m workbench.browser pdf       # print build/site/review.html to build/review.pdf

The client is deliberately small: one WebSocket to the browser (``websocket-client``), one page
attached in flat mode, synchronous commands, events kept for inspection. Every wait has a timeout;
the browser runs with a fresh profile and is stopped by whoever started it (a context manager).
Network requests other than file:, data: and blob: are blocked and recorded, so a page that needs
the network to show itself is caught.
"""
from __future__ import annotations

import argparse
import base64
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import List, Optional

ROOT = Path(__file__).resolve().parent.parent
BUILD = ROOT / "build"
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--disable-extensions", "--mute-audio", "--hide-scrollbars"]
LOCAL_SCHEMES = ("file:", "data:", "blob:", "about:", "chrome-error:")


class BrowserError(Exception):
    pass


def find_chromium() -> Optional[str]:
    for name in (os.environ.get("CHROMIUM"), "chromium", "chromium-browser", "google-chrome"):
        if name and shutil.which(name):
            return shutil.which(name)
    return None


def install() -> str:
    """Find Chromium, or install Debian's package when this process may (root with apt-get)."""
    found = find_chromium()
    if found:
        return found
    if os.geteuid() != 0 or not shutil.which("apt-get"):
        raise BrowserError("Chromium is not installed and this user cannot install it "
                           "(needs root and apt-get): `apt-get install -y chromium`")
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    install_cmd = ["apt-get", "install", "-y", "-q", "--no-install-recommends", "chromium"]
    if subprocess.run(install_cmd, env=env, timeout=900).returncode != 0:
        subprocess.run(["apt-get", "update", "-q"], env=env, timeout=600)
        subprocess.run(install_cmd, env=env, timeout=900, check=False)
    found = find_chromium()
    if not found:
        raise BrowserError("`apt-get install -y chromium` did not provide a chromium binary")
    return found


class Browser:
    """A running headless Chromium with one attached page; use as a context manager."""

    def __init__(self, executable: Optional[str] = None, width: int = 1280, height: int = 900,
                 timeout: float = 30.0):
        self.executable = executable or find_chromium()
        if not self.executable:
            raise BrowserError("Chromium not found (apt-get install chromium, or set CHROMIUM)")
        self.size, self.timeout = (width, height), timeout
        self.events: List[dict] = []
        self._id = 0

    # -- lifecycle ---------------------------------------------------------------------------
    def __enter__(self) -> "Browser":
        import websocket

        self._profile = tempfile.mkdtemp(prefix="workbench-chromium-")
        self._proc = subprocess.Popen(
            [self.executable, *FLAGS, f"--user-data-dir={self._profile}", "--remote-debugging-port=0",
             f"--window-size={self.size[0]},{self.size[1]}", "about:blank"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            port_file = Path(self._profile) / "DevToolsActivePort"
            deadline = time.monotonic() + self.timeout
            while not (port_file.is_file() and len(port_file.read_text().splitlines()) >= 2):
                if self._proc.poll() is not None or time.monotonic() > deadline:
                    raise BrowserError("Chromium did not open its DevTools port "
                                       f"(exit code {self._proc.poll()})")
                time.sleep(0.05)
            port, path = port_file.read_text().splitlines()[:2]
            self._ws = websocket.create_connection(f"ws://127.0.0.1:{port}{path}", timeout=self.timeout,
                                                   suppress_origin=True)
            target = self._call("Target.createTarget", {"url": "about:blank"})["targetId"]
            self._session = self._call("Target.attachToTarget", {"targetId": target, "flatten": True})["sessionId"]
            for domain in ("Page", "Runtime", "Network", "Log"):
                self.call(f"{domain}.enable")
            self.call("Network.setBlockedURLs", {"urls": ["http://*", "https://*", "ws://*", "wss://*"]})
            self.call("Emulation.setDeviceMetricsOverride", {"width": self.size[0], "height": self.size[1],
                                                             "deviceScaleFactor": 1, "mobile": False})
        except BaseException:
            self.__exit__(None, None, None)
            raise
        return self

    def __exit__(self, *exc) -> None:
        ws = getattr(self, "_ws", None)
        if ws is not None:
            try:
                ws.close()
            except Exception:
                pass
        proc = getattr(self, "_proc", None)
        if proc is not None and proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=10)
        shutil.rmtree(getattr(self, "_profile", ""), ignore_errors=True)

    # -- protocol ----------------------------------------------------------------------------
    def _call(self, method: str, params: Optional[dict] = None, session: Optional[str] = None,
              timeout: Optional[float] = None) -> dict:
        self._id += 1
        msg = {"id": self._id, "method": method, "params": params or {}}
        if session:
            msg["sessionId"] = session
        self._ws.send(json.dumps(msg))
        deadline = time.monotonic() + (timeout or self.timeout)
        while True:
            reply = self._receive(deadline, method)
            if reply.get("id") == self._id:
                if "error" in reply:
                    raise BrowserError(f"{method}: {reply['error']}")
                return reply.get("result", {})
            self.events.append(reply)

    def _receive(self, deadline: float, waiting_for: str) -> dict:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise BrowserError(f"timed out waiting for {waiting_for}")
        self._ws.settimeout(remaining)
        try:
            return json.loads(self._ws.recv())
        except Exception as exc:  # socket timeout or closed browser
            raise BrowserError(f"no answer while waiting for {waiting_for}: {exc}") from exc

    def call(self, method: str, params: Optional[dict] = None, timeout: Optional[float] = None) -> dict:
        return self._call(method, params, self._session, timeout)

    def wait_event(self, method: str, since: int, timeout: Optional[float] = None) -> dict:
        deadline = time.monotonic() + (timeout or self.timeout)
        seen = since
        while True:
            for event in self.events[seen:]:
                if event.get("method") == method:
                    return event
            seen = len(self.events)
            self.events.append(self._receive(deadline, method))

    # -- what a reader does ------------------------------------------------------------------
    def open(self, url: str) -> None:
        mark = len(self.events)
        result = self.call("Page.navigate", {"url": url})
        if result.get("errorText"):
            raise BrowserError(f"cannot open {url}: {result['errorText']}")
        self.wait_event("Page.loadEventFired", mark)

    def evaluate(self, expression: str):
        result = self.call("Runtime.evaluate", {"expression": expression, "returnByValue": True,
                                                "awaitPromise": True})
        if "exceptionDetails" in result:
            raise BrowserError(f"script failed: {result['exceptionDetails'].get('text')}: {expression[:80]}")
        return result["result"].get("value")

    def screenshot(self, path: Path, full_page: bool = True, max_height: int = 6000) -> Path:
        params: dict = {"format": "png"}
        if full_page:
            height = min(int(self.evaluate("document.documentElement.scrollHeight")), max_height)
            params.update(captureBeyondViewport=True,
                          clip={"x": 0, "y": 0, "width": self.size[0], "height": height, "scale": 1})
        data = self.call("Page.captureScreenshot", params)["data"]
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(base64.b64decode(data))
        return path

    def pdf(self, path: Path) -> Path:
        data = self.call("Page.printToPDF", {"printBackground": True, "preferCSSPageSize": False,
                                             "paperWidth": 8.27, "paperHeight": 11.69,
                                             "marginTop": 0.5, "marginBottom": 0.5,
                                             "marginLeft": 0.5, "marginRight": 0.5}, timeout=180)["data"]
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(base64.b64decode(data))
        return path

    def remote_requests(self) -> List[str]:
        """URLs the pages tried to fetch from the network (all blocked)."""
        return [e["params"]["request"]["url"] for e in self.events
                if e.get("method") == "Network.requestWillBeSent"
                and not e["params"]["request"]["url"].startswith(LOCAL_SCHEMES)]

    def script_errors(self) -> List[str]:
        return [e["params"]["exceptionDetails"].get("text", "") for e in self.events
                if e.get("method") == "Runtime.exceptionThrown"]


def export_pdf(site: Path = BUILD / "site", out: Path = BUILD / "review.pdf") -> Path:
    """The whole review as one PDF, printed by the same browser from the single-page document."""
    page = site / "review.html"
    if not page.is_file():
        raise BrowserError(f"{page} does not exist: build the site first (python -m workbench.build --only site)")
    with Browser() as b:
        b.open(page.resolve().as_uri())
        b.evaluate("document.fonts.ready.then(() => true)")
        return b.pdf(out)


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m workbench.browser", description=__doc__.splitlines()[0])
    parser.add_argument("action", choices=("install", "pdf"))
    ns = parser.parse_args(argv)
    try:
        if ns.action == "install":
            print(f"chromium: {install()}")
        else:
            print(f"review PDF: {export_pdf()}")
    except BrowserError as exc:
        print("=" * 78, f"\nBROWSER NOT AVAILABLE: {exc}\n" + "=" * 78, file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
