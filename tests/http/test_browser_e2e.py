"""The web page in a real browser: headless Chromium (Debian's chromium and
chromium-driver, installed by `make test`) driven by selenium, against a real jq-masterd.

A job submitted through the API shows up and goes queued -> running -> success with its
bar at 100%, its log opens, another job is canceled from the page; with 1,000 jobs the
page stays responsive; a group shows as one row with its counts, is entered from it and
left by the breadcrumb, and holds. Screenshots are written under build/screenshots/ (not
committed).
"""

import os
import re
import shutil
import time

import pytest
from cluster_helpers import build_cluster
from daemon_helpers import Receiver, daemon_factory, holding
from http_helpers import HttpClient, free_port, start_http_daemon

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
SCREENSHOTS = os.path.join(ROOT, "build", "screenshots")
CHROMIUM = os.environ.get("JQ_CHROMIUM") or shutil.which("chromium") or "/usr/bin/chromium"
DRIVER = os.environ.get("JQ_CHROMEDRIVER") or shutil.which("chromedriver") or (
    "/usr/bin/chromedriver")


@pytest.fixture(scope="module")
def browser():
    """A headless Chromium; failing (not skipping) when it is missing: `make test`
    installs Debian's chromium and chromium-driver."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    assert os.path.exists(CHROMIUM) and os.path.exists(DRIVER), (
        "Chromium and its driver are needed: apt-get install chromium chromium-driver "
        "(make test does it)")
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage",
                "--disable-gpu", "--window-size=1400,900"):
        options.add_argument(arg)
    driver = webdriver.Chrome(service=Service(DRIVER), options=options)
    driver.set_page_load_timeout(30)
    yield driver
    driver.quit()


@pytest.fixture
def served(tmp_path):
    factory = daemon_factory(tmp_path)
    make = next(factory)
    daemon, client = start_http_daemon(make, "--slots", "1", "--max-jobs", "5000")
    yield daemon, client
    client.close()
    next(factory, None)


def wait_for(predicate, timeout=20, what="condition", step=0.05):
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        assert time.monotonic() < deadline, "timed out waiting for " + what
        time.sleep(step)


def row_state(driver, job_id):
    """(status, bar percent) of a job's row, or None if it is not shown."""
    return driver.execute_script(
        "const tr = document.querySelector('tr[data-id=\"' + arguments[0] + '\"]');"
        "if (!tr) return null;"
        "return [tr.dataset.status, tr.querySelector('.bar').dataset.progress,"
        "        tr.querySelector('.bar > span').style.width];", job_id)


def open_page(driver, client):
    driver.get("http://127.0.0.1:%d/" % client.port)
    wait_for(lambda: driver.find_element("id", "connection").text == "live",
             what="the event stream")


