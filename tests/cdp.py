"""A small Chrome DevTools Protocol client: headless Chromium driven over a pipe.

`--remote-debugging-pipe` makes Chromium read commands from fd 3 and write replies and events
to fd 4, as JSON messages each ended by a NUL byte: no debugging port is opened, no websocket
library is needed. One page target, attached in flat mode (commands carry its `sessionId`).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import itertools
import json
import os
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

CHROMIUM = os.environ.get("CHROMIUM", "/usr/bin/chromium")
FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
    "--hide-scrollbars",
    "--remote-debugging-pipe",
)
INSTALL_HINT = (
    "Headless Chromium is needed for the browser tests (operator dashboard, rider app) and was "
    "not found at "
    f"{CHROMIUM}. Install it with: apt-get update && apt-get install -y chromium "
    "(Debian/Ubuntu; or set CHROMIUM=/path/to/chromium)."
)


class CDPError(RuntimeError):
    pass


def chromium_path() -> str | None:
    if os.access(CHROMIUM, os.X_OK):
        return CHROMIUM
    return shutil.which("chromium")


class Browser:
    def __init__(
        self, process: asyncio.subprocess.Process, reader: asyncio.StreamReader, out_fd: int
    ) -> None:
        self.process = process
        self.reader = reader
        self.out_fd = out_fd
        self.session_id: str | None = None
        self.transport: asyncio.ReadTransport | None = None
        self._ids = itertools.count(1)
        self._pending: dict[int, asyncio.Future[dict[str, Any]]] = {}
        self._listeners: list[Callable[[str, dict[str, Any]], None]] = []
        self._pump = asyncio.create_task(self._read_messages())
        self.problems: list[str] = []  # uncaught exceptions, console errors, CSP violations

    @classmethod
    async def launch(
        cls, binary: str, user_data_dir: Path, log_path: Path, *, width: int, height: int
    ) -> Browser:
        to_chrome_r, to_chrome_w = os.pipe()
        from_chrome_r, from_chrome_w = os.pipe()

        def child_fds() -> None:  # Chromium's DevTools pipe is fd 3 (in) and fd 4 (out)
            os.dup2(to_chrome_r, 3)
            os.dup2(from_chrome_w, 4)

        with log_path.open("ab") as log:
            process = await asyncio.create_subprocess_exec(
                binary,
                *FLAGS,
                f"--user-data-dir={user_data_dir}",
                f"--window-size={width},{height}",
                "about:blank",
                stdin=asyncio.subprocess.DEVNULL,
                stdout=log,
                stderr=log,
                close_fds=False,  # Python's own descriptors are close-on-exec (PEP 446)
                preexec_fn=child_fds,
            )
        os.close(to_chrome_r)
        os.close(from_chrome_w)
        loop = asyncio.get_running_loop()
        reader = asyncio.StreamReader(limit=64 * 1024 * 1024)
        transport, _ = await loop.connect_read_pipe(
            lambda: asyncio.StreamReaderProtocol(reader),
            os.fdopen(from_chrome_r, "rb", buffering=0),
        )
        browser = cls(process, reader, to_chrome_w)
        browser.transport = transport
        target = await browser.send("Target.createTarget", {"url": "about:blank"}, page=False)
        attached = await browser.send(
            "Target.attachToTarget", {"targetId": target["targetId"], "flatten": True}, page=False
        )
        browser.session_id = attached["sessionId"]
        for domain in ("Page", "Runtime", "Log"):
            await browser.send(f"{domain}.enable")
        await browser.send(
            "Emulation.setDeviceMetricsOverride",
            {"width": width, "height": height, "deviceScaleFactor": 1, "mobile": False},
        )
        browser._listeners.append(browser._collect_problems)
        return browser

    async def _read_messages(self) -> None:
        while True:
            try:
                raw = await self.reader.readuntil(b"\0")
            except (asyncio.IncompleteReadError, asyncio.LimitOverrunError):
                for future in self._pending.values():
                    if not future.done():
                        future.set_exception(CDPError("Chromium closed the DevTools pipe"))
                return
            message = json.loads(raw[:-1])
            if "id" in message and message["id"] in self._pending:
                future = self._pending.pop(message["id"])
                if "error" in message:
                    future.set_exception(CDPError(json.dumps(message["error"])))
                else:
                    future.set_result(message.get("result", {}))
            elif "method" in message:
                for listener in list(self._listeners):
                    listener(message["method"], message.get("params", {}))

    def listen(self, listener: Callable[[str, dict[str, Any]], None]) -> Callable[[], None]:
        """Call `listener(method, params)` for every DevTools event; answers how to stop."""
        self._listeners.append(listener)
        return lambda: self._listeners.remove(listener)

    def _collect_problems(self, method: str, params: dict[str, Any]) -> None:
        if method == "Runtime.exceptionThrown":
            details = params.get("exceptionDetails", {})
            thrown = details.get("exception", {}).get("description") or details.get("text")
            self.problems.append(f"exception: {thrown}")
        elif method == "Runtime.consoleAPICalled" and params.get("type") == "error":
            self.problems.append(
                f"console.error: {[a.get('value') for a in params.get('args', [])]}"
            )
        elif method == "Log.entryAdded" and params.get("entry", {}).get("level") == "error":
            self.problems.append(f"log: {params['entry'].get('text')}")

    async def send(
        self, method: str, params: dict[str, Any] | None = None, *, page: bool = True
    ) -> dict[str, Any]:
        message: dict[str, Any] = {"id": next(self._ids), "method": method, "params": params or {}}
        if page and self.session_id:
            message["sessionId"] = self.session_id
        future: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self._pending[message["id"]] = future
        os.write(self.out_fd, json.dumps(message).encode() + b"\0")
        return await asyncio.wait_for(future, 30)

    async def navigate(self, url: str) -> None:
        loaded = asyncio.get_running_loop().create_future()

        def on_event(method: str, _: dict[str, Any]) -> None:
            if method == "Page.loadEventFired" and not loaded.done():
                loaded.set_result(None)

        self._listeners.append(on_event)
        try:
            await self.send("Page.navigate", {"url": url})
            await asyncio.wait_for(loaded, 30)
        finally:
            self._listeners.remove(on_event)

    async def evaluate(self, expression: str) -> Any:
        reply = await self.send(
            "Runtime.evaluate",
            {"expression": expression, "awaitPromise": True, "returnByValue": True},
        )
        if "exceptionDetails" in reply:
            raise CDPError(f"{expression!r} failed: {reply['exceptionDetails'].get('text')}")
        return reply.get("result", {}).get("value")

    async def wait_for(self, expression: str, timeout_s: float = 30.0, what: str = "") -> Any:
        """Poll a page expression until it is truthy; its value."""
        deadline = asyncio.get_running_loop().time() + timeout_s
        value: Any = None
        while asyncio.get_running_loop().time() < deadline:
            value = await self.evaluate(expression)
            if value:
                return value
            await asyncio.sleep(0.05)
        raise AssertionError(
            f"{what or expression} not true within {timeout_s} s (last: {value!r})"
        )

    async def click(self, selector: str) -> None:
        """A real mouse click at the middle of the element."""
        box = await self.evaluate(
            f"(() => {{ const el = document.querySelector({json.dumps(selector)});"
            " if (!el) return null; el.scrollIntoView({block: 'center'});"
            " const r = el.getBoundingClientRect();"
            " return {x: r.x + r.width / 2, y: r.y + r.height / 2}; })()"
        )
        if box is None:
            raise AssertionError(f"nothing matches {selector}")
        for kind in ("mousePressed", "mouseReleased"):
            await self.send(
                "Input.dispatchMouseEvent",
                {"type": kind, "x": box["x"], "y": box["y"], "button": "left", "clickCount": 1},
            )

    async def type_into(self, selector: str, text: str) -> None:
        await self.click(selector)
        await self.send("Input.insertText", {"text": text})

    async def screenshot(self, path: Path, *, full_page: bool = True) -> bytes:
        """The whole page (or only what the screen shows) as PNG, saved to `path` and returned."""
        if not full_page:
            shot = await self.send("Page.captureScreenshot", {"format": "png"})
            png = base64.b64decode(shot["data"])
            await asyncio.to_thread(path.write_bytes, png)
            return png
        await self.evaluate("window.scrollTo(0, 0)")
        metrics = await self.send("Page.getLayoutMetrics")
        size = metrics["cssContentSize"]
        shot = await self.send(
            "Page.captureScreenshot",
            {
                "format": "png",
                "captureBeyondViewport": True,
                "clip": {
                    "x": 0,
                    "y": 0,
                    "width": size["width"],
                    "height": size["height"],
                    "scale": 1,
                },
            },
        )
        png = base64.b64decode(shot["data"])
        await asyncio.to_thread(path.write_bytes, png)
        return png

    async def close(self) -> None:
        with contextlib.suppress(CDPError, TimeoutError, OSError):
            await asyncio.wait_for(self.send("Browser.close", page=False), 5)
        try:
            await asyncio.wait_for(self.process.wait(), 5)
        except TimeoutError:
            self.process.kill()
            await self.process.wait()
        self._pump.cancel()
        if self.transport is not None:
            self.transport.close()
        with contextlib.suppress(OSError):
            os.close(self.out_fd)
