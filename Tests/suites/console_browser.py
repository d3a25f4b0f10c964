#!/usr/bin/env python3
# The browser half of Tests/suites/console.sh: drives headless chromium through the console served by the berthd
# that console.sh started (CONSOLE_URL, CONSOLE_TOKEN); each check is one case; prints the suite's totals line.
import json
import os
import re
import subprocess
import sys
import time
import urllib.error
import urllib.request

from selenium import webdriver
from selenium.common.exceptions import StaleElementReferenceException, TimeoutException
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import WebDriverWait

URL, TOKEN = os.environ["CONSOLE_URL"], os.environ["CONSOLE_TOKEN"]
SHOTS, TMP = os.environ["CONSOLE_SHOTS"], os.environ["CONSOLE_TMP"]
BERTH = os.environ["BERTH_CLI"]
results = []
driver = None


def rest(method, path, body=None, token=TOKEN):
    """One REST call over TCP: (status, headers, parsed body or text)."""
    req = urllib.request.Request(URL + path, method=method, data=None if body is None else json.dumps(body).encode())
    if token:
        req.add_header("Authorization", f"Bearer {token}")
    if body is not None:
        req.add_header("Content-Type", "application/json")
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            status, headers, text = r.status, r.headers, r.read().decode()
    except urllib.error.HTTPError as e:
        status, headers, text = e.code, e.headers, e.read().decode()
    try:
        return status, headers, json.loads(text)
    except ValueError:
        return status, headers, text


def write_json(path, doc):
    with open(path, "w") as f:
        json.dump(doc, f)


def check(cond, message):
    if not cond:
        raise AssertionError(message)


def wait(cond, what, timeout=10):
    try:
        return WebDriverWait(driver, timeout, poll_frequency=0.1).until(lambda _d: cond())
    except TimeoutException:
        raise AssertionError(f"timed out after {timeout} s waiting for {what}") from None


def css(sel, root=None):
    return (root or driver).find_elements(By.CSS_SELECTOR, sel)


def text(sel):
    """The rendered text of the first match, read in one step (live updates replace elements at any time)."""
    return driver.execute_script("const e = document.querySelector(arguments[0]); return e ? e.innerText : ''", sel)


def texts(sel):
    return driver.execute_script("return [...document.querySelectorAll(arguments[0])].map(e => e.innerText)", sel)


def attr(sel, name):
    return driver.execute_script("const e = document.querySelector(arguments[0]); return e ? e.getAttribute(arguments[1]) : null", sel, name)


def click(sel):
    """Clicks the first match, looking it up again if a live update replaced it meanwhile."""
    for _ in range(50):
        try:
            els = css(sel)
            if els:
                els[0].click()
                return
        except StaleElementReferenceException:
            pass
        time.sleep(0.1)
    raise AssertionError(f"nothing to click at {sel}")


def shot(name, at=None):
    """Saves a screenshot, scrolled to the top of the page or to the element `at`."""
    try:
        driver.execute_script("const e = arguments[0] && document.querySelector(arguments[0]);"
                              "if (e) e.scrollIntoView(); else window.scrollTo(0, 0);", at)
        driver.save_screenshot(f"{SHOTS}/{name}.png")
    except Exception as e:  # a screenshot failing must not hide the case's own result
        print(f"  (screenshot {name} failed: {e})")


def viewport(w, h):
    """Sizes the window so that the page itself gets w x h pixels (the window's frame takes some)."""
    driver.set_window_size(w, h)
    iw, ih = driver.execute_script("return [window.innerWidth, window.innerHeight]")
    if (iw, ih) != (w, h):
        driver.set_window_size(2 * w - iw, 2 * h - ih)