def test_a_job_goes_queued_running_success_its_log_opens_and_another_is_canceled(
        browser, served):
    """The row of a job submitted through the API follows it without a reload; the page
    cancels the job holding the only slot; the log shows the command's output."""
    from selenium.webdriver.common.by import By
    _, client = served
    open_page(browser, client)
    blocker = client.post("/api/v1/jobs", {"cmd": "sleep 60", "title": "blocker",
                                           "kill_grace": 1}).json()["id"]
    client.wait_job(blocker, ("running",))
    watched = client.post("/api/v1/jobs", {
        "cmd": "echo PROGRESS:50; sleep 1.5; echo watched-output", "title": "watched"}).json()["id"]
    seen = []

    def observe():
        state = row_state(browser, watched)
        if state is not None and (not seen or seen[-1] != state[0]):
            seen.append(state[0])
        return state

    wait_for(lambda: (observe() or [None])[0] == "queued", what="the queued row")
    assert row_state(browser, blocker)[0] == "running"
    browser.find_element(By.CSS_SELECTOR, 'tr[data-id="%d"]' % blocker).click()
    wait_for(lambda: browser.find_element(By.ID, "detail-title").text.startswith(
        "Job %d" % blocker), what="the blocker's detail")
    browser.find_element(By.CSS_SELECTOR, '.actions button[data-action="cancel"]').click()
    wait_for(lambda: "stopped" in browser.find_element(By.ID, "action-message").text
             or "cancel" in browser.find_element(By.ID, "action-message").text,
             what="the cancel's answer")
    wait_for(lambda: row_state(browser, blocker)[0] == "canceled", what="blocker canceled")
    final = wait_for(lambda: (lambda s: s if s and s[0] == "success" else None)(observe()),
                     timeout=30, what="the watched job's success")
    assert seen == ["queued", "running", "success"], seen
    assert final[1] == "100" and final[2] == "100%"
    assert client.get("/api/v1/jobs/%d" % blocker).json()["status"] == "canceled"
    browser.find_element(By.CSS_SELECTOR, 'tr[data-id="%d"]' % watched).click()
    wait_for(lambda: "watched-output" in browser.find_element(By.ID, "log").text,
             what="the log")
    assert "* EXIT : 0" in browser.find_element(By.ID, "log").text
    browser.find_element(By.ID, "tab-nodes").click()
    wait_for(lambda: browser.find_elements(By.CSS_SELECTOR, "#node-rows tr"),
             what="the nodes tab")
    cells = [td.text for td in browser.find_elements(By.CSS_SELECTOR, "#node-rows tr td")]
    assert cells[1] == "yes" and cells[3] == "0/1"
    assert re.fullmatch(r"\d+\.\d\d / %d CPUs" % os.cpu_count(), cells[7]), cells
    assert re.fullmatch(r"\d+\.\d of \d+\.\d GiB free", cells[8]), cells
    browser.find_element(By.ID, "tab-jobs").click()
    browser.find_element(By.CSS_SELECTOR, 'tr[data-id="%d"]' % watched).click()
    wait_for(lambda: sorted(browser.find_element(By.ID, "summary").text.split(" · ")[-1]
                            .split(", ")) == ["1 canceled", "1 success"],
             what="the header's counts")
    os.makedirs(SCREENSHOTS, exist_ok=True)
    path = os.path.join(SCREENSHOTS, "jobs-page.png")
    assert browser.save_screenshot(path) and os.path.getsize(path) > 10000


