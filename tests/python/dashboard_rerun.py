"""A failed workflow's page has a rerun button: it starts a new workflow
that keeps the completed tasks and runs the failed one again, and the page
goes to the new workflow, which says what it reruns.

Environment: GLEITZEIT_SERVER, GLEITZEIT_TOKEN, WORKFLOW_ID (a failed
workflow whose cause has been fixed since). Prints "ok".
"""
import os

from selenium.common.exceptions import StaleElementReferenceException
from selenium.webdriver.support.ui import WebDriverWait

from browser import browser, sign_in

SERVER = os.environ["GLEITZEIT_SERVER"]
TOKEN = os.environ["GLEITZEIT_TOKEN"]
OLD = os.environ["WORKFLOW_ID"]


def main():
    driver = browser()
    wait = WebDriverWait(driver, 60, poll_frequency=0.05, ignored_exceptions=(StaleElementReferenceException,))
    text = lambda selector: driver.execute_script(f"return document.querySelector('{selector}')?.textContent ?? ''")
    try:
        sign_in(driver, SERVER, TOKEN)
        driver.get(SERVER + f"/#/workflows/{OLD}")
        wait.until(lambda d: d.execute_script("return !!document.querySelector('[data-test=rerun]')"))
        driver.execute_script("document.querySelector('[data-test=rerun]').click()")
        wait.until(lambda d: OLD not in d.current_url)
        wait.until(lambda d: text("[data-test=rerun-of]") == f" · rerun of {OLD}")
        wait.until(lambda d: text(".workflow-head .badge") == "completed")
        print("ok")
    finally:
        driver.quit()


main()