def run(name, f):
    t0 = time.time()
    try:
        f()
        results.append((name, True))
        print(f"ok   {name} ({time.time() - t0:.1f} s)", flush=True)
    except Exception as e:
        results.append((name, False))
        print(f"FAIL {name}: {type(e).__name__}: {e}", flush=True)
        shot("fail-" + re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-"))


def go(page):
    """Navigates inside the page (a hash change, never a reload) and waits for the page's data."""
    click(f"#nav-{page}")
    wait(lambda: css(f"#nav-{page}.active"), f"the {page} page")


def set_value(sel, value):
    """Sets a textarea's text as typing would (an input event), faster than send_keys for long text."""
    driver.execute_script("const e = document.querySelector(arguments[0]); e.value = arguments[1];"
                          "e.dispatchEvent(new Event('input', {bubbles: true}));", sel, value)


def row_state(plugin):
    return text(f'tr[data-plugin="{plugin}"] td.state .badge')


# --- cases -------------------------------------------------------------------------------------------------------

def static_files_and_headers():
    for path in ["/ui/", "/ui", "/ui/app.js", "/ui/console.css"]:
        st, h, body = rest("GET", path, token=None)
        check(st == 200, f"GET {path} without a token: {st}, want 200")
        csp = h.get("Content-Security-Policy", "")
        for want in ["default-src 'self'", "script-src 'self'", "style-src 'self'", "frame-ancestors 'none'"]:
            check(want in csp, f"GET {path}: Content-Security-Policy {csp!r} lacks {want}")
        check("unsafe-inline" not in csp and "unsafe-eval" not in csp, f"CSP allows inline code: {csp}")
        check(h.get("X-Content-Type-Options") == "nosniff", f"GET {path}: X-Content-Type-Options {h.get('X-Content-Type-Options')}")
    st, h, _ = rest("GET", "/ui/app.js", token=None)
    check(h.get("Content-Type", "").startswith("text/javascript"), f"app.js Content-Type {h.get('Content-Type')}")
    st, _, _ = rest("GET", "/ui/secret.txt", token=None)
    check(st == 404, f"GET /ui/secret.txt: {st}, want 404")
    for path in ["/v1/plugins", "/v1/site", "/v1/events"]:
        st, _, _ = rest("GET", path, token=None)
        check(st == 401, f"GET {path} without a token: {st}, want 401")


def wrong_token_refused():
    driver.get(URL + "/ui/")
    wait(lambda: css("#token"), "the login form")
    css("#token")[0].send_keys("wrong-token-0123456789")
    click("#login-submit")
    wait(lambda: "refused" in text("#login .note.error"), "the refusal message")
    shot("login-refused")
    check(not css("#nav"), "the console opened with a wrong token")
    check(driver.execute_script("return sessionStorage.length") == 0, "a refused token was kept")
    st, _, body = rest("GET", "/v1/plugins", token="wrong-token-0123456789")
    check(st == 401, f"the API answered {st} to a wrong token")


def log_in():
    css("#token")[0].clear()
    css("#token")[0].send_keys(TOKEN)
    click("#login-submit")
    wait(lambda: css("#nav"), "the console after login")
    check(text("#site-name") == "console-test", f"site name {text('#site-name')!r}")
    check(driver.execute_script("return localStorage.length") == 0, "the token went to localStorage")
    keys = driver.execute_script("return Object.keys(sessionStorage).map(k => sessionStorage.getItem(k))")
    check(keys == [TOKEN], "the token is not in sessionStorage")
    wait(lambda: text("#live") == "live", "the live event stream")
    driver.execute_script("window.__noReloadMark = 42")  # gone if the page ever reloads


def plugins_listed():
    names = ["default", "discovery-dns", "hello", "hello-swift", "sched-stateful", "storage-local"]
    wait(lambda: all(css(f'tr[data-plugin="{n}"]') for n in names), "a row per plugin")
    for n in names:
        cells = texts(f'tr[data-plugin="{n}"] td')
        check(row_state(n) == "loaded", f"{n}: state {row_state(n)!r}")
        check(re.fullmatch(r"[0-9a-f]{12}", cells[3]), f"{n}: sha256 cell {cells[3]!r}")
        check(cells[4].startswith("in-process"), f"{n}: isolation {cells[4]!r}")
        check(re.fullmatch(r"[0-9,]+", cells[6]) and re.fullmatch(r"[0-9,]+", cells[7]), f"{n}: calls/errors {cells[6:8]}")
        check(cells[8].endswith("µs"), f"{n}: latency {cells[8]!r}")
    check("network" in texts('tr[data-plugin="default"] td')[1], "the network plugin's kind is not shown")
    title = attr('tr[data-plugin="hello"] button', "title")
    check(title == "CLI: berth plugins disable hello", f"the Disable button's tooltip: {title!r}")
    shot("site")


def disable_and_enable():
    click('tr[data-plugin="hello"] button[data-cli="berth plugins disable hello"]')
    wait(lambda: row_state("hello") == "disabled", "hello disabled")
    check(rest("GET", "/v1/plugins/hello")[2]["state"] == "disabled", "the daemon does not say hello is disabled")
    click('tr[data-plugin="hello"] button[data-cli="berth plugins enable hello"]')
    wait(lambda: row_state("hello") == "loaded", "hello loaded again")
    check(rest("GET", "/v1/plugins/hello")[2]["state"] == "loaded", "the daemon does not say hello is loaded")


def import_pool():
    go("networks")
    wait(lambda: css("#net-select option"), "the network list")
    upload = f"{TMP}/blue.json"  # uploaded as a file; the other pools are pasted
    write_json(upload, {"name": "blue", "ranges": [{"subnet": "10.20.0.0/24"}], "reserved": ["10.20.0.10", "10.20.0.11"]})
    css("#pool-file")[0].send_keys(upload)
    wait(lambda: '"blue"' in driver.execute_script("return document.getElementById('pool-json').value"), "the uploaded file in the field")
    click("#pool-import")
    wait(lambda: css('.pool[data-pool="blue"] svg.bar rect.seg.reserved'), "the blue pool's capacity bar")
    legend = text('.pool[data-pool="blue"] .legend')
    check("reserved 2" in legend, f"legend {legend!r}")
    free = int(re.search(r"free ([0-9,]+)", legend).group(1).replace(",", ""))
    check(free > 200, f"free {free} in a /24")
    widths = {c: float(attr(f'.pool[data-pool="blue"] rect.seg.{c}', "width")) for c in ["free", "reserved"]}
    check(abs(widths["reserved"] / widths["free"] - 2 / free) < 1e-6, f"bar widths {widths} do not follow 2:{free}")
    check("Imported into default: blue" in text("#pool-error"), f"message {text('#pool-error')!r}")
    shot("networks")


def validation_error_next_to_field():
    set_value("#pool-json", json.dumps({"name": "bad", "ranges": [{"subnet": "10.1.0.0/33"}]}))
    click("#pool-import")
    wait(lambda: "not a valid CIDR" in text("#pool-error"), "the server's validation error")
    err = text("#pool-error")
    check(err.startswith("ranges[0].subnet:"), f"the error does not name the field first: {err!r}")
    check("invalid" in attr("#pool-json", "class"), "the field is not marked invalid")
    nxt = driver.execute_script("return document.getElementById('pool-json').nextElementSibling.id")
    check(nxt == "pool-error", f"the error is not next to the field (next: {nxt})")
    check(rest("GET", "/v1/networks/default/pools/bad")[0] == 404, "the invalid pool was created")


def script_in_pool_name_is_text():
    name = "<script>window.__xss=1</script>"
    set_value("#pool-json", json.dumps({"name": name, "ranges": [{"subnet": "10.30.0.0/24"}]}))
    click("#pool-import")
    wait(lambda: "is invalid" in text("#pool-error"), "the error naming the pool")
    check(name in text("#pool-error"), f"the name is not shown as text: {text('#pool-error')!r}")
    check(not css("#pool-error script, #page script"), "a script element was created from server data")
    check(driver.execute_script("return window.__xss") is None, "server data ran as script")


def app_instances_in_events_live():
    for n in ["n1", "n2"]:
        st, _, body = rest("PUT", f"/v1/nodes/{n}", {"capacity": {"cpu": 4000, "memory": "8Gi"},
                                                     "labels": {"zone": n, "note": "<img src=x onerror=window.__xss=2>"}})
        check(st in (200, 201), f"PUT node {n}: {st} {body}")
    go("events")
    wait(lambda: css("#events tbody tr"), "the event table")
    app = f"{TMP}/web.json"
    write_json(app, {"kind": "App", "name": "web", "spec": {"replicas": 2, "resources": {"cpu": "250m"}, "network": {"name": "default"},
                                                        "description": "<script>window.__xss=3</script>"}})
    r = subprocess.run([BERTH, "apply", "-f", app], capture_output=True, text=True, timeout=20)  # the CLI, over the unix socket
    check(r.returncode == 0, f"berth apply: {r.stdout} {r.stderr}")
    for i in [0, 1]:
        wait(lambda: css(f'#events tr[data-type="instance.placed"]') and any(
            t == f"App/web/{i}" for t in texts('#events tr[data-type="instance.placed"] td.name')), f"instance.placed App/web/{i}")
    check(driver.execute_script("return window.__noReloadMark") == 42, "the page reloaded")
    shot("events")


def event_filters():
    driver.find_element(By.CSS_SELECTOR, '#ev-kind option[value="instance"]').click()
    wait(lambda: all(t.startswith("instance.") for t in driver.execute_script(
        "return [...document.querySelectorAll('#events tbody tr')].map(r => r.dataset.type || '')")), "only instance events")
    css("#ev-object")[0].send_keys("App/web/1")
    wait(lambda: css("#events tbody tr[data-type]") and all(t == "App/web/1" for t in texts("#events tbody td.name")), "only App/web/1")
    check("match" in text("#ev-count"), "no match count")
    css("#ev-object")[0].clear()
    driver.find_element(By.CSS_SELECTOR, '#ev-kind option[value=""]').click()


def pools_per_node_and_attachment_search():
    st, _, body = rest("POST", "/v1/networks/default/pools", {"name": "green", "ranges": [{"subnet": "10.40.0.0/28"}], "nodes": ["n1"]})
    check(st == 201, f"import green: {st} {body}")
    go("networks")
    wait(lambda: css('.pool[data-pool="green"]') and css('#node-select option[value="n2"]'), "the green pool and the node list")
    click('#node-select option[value="n2"]')
    wait(lambda: css('.pool[data-pool="blue"]') and not css('.pool[data-pool="green"]'), "the pools n2 may use (no green)")
    click('#node-select option[value="n1"]')
    wait(lambda: css('.pool[data-pool="green"] svg.bar'), "green as n1 sees it")
    check("free 13" in text('.pool[data-pool="green"] .legend'), f"green from n1: {text('.pool[data-pool=green] .legend')!r}")
    click('#node-select option[value=""]')
    atts = rest("GET", "/v1/networks/default/attachments")[2]["attachments"]
    check(len(atts) == 2, f"{len(atts)} attachments, want the 2 of web")
    ip = atts[1]["result"]["ips"][0]["address"].split("/")[0]
    wait(lambda: len(css("#attachments tbody tr")) == 2, "both attachments listed")
    css("#att-search")[0].send_keys(ip)
    wait(lambda: len(css("#attachments tbody tr")) == 1 and ip in text("#attachments tbody tr"), f"only the attachment with {ip}")
    check(atts[1]["containerID"] in text("#attachments tbody tr"), "the search found the wrong attachment")
    css("#att-search")[0].clear()


def pending_reason():
    go("workloads")
    wait(lambda: css('#instances tr[data-instance="App/web/1"]'), "the web instances")
    for i in [0, 1]:
        cells = texts(f'#instances tr[data-instance="App/web/{i}"] td')
        check(cells[2] in ("placed", "running") and cells[3] in ("n1", "n2"), f"web-{i}: {cells}")
        check(re.fullmatch(r"10\.88\.\d+\.\d+", cells[4]), f"web-{i}: IP {cells[4]!r}")
    set_value("#apply-json", json.dumps({"kind": "App", "name": "huge", "spec": {"replicas": 1, "resources": {"cpu": "64"}}}))
    click("#apply-submit")
    sel = '#instances tr[data-instance="App/huge/0"]'
    wait(lambda: text(f"{sel} td.reason.pending").strip(), "huge-0 pending with a reason")
    reason = text(f"{sel} td.reason")
    check(text(f"{sel} .badge") == "pending", f"huge-0 is {text(sel + ' .badge')}")
    check(re.search(r"cpu|fit|capacity", reason, re.I), f"the reason does not say why: {reason!r}")
    print(f"  pending reason shown: {reason}")
    shot("workloads")


def markup_in_labels_and_descriptions_is_text():
    check("note=<img src=x onerror=window.__xss=2>" in text('#nodes tr[data-node="n1"] td.labels'), "the label is not shown as text")
    check("<script>window.__xss=3</script>" in text('#apps tr[data-app="web"] td.desc'), "the description is not shown as text")
    check(not css("#page img, #page script"), "server data became elements")
    check(driver.execute_script("return window.__xss") is None, "server data ran as script")


def drain_down_up():
    click('#nodes tr[data-node="n2"] button[data-cli="berth nodes drain n2"]')
    driver.switch_to.alert.accept()
    wait(lambda: text('#nodes tr[data-node="n2"] .badge') == "draining", "n2 draining")
    wait(lambda: "n2 is draining" in text("#node-message"), "the drain message")
    click('#nodes tr[data-node="n2"] button[data-cli="berth nodes up n2"]')
    wait(lambda: text('#nodes tr[data-node="n2"] .badge') == "up", "n2 up again")
    click('#nodes tr[data-node="n2"] button[data-cli="berth nodes down n2"]')
    driver.switch_to.alert.accept()
    wait(lambda: text('#nodes tr[data-node="n2"] .badge') == "down", "n2 down")
    check(rest("GET", "/v1/nodes/n2")[2]["state"] == "down", "the daemon does not say n2 is down")
    click('#nodes tr[data-node="n2"] button[data-cli="berth nodes up n2"]')
    wait(lambda: text('#nodes tr[data-node="n2"] .badge') == "up", "n2 up after down")


def disable_refused_shows_holdings():
    go("site")
    wait(lambda: css('tr[data-plugin="default"] button[data-cli="berth plugins disable default"]'), "the default network's row")
    click('tr[data-plugin="default"] button[data-cli="berth plugins disable default"]')
    sel = 'tr[data-message-for="default"]'
    wait(lambda: "holds" in text(sel), "the refusal with what the plugin holds")
    check(re.search(r"holds \d+ network attachment", text(sel)), f"refusal {text(sel)!r}")
    check(css(f'{sel} button[data-cli="berth plugins disable default --force"]'), "no force button")
    check(row_state("default") == "loaded", "the network plugin was disabled anyway")


def site_apply_dry_run():
    value = lambda: driver.execute_script("return document.getElementById('site-json').value")
    wait(lambda: '"plugins"' in value(), "the site configuration")
    doc = json.loads(value())
    check(doc["api"]["token"] == "(set)", "the site JSON shows the token")
    for p in doc["plugins"]:
        if p["name"] == "hello-swift":
            p["enabled"] = False
    check(attr("#site-apply", "disabled") is not None, "Apply is possible before a dry run")
    set_value("#site-json", json.dumps(doc, indent=2))
    click("#site-dry-run")
    wait(lambda: css("#site-diff"), "the dry run's diff")
    dels, adds = texts("#site-diff .del"), texts("#site-diff .add")
    check(any('"enabled": true' in d for d in dels) and any('"enabled": false' in a for a in adds), f"diff -{dels} +{adds}")
    check("hello-swift" in text("#site-result tr.change.disable"), f"plan {text('#site-result table')!r}")
    check(rest("GET", "/v1/plugins/hello-swift")[2]["state"] == "loaded", "the dry run changed something")
    shot("site-dry-run", "#site-result")
    click("#site-apply")
    wait(lambda: "Applied" in text("#site-result"), "the apply")
    wait(lambda: row_state("hello-swift") == "disabled", "hello-swift disabled by the apply")
    check(rest("GET", "/v1/plugins/hello-swift")[2]["state"] == "disabled", "the daemon does not say hello-swift is disabled")


def storage_page():
    st, _, vol = rest("POST", "/v1/storage/storage-local/volumes", {"name": "vol-a", "capacityBytes": 1048576})
    check(st in (200, 201), f"create volume: {st} {vol}")
    st, _, snap = rest("POST", "/v1/storage/storage-local/snapshots", {"name": "snap-a", "sourceVolumeId": vol["volumeId"]})
    check(st in (200, 201), f"create snapshot: {st} {snap}")
    go("storage")
    box = '[data-storage="storage-local"]'
    sel = f'{box} tr[data-volume="{vol["volumeId"]}"]'
    wait(lambda: css(sel), "the volume row")
    row = text(sel)
    check("vol-a" in row and "unpublished" in row and "1.0 MiB" in row, f"volume row {row!r}")
    st, _, body = rest("POST", f"/v1/storage/storage-local/volumes/{vol['volumeId']}/controller-publish", {"node": "n1"})
    check(st == 200, f"controller-publish: {st} {body}")
    wait(lambda: "published" in text(sel).split() and "n1" in text(sel), "the volume published to n1, live")
    check("snap-a" in text(f"{box} table.snapshots"), "the snapshot is not listed")
    shot("storage")


def no_csp_violations():
    bad = [e["message"] for e in driver.get_log("browser")
           if "Content Security Policy" in e["message"] or "Uncaught" in e["message"] or "SyntaxError" in e["message"]]
    check(not bad, f"{len(bad)} entries in the browser's log, the first: {[b[:240] for b in bad[:2]]}")


def screen_sizes():
    for w, h, prefix in [(1280, 800, ""), (390, 844, "phone-")]:
        viewport(w, h)
        check(driver.execute_script("return [window.innerWidth, window.innerHeight]") == [w, h], f"cannot size the page to {w}x{h}")
        for page in ["site", "networks", "workloads", "storage", "events"]:
            go(page)
            time.sleep(0.3)
            over = driver.execute_script("return document.documentElement.scrollWidth - window.innerWidth")
            check(over <= 1, f"{page} at {w}x{h}: the page is {over} px wider than the screen")
            if prefix:
                shot(f"{prefix}{page}")
    viewport(1280, 800)


def main():
    global driver
    opts = webdriver.ChromeOptions()
    opts.binary_location = "/usr/bin/chromium"
    for a in ["--headless=new", "--disable-gpu", "--disable-dev-shm-usage", "--window-size=1280,800"]:
        opts.add_argument(a)
    if os.geteuid() == 0:
        opts.add_argument("--no-sandbox")
    opts.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    deadline = time.time() + 15
    while not _up():
        if time.time() > deadline:
            print("console: berthd did not answer on its TCP listener within 15 s")
            print("suite console: 0 passed, 1 failed")
            return 1
        time.sleep(0.1)
    try:
        driver = webdriver.Chrome(service=Service("/usr/bin/chromedriver"), options=opts)
    except Exception as e:
        print(f"console: cannot start chromium: {e}")
        print("suite console: 0 passed, 1 failed")
        return 1
    try:
        viewport(1280, 800)
        run("static files need no token and carry a strict CSP; the API needs the token", static_files_and_headers)
        run("a wrong token is refused", wrong_token_refused)
        run("log in with the token (kept in sessionStorage)", log_in)
        logged_in = results[-1][1]
        cases = [
            ("the plugins with kind, version, sha256, isolation, state, calls, errors, latency", plugins_listed),
            ("disable and re-enable a plugin", disable_and_enable),
            ("import a pool from an uploaded file and see its capacity bar", import_pool),
            ("the server's validation error is shown next to the field", validation_error_next_to_field),
            ("a pool name with <script> renders as text", script_in_pool_name_is_text),
            ("apply an app (CLI) and watch its instances appear in the events page without a reload", app_instances_in_events_live),
            ("filter events by kind and object", event_filters),
            ("pools as one node sees them; attachments search", pools_per_node_and_attachment_search),
            ("a pending instance shows the scheduler's reason", pending_reason),
            ("markup in a node label and an app description renders as text", markup_in_labels_and_descriptions_is_text),
            ("drain a node, down it, bring it up", drain_down_up),
            ("a refused disable shows what the plugin holds", disable_refused_shows_holdings),
            ("site apply shows the dry run's plan and diff before applying", site_apply_dry_run),
            ("storage: volumes and snapshots with their publish state", storage_page),
            ("fits 1280x800 and a phone-sized screen", screen_sizes),
            ("no CSP violation or script error in the browser's log", no_csp_violations),
        ]
        for name, f in cases:
            if logged_in:
                run(name, f)
            else:
                results.append((name, False))
                print(f"FAIL {name}: not run, the login failed")
    finally:
        driver.quit()
    passed = sum(1 for _, ok in results if ok)
    print(f"suite console: {passed} passed, {len(results) - passed} failed")
    return 0 if passed == len(results) else 1


def _up():
    try:
        return rest("GET", "/healthz")[0] == 200
    except OSError:
        return False


if __name__ == "__main__":
    sys.exit(main())