def test_a_thousand_jobs_arrive_by_the_event_stream_and_a_reload_shows_them(browser, served):
    """1,000 jobs submitted while the page is open all show up from the event stream (the
    page's longest frame meanwhile is printed: a figure, not a timed assertion); a reload
    shows them all; the status filter empties the table."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select
    daemon, client = served
    open_page(browser, client)
    browser.execute_script(
        "window.__gaps = []; let last = performance.now();"
        "(function frame(now) { window.__gaps.push(now - last); last = now;"
        " requestAnimationFrame(frame); })(last);")
    with daemon.client() as luxi:
        results = luxi.submit_many_jobs([[{"OP_ID": "OP_TEST_DELAY", "duration": 0}]
                                         for _ in range(1000)])
    ids = [value for ok, value in results if ok]
    assert len(ids) == 1000
    wait_for(lambda: browser.execute_script(
        "return document.querySelectorAll('#job-rows tr[data-status=success]').length")
        >= 1000, timeout=60, what="1,000 rows in success")
    worst = browser.execute_script("return Math.max.apply(null, window.__gaps.slice(1))")
    print("the page's longest frame while 1,000 jobs came: %d ms" % worst)  # pytest -s
    browser.refresh()
    wait_for(lambda: browser.execute_script(
        "return document.querySelectorAll('#job-rows tr').length") >= 1000,
        what="the reloaded table")
    Select(browser.find_element(By.ID, "status-filter")).select_by_value("queued")
    wait_for(lambda: browser.find_element(By.ID, "empty").is_displayed(),
             what="an empty filtered table")


def test_a_long_log_is_read_from_near_its_end(browser, served):
    """A finished job with 3 MB of output: its detail shows the end of the log and says how
    much it left out, without reading the whole log first."""
    from selenium.webdriver.common.by import By
    _, client = served
    job_id = client.post("/api/v1/jobs", {
        "cmd": "head -c 3000000 /dev/zero | tr '\\0' x | fold -w 100; echo last-line",
        "title": "chatty"}).json()["id"]
    job = client.wait_job(job_id)
    assert job["status"] == "success" and job["log_bytes"] > 3000000, job
    open_page(browser, client)
    browser.execute_script(
        "window.__logReads = 0; const fetch0 = window.fetch; window.fetch = (url, opts) => {"
        " if (String(url).includes('/log?')) { window.__logReads += 1; }"
        " return fetch0(url, opts); };")
    wait_for(lambda: browser.find_elements(By.CSS_SELECTOR, 'tr[data-id="%d"]' % job_id),
             what="the row")
    browser.find_element(By.CSS_SELECTOR, 'tr[data-id="%d"]' % job_id).click()
    wait_for(lambda: "* END" in browser.find_element(By.ID, "log").get_attribute(
        "textContent"), what="the log's end")
    text = browser.find_element(By.ID, "log").get_attribute("textContent")
    assert text.splitlines()[0] == "[earlier output not shown]"
    assert "last-line" in text and len(text) <= (1 << 20) + 100
    assert browser.execute_script("return window.__logReads") <= 20


def test_a_failed_attempt_shows_when_the_next_one_starts_until_the_job_is_canceled(
        browser, served):
    """A command waiting out its back-off: the detail shows the failed attempt's reason and
    exit status and the next attempt's time (the API's retry_at, in local time); once the
    job is canceled the time is gone."""
    from selenium.webdriver.common.by import By
    _, client = served
    job_id = client.post("/api/v1/jobs", {"cmd": "exit 3", "max_attempts": 2,
                                          "retry_delay": 600}).json()["id"]
    job = client.wait_job(job_id, ("waiting",))
    assert job["retry_at"] > time.time() + 100, job  # 300 s at most (retry_delay_max), jittered
    open_page(browser, client)
    wait_for(lambda: browser.find_elements(By.CSS_SELECTOR, 'tr[data-id="%d"]' % job_id),
             what="the row")
    browser.find_element(By.CSS_SELECTOR, 'tr[data-id="%d"]' % job_id).click()
    expected = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(int(job["retry_at"])))
    wait_for(lambda: detail_field(browser, "next attempt") == expected, what="the next attempt")
    assert detail_field(browser, "reason") == "FAILED"
    assert detail_field(browser, "exit status") == "3"
    assert client.post("/api/v1/jobs/%d/cancel" % job_id, {}).status == 200
    wait_for(lambda: detail_field(browser, "status") == "canceled", what="the canceled job")
    assert detail_field(browser, "next attempt") is None


def test_a_command_killed_over_its_memory_limit_shows_what_it_held_and_used(browser, served):
    """A job posted with memory_max "64M" that holds 96 MiB: the API takes the size, the
    shim kills it, and the detail shows its peak against the limit, that it was killed
    over it, and its CPU time."""
    from selenium.webdriver.common.by import By
    _, client = served
    answer = client.post("/api/v1/jobs", {"cmd": holding(96), "memory_max": "64M"})
    assert answer.status == 201, answer
    job_id = answer.json()["id"]
    job = client.wait_job(job_id, ("error",))
    assert (job["memory_max"], job["memory_exceeded"]) == (64 << 20, True), job
    open_page(browser, client)
    wait_for(lambda: browser.find_elements(By.CSS_SELECTOR, 'tr[data-id="%d"]' % job_id),
             what="the row")
    browser.find_element(By.CSS_SELECTOR, 'tr[data-id="%d"]' % job_id).click()
    wait_for(lambda: detail_field(browser, "memory") is not None, what="the memory")
    assert re.fullmatch(r"peak [0-9.]+ MiB of its 64\.0 MiB limit, killed over it",
                        detail_field(browser, "memory")), detail_field(browser, "memory")
    assert re.fullmatch(r"[0-9]+\.[0-9]{2} s", detail_field(browser, "CPU"))
    assert detail_field(browser, "reason") == "KILLED"


def test_a_jobs_detail_says_who_is_told_of_its_end_and_how_it_went(browser, served):
    """A job posted with notify (a real receiver): once told, its detail says where and
    that it was delivered."""
    from selenium.webdriver.common.by import By
    _, client = served
    receiver = Receiver()
    try:
        answer = client.post("/api/v1/jobs", {"cmd": "true", "notify": receiver.url()})
        job_id = answer.json()["id"]
        receiver.wait(1)
        wait_for(lambda: client.get("/api/v1/jobs/%d" % job_id).json()["notified"],
                 what="the delivery recorded")
    finally:
        receiver.close()
    open_page(browser, client)
    wait_for(lambda: browser.find_elements(By.CSS_SELECTOR, 'tr[data-id="%d"]' % job_id),
             what="the row")
    browser.find_element(By.CSS_SELECTOR, 'tr[data-id="%d"]' % job_id).click()
    wait_for(lambda: detail_field(browser, "notify") is not None, what="the notify line")
    assert detail_field(browser, "notify") == "POST %s: delivered" % receiver.url()


def test_a_running_commands_detail_shows_what_it_holds_now(browser, served):
    """A job holding 40 MiB under a 256M limit: once its node looked (a second after the
    start), the open detail shows what it holds now against the limit, read again while
    it runs."""
    from selenium.webdriver.common.by import By
    _, client = served
    answer = client.post("/api/v1/jobs", {"cmd": holding(40, 60), "memory_max": "256M"})
    job_id = answer.json()["id"]
    client.wait_job(job_id, ("running",))
    open_page(browser, client)
    wait_for(lambda: browser.find_elements(By.CSS_SELECTOR, 'tr[data-id="%d"]' % job_id),
             what="the row")
    browser.find_element(By.CSS_SELECTOR, 'tr[data-id="%d"]' % job_id).click()
    wait_for(lambda: (detail_field(browser, "memory") or "").startswith("now "),
             timeout=20, what="what it holds now")
    memory = detail_field(browser, "memory")
    assert re.fullmatch(r"now ([0-9.]+) MiB of its 256\.0 MiB limit", memory), memory
    assert float(memory.split()[1]) >= 40, memory
    assert client.get("/api/v1/jobs/%d" % job_id).json()["rss"] >= 40 << 20
    assert client.post("/api/v1/jobs/%d/cancel" % job_id, {}).status == 200
    client.wait_job(job_id, ("canceled",))


def test_a_job_waiting_for_a_slot_says_so_in_its_row_and_detail(browser, served):
    """One slot, taken: the next command job's status (its tooltip) and detail say what it
    waits for, as the API's wait_message; once it runs, nothing."""
    from selenium.webdriver.common.by import By
    _, client = served
    sleeper = client.post("/api/v1/jobs", {"cmd": "sleep 60"}).json()["id"]
    client.wait_job(sleeper, ("running",))
    job_id = client.post("/api/v1/jobs", {"cmd": "sleep 60"}).json()["id"]
    wait_for(lambda: client.get("/api/v1/jobs/%d" % job_id).json()["wait_reason"],
             what="the job queued on the node")
    job = client.get("/api/v1/jobs/%d" % job_id).json()
    assert job["wait_reason"] == "SLOTS", job
    assert job["wait_message"].startswith("the slot of ") and job["wait_message"].endswith(
        " is busy (job %d)" % sleeper), job
    open_page(browser, client)
    wait_for(lambda: browser.find_elements(By.CSS_SELECTOR, 'tr[data-id="%d"]' % job_id),
             what="the row")
    status = browser.find_element(By.CSS_SELECTOR, 'tr[data-id="%d"] td.status' % job_id)
    assert status.get_attribute("title") == job["wait_message"]
    reason = status.find_element(By.CSS_SELECTOR, ".wait-reason")
    assert reason.text == "slots" and reason.is_displayed()
    browser.find_element(By.CSS_SELECTOR, 'tr[data-id="%d"]' % job_id).click()
    wait_for(lambda: detail_field(browser, "waiting") == job["wait_message"],
             what="the waiting field")
    assert client.post("/api/v1/jobs/%d/cancel" % sleeper, {}).status == 200
    wait_for(lambda: detail_field(browser, "status") == "running", what="the job running")
    assert detail_field(browser, "waiting") is None
    wait_for(lambda: not browser.find_element(
        By.CSS_SELECTOR, 'tr[data-id="%d"] td.status .wait-reason' % job_id).is_displayed(),
             what="the reason gone from the row")
    assert client.post("/api/v1/jobs/%d/cancel" % job_id, {}).status == 200


