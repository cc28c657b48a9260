"""The dashboard's hosts panel of a cluster, in a real headless Chromium:
the host that serves the page and the others are listed with their
addresses; one that was killed turns `gone` on the open page, without a
reload, while the living ones stay `up`.

Environment: GLEITZEIT_SERVER, GLEITZEIT_TOKEN (an admin token), UP and
GONE (host ids, comma-separated), ADDRESSES (comma-separated). Prints "ok".
"""
import os

from selenium.common.exceptions import StaleElementReferenceException
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import WebDriverWait

from browser import browser, sign_in

SERVER = os.environ["GLEITZEIT_SERVER"]
TOKEN = os.environ["GLEITZEIT_TOKEN"]
UP = os.environ["UP"].split(",")
GONE = os.environ["GONE"].split(",")
ADDRESSES = os.environ["ADDRESSES"].split(",")


def statuses(driver):
    """Host id → status, as the page shows them now."""
    rows = driver.find_elements(By.CSS_SELECTOR, "[data-test=hosts] [data-test=host]")
    return {row.get_attribute("data-host"): row.find_elements(By.CSS_SELECTOR, "td")[1].text for row in rows}


def main():
    driver = browser()
    wait = WebDriverWait(driver, 30, ignored_exceptions=(StaleElementReferenceException,))
    try:
        sign_in(driver, SERVER, TOKEN)
        driver.get(SERVER + "/#/providers")
        wait.until(lambda d: set(statuses(d)) == set(UP + GONE))
        text = driver.find_element(By.CSS_SELECTOR, "[data-test=hosts]").text
        assert all(address in text for address in ADDRESSES), text
        print("listed", statuses(driver), flush=True)
        # The test kills the GONE hosts now; the open page shows it.
        input()
        expected = {**{host: "up" for host in UP}, **{host: "gone" for host in GONE}}
        wait.until(lambda d: statuses(d) == expected)
        problems = [e for e in driver.get_log("browser") if "Content Security Policy" in e["message"]]
        assert not problems, problems
        print("ok", flush=True)
    finally:
        driver.quit()


main()
