"""An LLM task's answer appears in the dashboard token by token: the
task's details show a growing part of it while it runs, then the whole.

Environment: GLEITZEIT_SERVER, GLEITZEIT_TOKEN, WORKFLOW_ID (a running
workflow whose task `talk` streams its answer). Prints "ok".
"""
import os

from selenium.common.exceptions import StaleElementReferenceException
from selenium.webdriver.support.ui import WebDriverWait

from browser import browser, sign_in

SERVER = os.environ["GLEITZEIT_SERVER"]
WORKFLOW = os.environ["WORKFLOW_ID"]


def main():
    driver = browser()
    wait = WebDriverWait(driver, 60, poll_frequency=0.02, ignored_exceptions=(StaleElementReferenceException,))
    shown = lambda d: d.execute_script("return document.querySelector('[data-test=task-progress]')?.textContent ?? ''")
    try:
        sign_in(driver, SERVER, os.environ["GLEITZEIT_TOKEN"])
        driver.get(SERVER + f"/?progress#/workflows/{WORKFLOW}")
        wait.until(lambda d: d.execute_script("return !!document.querySelector('[data-task=talk]')"))
        driver.execute_script("document.querySelector('[data-task=talk]').click()")
        # Seen while it runs: a part of the answer, not yet all of it.
        partial = wait.until(lambda d: (lambda text: text if 0 < len(text.split()) < 8 else None)(shown(d)))
        assert driver.execute_script("return document.querySelector(`[data-task='talk'] .badge`)?.textContent") == "running"
        wait.until(lambda d: len(shown(d)) > len(partial))
        wait.until(lambda d: "llama3 answers:" in d.execute_script(
            "return document.querySelector('[data-test=task-result]')?.textContent ?? ''"))
        assert shown(driver).startswith(partial), (partial, shown(driver))
        print("ok")
    finally:
        driver.quit()


main()
