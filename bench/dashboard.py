"""The dashboard's page of a 10,000-task workflow, in headless Chromium:
time to first render (from navigation start to the table's rows and the
counts shown, performance.now() in the page) and the live-update lag (from
the workflow's end, as the host reports it, to the page showing every task
completed through its event stream; the browser's and the host's clocks
are the same machine's), medians of several rounds. Prints a table.

Run against a release daemon:
  target/release/gleitzeit serve --listen 127.0.0.1:8000 &
  python3 bench/dashboard.py [TASKS] [ROUNDS]
Environment: GLEITZEIT_SERVER (default http://127.0.0.1:8000),
GLEITZEIT_TOKEN (default the local token).
"""
import json
import os
import statistics
import sys
import time
import urllib.request

from selenium.webdriver.support.ui import WebDriverWait

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "tests", "python"))
from browser import browser, sign_in  # noqa: E402

SERVER = os.environ.get("GLEITZEIT_SERVER", "http://127.0.0.1:8000")
TOKEN = os.environ.get("GLEITZEIT_TOKEN") or open(os.path.expanduser("~/.local/share/gleitzeit/token")).read().strip()
TASKS = int(sys.argv[1]) if len(sys.argv) > 1 else 10_000
ROUNDS = int(sys.argv[2]) if len(sys.argv) > 2 else 5


def submit(tasks):
    # A root that waits, then TASKS - 1 echo tasks after it: the page opens
    # while everything is still pending and watches it all complete.
    workflow = {"name": f"{tasks} tasks", "tasks": [{"id": "root", "protocol": "echo/v1", "method": "delay",
                                                      "params": {"seconds": 2}}] +
                [{"id": f"t{i}", "protocol": "echo/v1", "method": "echo", "dependencies": ["root"],
                  "params": {"message": i}} for i in range(tasks - 1)]}
    request = urllib.request.Request(SERVER + "/api/v1/workflows", data=json.dumps(workflow).encode(),
                                     headers={"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json"})
    return json.load(urllib.request.urlopen(request))["workflow_id"]


def report(workflow):
    request = urllib.request.Request(SERVER + f"/api/v1/workflows/{workflow}", headers={"Authorization": f"Bearer {TOKEN}"})
    return json.load(urllib.request.urlopen(request))


def main():
    driver = browser()
    sign_in(driver, SERVER, TOKEN)
    first, lag = [], []
    try:
        for round in range(ROUNDS):
            workflow = submit(TASKS)
            # A full page load (the query makes it one), timed from its start.
            driver.get(SERVER + f"/?round={round}#/workflows/{workflow}")
            WebDriverWait(driver, 60, poll_frequency=0.01).until(
                lambda d: d.execute_script("return document.querySelectorAll('[data-task]').length > 0 && !!document.querySelector('[data-test=counts] .count')"))
            first.append(driver.execute_script("return performance.now()"))
            WebDriverWait(driver, 120, poll_frequency=0.01).until(
                lambda d: d.execute_script(f"return document.querySelector('[data-status=completed]')?.textContent === 'completed {TASKS}'"))
            shown = driver.execute_script("return Date.now()")
            finished = report(workflow)["finished_at"]
            ended = time.mktime(time.strptime(finished[:19], "%Y-%m-%dT%H:%M:%S")) - time.timezone + float("0" + finished[19:-1])
            lag.append(shown - ended * 1000)
    finally:
        driver.quit()
    print(f"dashboard page of a {TASKS}-task workflow, headless Chromium, medians of {ROUNDS} rounds")
    print()
    print("| measure | median | min | max |")
    print("|---|---:|---:|---:|")
    for name, values in [("first render (navigation start to rows and counts shown)", first),
                         ("live-update lag (workflow finished to all shown completed)", lag)]:
        print(f"| {name} | {statistics.median(values):.0f} ms | {min(values):.0f} ms | {max(values):.0f} ms |")


main()
