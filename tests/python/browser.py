"""Debian's headless Chromium through chromedriver, for the dashboard
tests and bench: the flags a sandbox-less, network-less machine needs."""
from selenium import webdriver


def browser():
    options = webdriver.ChromeOptions()
    options.binary_location = "/usr/bin/chromium"
    # Headless as root in a sandbox-less container, with nothing reaching
    # for the network (the machine has none; Chromium retries otherwise).
    for flag in ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 "--window-size=1400,900"]:
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    return webdriver.Chrome(service=webdriver.ChromeService("/usr/bin/chromedriver"), options=options)


def sign_in(driver, server, token):
    """Open the dashboard with `token` in its session storage."""
    driver.get(server + "/")
    driver.execute_script("sessionStorage.setItem('gleitzeit-token', arguments[0])", token)
