"""An LLM task's answer appears in the dashboard token by token: the
task's details show a growing part of it while it runs, then the whole.

Environment: GLEITZEIT_SERVER, GLEITZEIT_TOKEN, WORKFLOW (a workflow, as
JSON, whose task `talk` streams its answer). It is submitted once the
browser is signed in, so that a slow browser start does not miss the
stream. Prints "ok".
"""
import json
import os
import urllib.request

from selenium.common.exceptions import StaleElementReferenceException
from selenium.webdriver.support.ui import WebDriverWait

from browser import browser, sign_in

SERVER = os.environ["GLEITZEIT_SERVER"]
TOKEN = os.environ["GLEITZEIT_TOKEN"]


def submit():
    """Submit WORKFLOW over the HTTP API; its id."""
    request = urllib.request.Request(
        SERVER + "/api/v1/workflows", data=os.environ["WORKFLOW"].encode(), method="POST",
        headers={"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json"})
    with urllib.request.urlopen(request) as answer:
        return json.load(answer)["workflow_id"]


def main():
    driver = browser()
    wait = WebDriverWait(driver, 60, poll_frequency=0.02, ignored_exceptions=(StaleElementReferenceException,))
    shown = lambda d: d.execute_script("return document.querySelector('[data-test=task-progress]')?.textContent ?? ''")
    try:
        sign_in(driver, SERVER, TOKEN)
        driver.get(SERVER + f"/?progress#/workflows/{submit()}")
        wait.until(lambda d: d.execute_script("return !!document.querySelector('[data-task=talk]')"))
        driver.execute_script("document.querySelector('[data-task=talk]').click()")
        # Seen while it runs: a part of the answer, not yet all of it.
        partial = wait.until(lambda d: (lambda text: text if 0 < len(text.split()) < 8 else None)(shown(d)))
        assert driver.execute_script("return document.querySelector(`[data-task='talk'] .badge`)?.textContent") == "running"
        wait.until(lambda d: len(shown(d)) > len(partial))
        wait.until(lambda d: "llama3 answers:" in d.execute_script(
            "return document.querySelector('[data-test=task-result]')?.textContent ?? ''"))
        assert shown(driver).startswith(partial), (partial, shown(driver))
        # The tokens the answer used, as the backend reported them.
        wait.until(lambda d: " tokens (" in d.execute_script(
            "return document.querySelector('[data-test=task-tokens]')?.textContent ?? ''"))
        print("ok")
    finally:
        driver.quit()


main()