def test_a_log_followed_on_the_page_goes_on_across_a_restart_of_the_daemon(browser, served):
    """kill -9 of jq-masterd while the page follows a job's log, then the daemon again
    (same port): the view reads on from where it was, every line once, to the end."""
    from selenium.webdriver.common.by import By
    daemon, client = served
    job_id = client.post("/api/v1/jobs", {
        "cmd": "i=0; while [ $i -lt 60 ]; do echo n$i; i=$((i+1)); sleep 0.1; done"}).json()["id"]
    open_page(browser, client)
    wait_for(lambda: browser.find_elements(By.CSS_SELECTOR, 'tr[data-id="%d"]' % job_id),
             what="the row")
    browser.find_element(By.CSS_SELECTOR, 'tr[data-id="%d"]' % job_id).click()
    wait_for(lambda: "\nn5\n" in browser.find_element(By.ID, "log").get_attribute(
        "textContent"), what="the first lines")
    daemon.kill()
    time.sleep(1)
    daemon.start()
    client.wait_ready()
    wait_for(lambda: "* END" in browser.find_element(By.ID, "log").get_attribute(
        "textContent"), timeout=40, what="the log's end")
    text = browser.find_element(By.ID, "log").get_attribute("textContent")
    assert [line for line in text.splitlines() if line.startswith("n")] == [
        "n%d" % i for i in range(60)]
    assert "log unavailable" not in text


