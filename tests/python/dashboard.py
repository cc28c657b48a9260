"""The dashboard in a real headless Chromium (Debian's chromium and
chromedriver, driven with Selenium): sign in with a token, submit from the
page (the validator's problems shown, then a valid workflow), watch its
tasks turn completed live, see a fan-out's items appear, read a task's
result, cancel a running workflow, list and remove a schedule, and see a
broken plugin's error. Screenshots of the main pages
go to SCREENSHOTS (a directory) when it is set.

Environment: GLEITZEIT_SERVER, GLEITZEIT_TOKEN, BROKEN_PLUGIN (the name of
a plugin file in the daemon's directory that cannot load). Prints "ok".
"""
import json
import os
import urllib.request

from selenium.common.exceptions import StaleElementReferenceException
from selenium.webdriver.common.by import By
from selenium.webdriver.support import expected_conditions as ready
from selenium.webdriver.support.ui import WebDriverWait

from browser import browser

SERVER = os.environ["GLEITZEIT_SERVER"]
TOKEN = os.environ["GLEITZEIT_TOKEN"]
SHOTS = os.environ.get("SCREENSHOTS")


def shot(driver, name):
    if SHOTS:
        driver.save_screenshot(os.path.join(SHOTS, f"{name}.png"))


def api(path, body=None):
    request = urllib.request.Request(SERVER + path, data=body and json.dumps(body).encode(),
                                     headers={"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json"})
    return json.load(urllib.request.urlopen(request))


