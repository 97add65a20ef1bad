#!/usr/bin/env python3
"""Opens a report.html from disk in headless Chromium and reports what a user would see.

    python3 scripts/check-report-html.py REPORT_HTML SCREENSHOT_PNG [--chromium PATH]

Drives the browser through the DevTools protocol over a pipe (--remote-debugging-pipe:
commands on fd 3, answers on fd 4, each a JSON text ended by a NUL byte), so it needs
nothing but the standard library. It loads the page, records console errors, uncaught
exceptions and every network request the page makes, reads the first column of the
summary table, clicks that column's header with a real mouse event (Input.dispatchMouseEvent
at the header's position), reads the column again, and saves a screenshot. Prints one JSON
object: {"errors": [...], "requests": [...], "before": [...], "after": [...],
"aria_sort": ..., "title": ...}; exit 0 when the page loaded, whatever it found.
"""
import argparse
import base64
import json
import os
import pathlib
import shutil
import subprocess
import sys
import tempfile
import time

p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
p.add_argument("html")
p.add_argument("screenshot")
p.add_argument("--chromium", default=shutil.which("chromium") or shutil.which("chromium-browser") or "chromium")
p.add_argument("--timeout", type=float, default=60.0)
a = p.parse_args()

to_child_r, to_child_w = os.pipe()
from_child_r, from_child_w = os.pipe()


def wire_fds():
    # The child reads commands on fd 3 and writes answers on fd 4.
    r, w = os.dup(to_child_r), os.dup(from_child_w)
    os.dup2(r, 3)
    os.dup2(w, 4)


profile = tempfile.mkdtemp(prefix="kvbench-chromium-")
browser = subprocess.Popen(
    [a.chromium, "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
     "--disable-background-networking", "--disable-extensions", "--remote-debugging-pipe",
     f"--user-data-dir={profile}", "--window-size=1280,1600", "about:blank"],
    stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    preexec_fn=wire_fds, close_fds=False,
)
os.close(to_child_r)
os.close(from_child_w)
deadline = time.monotonic() + a.timeout
buf = b""
next_id = 0
events = []


def read_message():
    global buf
    while b"\0" not in buf:
        if time.monotonic() > deadline:
            raise TimeoutError("the browser did not answer in time")
        chunk = os.read(from_child_r, 1 << 16)
        if not chunk:
            raise EOFError("the browser closed its pipe")
        buf += chunk
    msg, buf = buf.split(b"\0", 1)
    return json.loads(msg)


def send(method, params=None, session=None):
    global next_id
    next_id += 1
    msg = {"id": next_id, "method": method, "params": params or {}}
    if session:
        msg["sessionId"] = session
    os.write(to_child_w, json.dumps(msg).encode() + b"\0")
    while True:
        m = read_message()
        if m.get("id") == next_id:
            if "error" in m:
                raise RuntimeError(f"{method}: {m['error']}")
            return m.get("result", {})
        events.append(m)


def wait_event(name):
    for i, m in enumerate(events):
        if m.get("method") == name:
            return events.pop(i)
    while True:
        m = read_message()
        if m.get("method") == name:
            return m
        events.append(m)


def evaluate(session, expr):
    r = send("Runtime.evaluate", {"expression": expr, "returnByValue": True}, session)
    return r["result"].get("value")


COLUMN = """(function(){
  var h = Array.prototype.find.call(document.querySelectorAll('h2'), function(x){return x.textContent.trim()==='Summary';});
  var t = h; while (t && t.tagName !== 'TABLE') t = t.nextElementSibling;
  return Array.prototype.map.call(t.tBodies[0].rows, function(r){return r.cells[0].textContent.trim();});
})()"""
HEADER = """(function(){
  var h = Array.prototype.find.call(document.querySelectorAll('h2'), function(x){return x.textContent.trim()==='Summary';});
  var t = h; while (t && t.tagName !== 'TABLE') t = t.nextElementSibling;
  var th = t.tHead.rows[0].cells[0]; th.scrollIntoView({block:'center'});
  var r = th.getBoundingClientRect();
  return {x: r.left + r.width / 2, y: r.top + r.height / 2, sort: th.getAttribute('aria-sort')};
})()"""

out = {}
try:
    target = send("Target.createTarget", {"url": "about:blank"})["targetId"]
    session = send("Target.attachToTarget", {"targetId": target, "flatten": True})["sessionId"]
    for domain in ("Runtime", "Log", "Network", "Page"):
        send(f"{domain}.enable", {}, session)
    url = pathlib.Path(a.html).resolve().as_uri()
    send("Page.navigate", {"url": url}, session)
    wait_event("Page.loadEventFired")
    out["title"] = evaluate(session, "document.title")
    out["before"] = evaluate(session, COLUMN)
    at = evaluate(session, HEADER)
    for kind in ("mousePressed", "mouseReleased"):
        send("Input.dispatchMouseEvent", {"type": kind, "x": at["x"], "y": at["y"],
                                          "button": "left", "clickCount": 1}, session)
    out["after"] = evaluate(session, COLUMN)
    out["aria_sort"] = evaluate(session, HEADER)["sort"]
    send("Runtime.evaluate", {"expression": "window.scrollTo(0,0)"}, session)
    shot = send("Page.captureScreenshot", {"format": "png"}, session)
    pathlib.Path(a.screenshot).write_bytes(base64.b64decode(shot["data"]))
    # Anything still queued, then the collected evidence.
    errors, requests = [], []
    for m in events:
        method, params = m.get("method"), m.get("params", {})
        if method == "Runtime.exceptionThrown":
            errors.append(params["exceptionDetails"].get("text", "exception"))
        elif method == "Runtime.consoleAPICalled" and params.get("type") in ("error", "assert"):
            errors.append(" ".join(str(x.get("value", x.get("description", ""))) for x in params.get("args", [])))
        elif method == "Log.entryAdded" and params["entry"].get("level") == "error":
            errors.append(params["entry"].get("text", ""))
        elif method == "Network.requestWillBeSent":
            requests.append(params["request"]["url"][:200])
    out["errors"] = errors
    out["requests"] = requests
    out["page_url"] = url
    try:
        send("Browser.close")
    except (EOFError, RuntimeError, TimeoutError):
        pass
finally:
    try:
        browser.wait(timeout=10)
    except subprocess.TimeoutExpired:
        browser.kill()
    shutil.rmtree(profile, ignore_errors=True)
print(json.dumps(out))