def row_info(driver, job_id):
    """What a job's row shows (None if it is not shown): status, held, whether it is a
    group, its title, counts and progress text, and its bar's percent."""
    return driver.execute_script(
        "const tr = document.querySelector('#job-rows tr[data-id=\"' + arguments[0] + '\"]');"
        "if (!tr) return null;"
        "const badge = tr.querySelector('.held-badge');"
        "return {status: tr.dataset.status, held: tr.dataset.held === 'true',"
        "        badge: badge.offsetParent !== null && badge.textContent,"
        "        group: tr.classList.contains('group'),"
        "        title: tr.querySelector('td.title .name').textContent,"
        "        counts: tr.querySelector('td.title .counts').textContent,"
        "        pct: tr.querySelector('.pct').textContent,"
        "        progress: tr.querySelector('.bar').dataset.progress};", job_id)


def detail_field(driver, name):
    """The text of a field of the detail pane, read at once (the pane is drawn again
    whenever an event names the job shown: an element found first may be gone when read)."""
    return driver.execute_script(
        "const dd = document.querySelector('dd[data-field=\"' + arguments[0] + '\"]');"
        "return dd ? dd.innerText : null;", name)


def shown_ids(driver):
    return driver.execute_script(
        "return Array.from(document.querySelectorAll('#job-rows tr'), tr => Number(tr.dataset.id))")


def crumbs(driver):
    return driver.execute_script(
        "return Array.from(document.querySelectorAll('#breadcrumb a'), a => a.textContent)")