def main():
    driver = browser()
    # Live pages re-render rows as events arrive: an element found a moment
    # ago may be gone, so waits look again.
    wait = WebDriverWait(driver, 30, ignored_exceptions=(StaleElementReferenceException,))
    css = lambda selector: wait.until(ready.presence_of_element_located((By.CSS_SELECTOR, selector)))
    try:
        # No token: the page asks for one; nothing else is shown.
        driver.get(SERVER + "/")
        css("[data-test=login]")
        assert not driver.find_elements(By.CSS_SELECTOR, "[data-test=workflows]")
        css("[data-test=token]").send_keys("gzt_wrong")
        driver.find_element(By.CSS_SELECTOR, "[data-test=login] button").click()
        wait.until(lambda d: "did not accept" in d.find_element(By.CSS_SELECTOR, "[data-test=login]").text)
        css("[data-test=token]").send_keys(TOKEN)
        driver.find_element(By.CSS_SELECTOR, "[data-test=login] button").click()
        css("[data-test=workflows]")

        # Submit from the page: first with a mistake, whose problem is shown
        # by task and field; then a valid workflow, whose page opens.
        driver.get(SERVER + "/#/submit")
        text = css("[data-test=workflow-text]")
        text.send_keys("name: broken\ntasks:\n  - {id: b, protocol: echo/v1, method: echo, dependencies: [zz]}\n")
        driver.find_element(By.CSS_SELECTOR, "[data-test=submit]").click()
        wait.until(lambda d: "unknown task 'zz'" in d.find_element(By.CSS_SELECTOR, "[data-test=problems]").text)
        assert "task 'b', field 'dependencies'" in driver.find_element(By.CSS_SELECTOR, "[data-test=problems]").text
        shot(driver, "submit")
        text.clear()
        text.send_keys("name: From the page\ntasks:\n"
                       "  - {id: wait, protocol: echo/v1, method: delay, params: {seconds: 1.5}}\n"
                       "  - {id: greet, protocol: echo/v1, method: echo, dependencies: [wait], params: {message: \"hello from the page after ${wait.result.delayed_seconds} s\"}}\n")
        driver.find_element(By.CSS_SELECTOR, "[data-test=submit]").click()
        wait.until(lambda d: "#/workflows/" in d.current_url)
        workflow_id = driver.current_url.split("#/workflows/")[1]

        # Live: `wait` is seen running, then both turn completed without a reload.
        status_of = lambda d, task: d.execute_script(
            "return document.querySelector(`[data-task='${arguments[0]}'] .badge`)?.textContent", task)
        wait.until(lambda d: status_of(d, "wait") == "running")
        wait.until(lambda d: status_of(d, "greet") == "completed" and status_of(d, "wait") == "completed")
        wait.until(lambda d: "completed 2" in d.find_element(By.CSS_SELECTOR, "[data-test=counts]").text)
        assert driver.find_element(By.CSS_SELECTOR, "[data-test=graph] canvas"), "the DAG is drawn"
        # The status pill and the task id do not overlap ("completedgreet").
        gap = driver.execute_script(
            "const row = document.querySelector(`[data-task='greet']`);"
            "return row.querySelector('.id').getBoundingClientRect().left"
            " - row.querySelector('.badge').getBoundingClientRect().right")
        assert gap >= 4, f"the pill ends {-gap}px inside the task id"

        # A task's details, fetched when it is opened: the params it was
        # called with (references resolved), the provider of each call, the result.
        driver.find_element(By.CSS_SELECTOR, "[data-task=greet]").click()
        wait.until(lambda d: "hello from the page after 1.5 s" in d.find_element(By.CSS_SELECTOR, "[data-test=task-result]").text)
        assert "hello from the page after 1.5 s" in driver.find_element(By.CSS_SELECTOR, "[data-test=task-params]").text
        providers = [c.text for c in driver.find_elements(By.CSS_SELECTOR, "[data-test=task-calls] [data-test=call-provider]")]
        assert providers == ["wasm:echo"], providers
        shot(driver, "workflow")
        assert api(f"/api/v1/workflows/{workflow_id}")["status"] == "completed"

        # A fan-out opened before it expands: its items' tasks appear live.
        fan = api("/api/v1/workflows", {"name": "fan-out", "tasks": [
            {"id": "wait", "protocol": "echo/v1", "method": "delay", "params": {"seconds": 1.5}},
            {"id": "fan", "protocol": "echo/v1", "method": "echo", "dependencies": ["wait"],
             "for_each": ["a", "b", "c"], "params": {"message": "${item}"}}]})["workflow_id"]
        driver.get(SERVER + f"/#/workflows/{fan}")
        wait.until(lambda d: status_of(d, "wait") == "running")
        assert status_of(driver, "fan[0]") is None, "not expanded yet"
        wait.until(lambda d: all(status_of(d, f"fan[{i}]") == "completed" for i in range(3)))
        wait.until(lambda d: "completed 5" in d.find_element(By.CSS_SELECTOR, "[data-test=counts]").text)
        ids = driver.execute_script("return [...document.querySelectorAll('[data-task]')].map(r => r.dataset.task)")
        assert ids == ["wait", "fan", "fan[0]", "fan[1]", "fan[2]"], ids

        # The list shows it, live, with its counts; a name that looks like
        # markup is shown as text, never run.
        hostile = api("/api/v1/workflows", {"name": "<img src=x onerror=window.pwned=1>", "tasks": [
            {"id": "x", "protocol": "echo/v1", "method": "echo", "params": {"message": "<script>window.pwned=2</script>"}}]})["workflow_id"]
        driver.get(SERVER + "/#/")
        wait.until(lambda d: d.find_elements(By.CSS_SELECTOR, f"[data-workflow='{workflow_id}']"))
        row = wait.until(lambda d: d.find_elements(By.CSS_SELECTOR, f"[data-workflow='{hostile}']"))[0]
        assert "<img src=x" in row.text and not row.find_elements(By.TAG_NAME, "img"), row.text
        driver.get(SERVER + f"/#/workflows/{hostile}")
        wait.until(lambda d: status_of(d, "x") == "completed")
        driver.find_element(By.CSS_SELECTOR, "[data-task=x]").click()
        wait.until(lambda d: "<script>" in d.find_element(By.CSS_SELECTOR, "[data-test=task-result]").text)
        assert driver.execute_script("return window.pwned") is None, "markup in names and results never runs"
        driver.get(SERVER + "/#/")
        wait.until(lambda d: d.find_elements(By.CSS_SELECTOR, f"[data-workflow='{workflow_id}']"))
        shot(driver, "workflows")

        # Cancel a running workflow from its page.
        running = api("/api/v1/workflows", {"name": "to cancel", "tasks": [
            {"id": "long", "protocol": "echo/v1", "method": "delay", "params": {"seconds": 10}}]})["workflow_id"]
        driver.get(SERVER + f"/#/workflows/{running}")
        wait.until(lambda d: status_of(d, "long") == "running")
        css("[data-test=cancel]").click()
        wait.until(lambda d: status_of(d, "long") == "cancelled")
        wait.until(lambda d: "cancelled" in d.find_element(By.CSS_SELECTOR, ".workflow-head .badge").text)

        # Schedules: one kept over the API is listed with its next due time
        # in its zone; removed from the page, it is gone.
        api("/api/v1/schedules?id=nightly", {"name": "Nightly", "schedule": {"cron": "0 3 * * *", "timezone": "Europe/Berlin"},
                                             "tasks": [{"id": "a", "protocol": "echo/v1", "method": "ping"}]})
        driver.get(SERVER + "/#/schedules")
        table = css("[data-test=schedules]")
        assert "nightly" in table.text and "Europe/Berlin" in table.text and "T03:00:00+0" in table.text, table.text
        css("[data-test=remove-schedule]").click()
        css("[data-test=no-schedules]")
        assert api("/api/v1/schedules")["schedules"] == []

        # Providers and plugins: the broken plugin's error is shown.
        driver.get(SERVER + "/#/providers")
        plugins = css("[data-test=plugins]")
        broken = os.environ["BROKEN_PLUGIN"]
        wait.until(lambda d: broken in d.find_element(By.CSS_SELECTOR, "[data-test=plugins]").text)
        row = next(r for r in plugins.find_elements(By.CSS_SELECTOR, "tbody tr") if r.text.startswith(broken))
        assert "failed" in row.text and len(row.find_elements(By.CSS_SELECTOR, "td")[-1].text) > 10, row.text
        assert "wasm:echo" in driver.find_element(By.CSS_SELECTOR, "[data-test=providers]").text
        shot(driver, "providers")

        # Nothing the page did was refused by its content security policy.
        problems = [e for e in driver.get_log("browser") if "Content Security Policy" in e["message"]]
        assert not problems, problems
        print("ok")
    finally:
        driver.quit()


main()