def test_a_group_shows_its_counts_is_entered_from_its_row_and_left_by_the_breadcrumb(
        browser, served):
    """Jobs in groups, submitted through the API while the page is open: the root shows
    the group as one row with its counts and its bar (finished over all), kept current from
    the events of its jobs; clicking it lists its jobs and the breadcrumb says where; a
    nested group is entered the same way; the crumbs go back up. Jobs of other groups never
    show in the group shown. A held job shows held; the group's detail holds and releases
    it."""
    from selenium.webdriver.common.by import By
    _, client = served
    open_page(browser, client)

    def post(body):
        answer = client.post("/api/v1/jobs", body)
        assert answer.status == 201, answer
        return answer.json()["id"]

    def group(title, parent=None):
        body = {"ops": [{"OP_ID": "OP_GROUP", "title": title}]}
        return post(dict(body, parent=parent) if parent else body)

    noop = {"ops": [{"OP_ID": "OP_TEST_DELAY", "duration": 0}]}
    render = group("render")
    other = group("other")
    ok = [post(dict(noop, parent=render)) for _ in range(2)]
    bad = post({"cmd": "exit 1", "title": "bad frame", "parent": render})
    stuck = [post({"cmd": "true", "title": "stuck %d" % n, "affinity": ["NOWHERE"],
                   "parent": render}) for n in range(2)]  # no node has the tag: queued
    shot = group("shot1", render)
    deep = post(dict(noop, parent=shot))
    plain = post({"cmd": "true", "title": "outside"})
    for job_id in ok + [bad, deep, plain]:
        client.wait_job(job_id)

    # The root: the groups and the plain job, nothing of what is inside a group.
    final = {"status": "error", "held": False, "badge": False, "group": True,
             "title": "render", "counts": "3 ok / 1 failed / 2 queued", "pct": "4/6",
             "progress": "67"}
    wait_for(lambda: row_info(browser, render) == final, what="the group's row and counts")
    wait_for(lambda: sorted(shown_ids(browser)) == sorted([render, other, plain]),
             what="the root's rows")
    assert row_info(browser, other)["counts"] == "no jobs"
    assert row_info(browser, plain)["group"] is False
    assert crumbs(browser) == ["Root"]

    # Into the group: its jobs (the nested group as a group row), the breadcrumb, its detail.
    browser.find_element(By.CSS_SELECTOR, 'tr[data-id="%d"]' % render).click()
    inside = sorted(ok + [bad] + stuck + [shot], reverse=True)
    wait_for(lambda: shown_ids(browser) == inside, what="the group's jobs")
    assert crumbs(browser) == ["Root", "render"]
    assert row_info(browser, shot)["group"] and row_info(browser, shot)["counts"] == "1 ok"
    assert row_info(browser, bad)["status"] == "error" and not row_info(browser, bad)["group"]
    wait_for(lambda: browser.find_element(By.ID, "detail-title").text
             == "Group %d: render" % render, what="the group's detail")
    assert detail_field(browser, "jobs") == "3 ok / 1 failed / 2 queued"

    # A held job shows held.
    assert client.post("/api/v1/jobs/%d/hold" % stuck[0]).json()["ok"]
    wait_for(lambda: row_info(browser, stuck[0])["badge"] == "held", what="the held badge")
    assert row_info(browser, stuck[0])["held"] and not row_info(browser, stuck[1])["held"]

    # Events of jobs elsewhere (the root, another group) add no row here.
    elsewhere = [post(dict(noop, parent=other)), post({"cmd": "true", "title": "later"})]
    sentinel = post({"cmd": "true", "affinity": ["NOWHERE"], "parent": render})
    wait_for(lambda: sentinel in shown_ids(browser), what="a new job of the group")
    for job_id in elsewhere:
        client.wait_job(job_id)
    time.sleep(0.5)  # their DONE events too
    assert sorted(shown_ids(browser), reverse=True) == [sentinel] + inside

    # The nested group, then back up one crumb at a time.
    browser.find_element(By.CSS_SELECTOR, 'tr[data-id="%d"]' % shot).click()
    wait_for(lambda: shown_ids(browser) == [deep], what="the nested group's job")
    assert crumbs(browser) == ["Root", "render", "shot1"]
    browser.find_element(By.CSS_SELECTOR, '#breadcrumb a[data-id="%d"]' % render).click()
    wait_for(lambda: sorted(shown_ids(browser), reverse=True) == [sentinel] + inside,
             what="the group's jobs again")
    assert crumbs(browser) == ["Root", "render"]

    # The group's detail (its crumb shows it) holds it (every job of it that can be), and
    # releases it.
    wait_for(lambda: browser.find_element(By.ID, "detail-title").text
             == "Group %d: render" % render, what="the group's detail")
    browser.find_element(By.CSS_SELECTOR, '.actions button[data-action="hold"]').click()
    wait_for(lambda: "held" in browser.find_element(By.ID, "action-message").text,
             what="the hold's answer")
    wait_for(lambda: row_info(browser, stuck[1])["held"], what="the group's jobs held")
    browser.find_element(By.CSS_SELECTOR, '#breadcrumb a[data-id="root"]').click()
    wait_for(lambda: sorted(shown_ids(browser)) == sorted(
        [render, other, plain, elsewhere[1]]), what="the root again")
    wait_for(lambda: (row_info(browser, render) or {}).get("badge") == "held",
             what="the held group")
    assert row_info(browser, other)["counts"] == "1 ok"
    assert crumbs(browser) == ["Root"]
    assert detail_field(browser, "held") == "yes"
    os.makedirs(SCREENSHOTS, exist_ok=True)
    assert browser.save_screenshot(os.path.join(SCREENSHOTS, "groups-page.png"))
    browser.find_element(By.CSS_SELECTOR, '.actions button[data-action="release"]').click()
    wait_for(lambda: row_info(browser, render)["held"] is False, what="the released group")
    assert client.get("/api/v1/jobs/%d" % render).json()["held"] is False

    # A job of the group ends without changing the group's status (no event names the
    # group): its row's counts follow all the same.
    assert client.post("/api/v1/jobs/%d/cancel" % stuck[1]).json()["ok"]
    wait_for(lambda: row_info(browser, render)["counts"]
             == "3 ok / 1 failed / 1 canceled / 2 queued", what="the counts after a cancel")
    assert row_info(browser, render)["pct"] == "5/7"
    assert row_info(browser, render)["status"] == "error"


def test_the_nodes_tab_says_why_a_node_cannot_be_reached(browser, tmp_path, nodeds, daemons):
    """A cluster's master with --http, one node's jq-noded stopped: the nodes tab shows
    that node unreachable with the master's last error about it, as jqctl node list does
    below its table, and when it was last heard from."""
    from selenium.webdriver.common.by import By
    cluster = build_cluster(tmp_path / "cluster", 2)
    started = {name: nodeds(cluster, name, wait=False) for name in cluster.names}
    for noded in started.values():
        noded.wait_ready()
    port = free_port()
    daemons(cluster.state_dirs[cluster.master], args=["--http", "127.0.0.1:%d" % port])
    client = HttpClient(port)
    client.wait_ready()
    other = next(name for name in cluster.names if name != cluster.master)

    def node(name):
        return next(n for n in client.get("/api/v1/nodes").json()["nodes"]
                    if n["name"] == name)
    wait_for(lambda: node(other)["last_heard"], what="a heartbeat of %s" % other)
    heard = node(other)  # its machine as its heartbeats say it
    assert heard["cpus"] == os.cpu_count() and 0 < heard["mem_available"] < heard["mem_total"]
    assert heard["load"] >= 0
    assert started[other].stop() == 0
    down = wait_for(lambda: (lambda n: n if not n["reachable"] and n["last_error"]
                             else None)(node(other)), timeout=30, what="%s unreachable" % other)
    open_page(browser, client)
    browser.find_element(By.ID, "tab-nodes").click()

    def cells():
        return [td.text for td in browser.find_elements(
            By.CSS_SELECTOR, '#node-rows tr[data-node="%s"] td' % other)]
    wait_for(lambda: len(cells()) == 11 and cells()[1] == "no", what="the nodes tab")
    shown = cells()
    assert shown[7:9] == ["", ""], shown  # not answering: its last reading is not shown
    assert shown[-1] == down["last_error"] and other in shown[-1], shown
    assert re.match(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d$", shown[-2]), shown
    client.close()
