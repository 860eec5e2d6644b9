"""The web UI in headless Chromium against a real runledger: the link the kfp SDK prints opens
the run, the run's state changes show up live, the runs list sorts, filters and pages, the DAG
is drawn, the experiments pages work, failures show the API's message, and signing in to a
server with TLS and auth works. Screenshots go to target/ui-screenshots/."""

import contextlib
import datetime
import io
import re

import kfp
import pytest
import yaml
from kfp import compiler, dsl
from selenium.webdriver.common.by import By
from selenium.webdriver.common.keys import Keys
from selenium.webdriver.support.ui import Select

from conftest import dump, page_overflow, phone, screenshot, text_of, texts_of, wait_for


@dsl.component(base_image="python:3.11")
def load(source: str) -> str:
    return source


@dsl.component(base_image="python:3.11")
def featurize(data: str) -> str:
    return data


@dsl.component(base_image="python:3.11")
def profile(data: str) -> str:
    return data


@dsl.component(base_image="python:3.11")
def train(features: str, lr: float, epochs: int) -> float:
    return lr * epochs


@dsl.component(base_image="python:3.11")
def evaluate(model: float, stats: str) -> float:
    return model


@dsl.component(base_image="python:3.11")
def publish(score: float) -> str:
    return str(score)


@dsl.component(base_image="python:3.11")
def notify(message: str):
    print(message)


@dsl.pipeline(name="train-and-publish", description="Trains, evaluates and publishes a model.")
def train_and_publish(source: str = "s3://bucket/data.csv", lr: float = 0.1, epochs: int = 3):
    data = load(source=source)
    features = featurize(data=data.output)
    stats = profile(data=data.output)
    model = train(features=features.output, lr=lr, epochs=epochs)
    score = evaluate(model=model.output, stats=stats.output)
    with dsl.If(score.output > 0.5, name="good-enough"):
        published = publish(score=score.output)
        notify(message=published.output)


def count_tasks(spec: dict) -> int:
    """Tasks in the IR, sub-DAGs (conditions, loops) included: what the graph must draw."""
    components = spec.get("components", {})

    def count(dag: dict) -> int:
        total = 0
        for task in dag.get("tasks", {}).values():
            total += 1
            inner = components.get(task.get("componentRef", {}).get("name", ""), {})
            if "dag" in inner:
                total += count(inner["dag"])
        return total

    return count(spec["root"]["dag"])


@pytest.fixture(scope="module")
def pipeline_file(tmp_path_factory) -> str:
    path = tmp_path_factory.mktemp("pipeline") / "train_and_publish.yaml"
    compiler.Compiler().compile(pipeline_func=train_and_publish, package_path=str(path))
    return str(path)


def badge(browser) -> str:
    return text_of(browser, "[data-testid=run-state]")


def row_names(browser) -> list:
    return texts_of(browser, ".runs-table tbody td.name a")


def wait_rows(browser, expected: list, what: str):
    wait_for(browser, lambda b: row_names(b) == expected, f"{what}: rows {expected} (shown: {row_names(browser)})")


def task(name: str, state: str, started: str = "", ended: str = "") -> dict:
    detail = {"display_name": name, "task_id": f"task-{name}", "state": state, "pod_name": f"train-and-publish-{name}-pod"}
    if started:
        detail["start_time"] = started
    if ended:
        detail["end_time"] = ended
    return detail


def at(seconds: float) -> str:
    """A timestamp `seconds` from now, RFC 3339 UTC."""
    moment = datetime.datetime.now(datetime.timezone.utc) + datetime.timedelta(seconds=seconds)
    return moment.isoformat().replace("+00:00", "Z")


def test_the_sdk_link_opens_the_run_and_its_state_changes_show_up_live(driver, api, base, pipeline_file, unique):
    client = kfp.Client(host=base)
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        result = client.create_run_from_pipeline_package(
            pipeline_file,
            arguments={"lr": 0.05, "epochs": 20},
            run_name=f"nightly training {unique}",
            experiment_name=f"ui-demo-{unique}",
        )
    match = re.search(r"Run details: (\S+)", printed.getvalue())
    assert match, f"the SDK printed no run link: {printed.getvalue()!r}"
    link = match.group(1)
    assert link == f"{base}/#/runs/details/{result.run_id}"

    driver.get(link)
    wait_for(driver, lambda b: badge(b) == "PENDING", "the run page with state PENDING")
    assert text_of(driver, "[data-testid=run-id]") == result.run_id
    assert text_of(driver, "h1") == f"nightly training {unique}"
    parameters = text_of(driver, "table.kv")
    assert "epochs" in parameters and "20" in parameters and "0.05" in parameters, parameters

    with open(pipeline_file) as f:
        spec = yaml.safe_load(f)
    expected_nodes = count_tasks(spec)
    assert expected_nodes == 8
    wait_for(
        driver,
        lambda b: len(b.find_elements(By.CSS_SELECTOR, "svg.dag .dag-node")) == expected_nodes,
        f"a DAG of {expected_nodes} nodes",
    )
    edges = driver.find_elements(By.CSS_SELECTOR, "svg.dag .dag-edge")
    assert len(edges) == 7, f"edges: {len(edges)}"

    # A marker on the window: if the page reloaded, it would be gone.
    marker = driver.execute_script("return (window.__notReloaded = Math.random())")

    running_tasks = [
        task("load", "SUCCEEDED", at(0), at(4)),
        task("featurize", "RUNNING", at(4)),
        task("profile", "SUCCEEDED", at(4), at(9.5)),
    ]
    api.report(result.run_id, "RUNNING", runtime_details={"task_details": running_tasks})
    wait_for(driver, lambda b: badge(b) == "RUNNING", "the badge to show RUNNING without a reload")
    wait_for(
        driver,
        lambda b: b.find_element(By.CSS_SELECTOR, ".dag-node[data-task=featurize]").get_attribute("data-state") == "RUNNING",
        "the DAG's featurize node coloured RUNNING",
    )
    assert driver.execute_script("return window.__notReloaded") == marker, "the page reloaded"
    assert len(driver.find_elements(By.CSS_SELECTOR, "ol.timeline li")) == 2
    screenshot(driver, "desktop-run-running", full_page=True)
    assert text_of(driver, "[data-testid=run-finished]") == "—"

    steps = [("load", 0, 4), ("featurize", 4, 12), ("profile", 4, 9.5), ("train", 12, 95), ("evaluate", 95, 101),
             ("good-enough", 101, 109), ("publish", 101, 106)]
    done_tasks = [task(name, "SUCCEEDED", at(start), at(end)) for name, start, end in steps]
    done_tasks.append(dict(task("notify", "FAILED", at(106), at(109)), error={"code": 14, "message": "SMTP server unreachable"}))
    api.report(result.run_id, "SUCCEEDED", runtime_details={"task_details": done_tasks}, expected_state="RUNNING")
    wait_for(driver, lambda b: badge(b) == "SUCCEEDED", "the badge to show SUCCEEDED without a reload")
    wait_for(driver, lambda b: text_of(b, "[data-testid=run-finished]") not in ("", "—"), "the finished time")
    assert driver.execute_script("return window.__notReloaded") == marker, "the page reloaded"
    states = [li.get_attribute("data-state") for li in driver.find_elements(By.CSS_SELECTOR, "ol.timeline li")]
    assert states == ["PENDING", "RUNNING", "SUCCEEDED"], states
    wait_for(driver, lambda b: len(b.find_elements(By.CSS_SELECTOR, ".dag-node.state-succeeded")) == 7, "7 succeeded nodes")
    assert driver.find_element(By.CSS_SELECTOR, ".dag-node[data-task=notify]").get_attribute("data-state") == "FAILED"
    assert "SMTP server unreachable" in text_of(driver, ".tasks-table")

    screenshot(driver, "desktop-run-detail", full_page=True)
    screenshot(driver, "desktop-dag", element=driver.find_element(By.CSS_SELECTOR, "[data-testid=dag]"))
    with phone(driver):
        wait_for(driver, lambda b: page_overflow(b) <= 0, f"no horizontal overflow on a phone (overflow: {page_overflow(driver)}px)")
        screenshot(driver, "phone-run-detail", full_page=True)
        screenshot(driver, "phone-dag", element=driver.find_element(By.CSS_SELECTOR, "[data-testid=dag]"))

    # The experiment link the SDK printed for the experiment opens it, listing this run.
    driver.find_element(By.CSS_SELECTOR, "[data-field=experiment_id] a").click()
    wait_for(driver, lambda b: row_names(b) == [f"nightly training {unique}"], "the experiment page listing the run")
    assert text_of(driver, "h1") == f"ui-demo-{unique}"


NAMES = ["alpha", "bravo", "charlie", "delta", "echo", "foxtrot", "golf", "hotel", "india", "juliet", "kilo", "lima"]


@pytest.fixture(scope="module")
def listed(api):
    """An experiment with twelve runs in various states, created in a shuffled name order."""
    experiment = api.create_experiment("ui-list-fixture", description="Runs for the list tests.")
    runs = {}
    for name in ["delta", "kilo", "alpha", "echo", "lima", "charlie", "bravo", "golf", "juliet", "foxtrot", "india", "hotel"]:
        runs[name] = api.create_run(name, experiment_id=experiment["experiment_id"])["run_id"]
    for name in ["alpha", "golf", "kilo"]:
        api.report(runs[name], "RUNNING")
    api.report(runs["bravo"], "FAILED", error={"code": 13, "message": "out of memory"})
    for name in ["charlie", "hotel"]:
        api.report(runs[name], "RUNNING")
        api.report(runs[name], "SUCCEEDED")
    api.call("POST", f"/runs/{runs['delta']}:terminate")
    api.call("POST", f"/runs/{runs['foxtrot']}:archive")
    return experiment, runs


def test_the_runs_list_sorts_filters_and_pages(driver, base, listed):
    experiment, runs = listed
    driver.get(f"{base}/#/runs")
    wait_for(driver, lambda b: b.find_elements(By.CSS_SELECTOR, f"select[name=experiment] option[value='{experiment['experiment_id']}']"), "the experiment in the scope picker")
    Select(driver.find_element(By.CSS_SELECTOR, "select[name=experiment]")).select_by_value(experiment["experiment_id"])
    wait_for(driver, lambda b: len(row_names(b)) == 12, "the experiment's 12 runs")
    assert "of 12 runs" in text_of(driver, ".summary")
    assert f"exp={experiment['experiment_id']}" in driver.current_url

    # The archived run is marked.
    archived_row = driver.find_element(By.CSS_SELECTOR, f"tr[data-run-id='{runs['foxtrot']}']")
    assert "archived" in archived_row.text.lower()

    Select(driver.find_element(By.CSS_SELECTOR, "select[name=sort]")).select_by_value("display_name")
    Select(driver.find_element(By.CSS_SELECTOR, "select[name=order]")).select_by_value("asc")
    wait_rows(driver, NAMES, "sorted by name ascending")
    Select(driver.find_element(By.CSS_SELECTOR, "select[name=order]")).select_by_value("desc")
    wait_rows(driver, NAMES[::-1], "sorted by name descending")
    assert "sort=display_name+desc" in driver.current_url

    # The column header sorts too.
    driver.find_element(By.CSS_SELECTOR, "th[aria-sort] button.sort").click()
    wait_rows(driver, NAMES, "sorted by name ascending from the header")

    driver.find_element(By.CSS_SELECTOR, "details.menu > summary").click()
    for state in ["RUNNING", "FAILED"]:
        driver.find_element(By.CSS_SELECTOR, f"input[name=state][value={state}]").click()
    wait_rows(driver, ["alpha", "bravo", "golf", "kilo"], "RUNNING or FAILED runs")
    assert "of 4 runs" in text_of(driver, ".summary")

    # The query lives in the hash: a reload shows the same list.
    driver.refresh()
    wait_rows(driver, ["alpha", "bravo", "golf", "kilo"], "the same list after a reload")
    assert driver.find_element(By.CSS_SELECTOR, "input[name=state][value=FAILED]").is_selected()

    driver.find_element(By.CSS_SELECTOR, "details.menu > summary").click()
    driver.find_element(By.CSS_SELECTOR, "details.menu button.link").click()
    wait_for(driver, lambda b: len(row_names(b)) == 12, "every state again")
    name_box = driver.find_element(By.CSS_SELECTOR, "input[name=name]")
    name_box.send_keys("li", Keys.ENTER)
    wait_rows(driver, ["charlie", "juliet", "lima"], "names containing 'li'")
    name_box.send_keys(Keys.CONTROL, "a")
    name_box.send_keys(Keys.DELETE, Keys.ENTER)
    wait_for(driver, lambda b: len(row_names(b)) == 12, "every name again")

    driver.find_element(By.CSS_SELECTOR, "input[name=archived]").click()
    wait_rows(driver, [n for n in NAMES if n != "foxtrot"], "the archived run hidden")
    driver.find_element(By.CSS_SELECTOR, "input[name=archived]").click()
    wait_for(driver, lambda b: len(row_names(b)) == 12, "archived runs shown again")
    screenshot(driver, "desktop-runs", full_page=True)

    # Pages of 5, through next_page_token, and back through the kept tokens.
    Select(driver.find_element(By.CSS_SELECTOR, "select[name=size]")).select_by_value("5")
    wait_rows(driver, NAMES[:5], "page 1 of 5 runs")
    driver.find_element(By.CSS_SELECTOR, ".pager button[rel=next]").click()
    wait_rows(driver, NAMES[5:10], "page 2")
    assert "Showing 6–10 of 12 runs" in text_of(driver, ".summary")
    assert "page=" in driver.current_url
    driver.find_element(By.CSS_SELECTOR, ".pager button[rel=next]").click()
    wait_rows(driver, NAMES[10:], "page 3")
    assert not driver.find_element(By.CSS_SELECTOR, ".pager button[rel=next]").is_enabled()
    driver.find_element(By.CSS_SELECTOR, ".pager button[rel=prev]").click()
    wait_rows(driver, NAMES[5:10], "back on page 2")
    driver.back()
    wait_rows(driver, NAMES[10:], "the browser's back button returns to page 3")
    driver.find_element(By.CSS_SELECTOR, ".pager button[rel=prev]").click()
    wait_rows(driver, NAMES[5:10], "page 2 again")
    driver.find_element(By.CSS_SELECTOR, ".pager button[rel=prev]").click()
    wait_rows(driver, NAMES[:5], "back on page 1")
    assert not driver.find_element(By.CSS_SELECTOR, ".pager button[rel=prev]").is_enabled()

    with phone(driver):
        wait_for(driver, lambda b: page_overflow(b) <= 0, f"no horizontal overflow on a phone (overflow: {page_overflow(driver)}px)")
        screenshot(driver, "phone-runs", full_page=True)


def test_new_runs_appear_and_deleted_runs_vanish_without_a_reload(driver, base, api, unique):
    experiment = api.create_experiment(f"ui-live-{unique}")
    first = api.create_run("first", experiment_id=experiment["experiment_id"])
    driver.get(f"{base}/#/runs?exp={experiment['experiment_id']}")
    wait_rows(driver, ["first"], "the one run")
    wait_for(driver, lambda b: b.find_element(By.ID, "live").get_attribute("data-state") == "live", "the live indicator")
    marker = driver.execute_script("return (window.__notReloaded = Math.random())")

    api.create_run("second", experiment_id=experiment["experiment_id"])
    wait_rows(driver, ["second", "first"], "the new run on top (sorted by created_at desc)")
    assert "of 2 runs" in text_of(driver, ".summary")
    api.report(first["run_id"], "RUNNING")
    wait_for(driver, lambda b: "RUNNING" in b.find_element(By.CSS_SELECTOR, f"tr[data-run-id='{first['run_id']}']").text, "the row's state updated")
    api.call("DELETE", f"/runs/{first['run_id']}")
    wait_rows(driver, ["second"], "the deleted run gone")
    assert "of 1 runs" in text_of(driver, ".summary")
    # A run elsewhere does not appear.
    api.create_run("elsewhere")
    assert driver.execute_script("return window.__notReloaded") == marker, "the page reloaded"
    assert row_names(driver) == ["second"]


def test_the_experiments_pages(driver, base, api, listed, unique):
    archived = api.create_experiment(f"ui-archived-{unique}", description="An old one.")
    api.call("POST", f"/experiments/{archived['experiment_id']}:archive")
    driver.get(f"{base}/#/experiments")
    wait_for(driver, lambda b: b.find_elements(By.CSS_SELECTOR, f"tr[data-experiment-id='{archived['experiment_id']}']"), "the experiments list")
    row = driver.find_element(By.CSS_SELECTOR, f"tr[data-experiment-id='{archived['experiment_id']}']")
    assert "archived" in row.text.lower()
    assert "of" in text_of(driver, ".summary")

    Select(driver.find_element(By.CSS_SELECTOR, "select[name=sort]")).select_by_value("display_name")
    Select(driver.find_element(By.CSS_SELECTOR, "select[name=order]")).select_by_value("asc")

    def names(b):
        return texts_of(b, ".experiments-table td.name a")

    wait_for(driver, lambda b: names(b) == sorted(names(b)) and len(names(b)) > 2, "experiments sorted by name")
    screenshot(driver, "desktop-experiments")
    with phone(driver):
        wait_for(driver, lambda b: page_overflow(b) <= 0, "no horizontal overflow on a phone")
        screenshot(driver, "phone-experiments", full_page=True)

    experiment, _ = listed
    driver.get(f"{base}/#/experiments/details/{experiment['experiment_id']}")
    wait_for(driver, lambda b: text_of(b, "h1") == "ui-list-fixture", "the experiment page")
    assert "Runs for the list tests." in text_of(driver, ".facts")
    wait_for(driver, lambda b: len(row_names(b)) == 12, "its runs")
    screenshot(driver, "desktop-experiment-detail", full_page=True)


def test_a_refused_action_shows_the_apis_message(driver, base, api, unique):
    experiment = api.create_experiment(f"ui-actions-{unique}")
    run = api.create_run("doomed", experiment_id=experiment["experiment_id"])
    api.call("POST", f"/experiments/{experiment['experiment_id']}:archive")
    driver.get(f"{base}/#/runs/details/{run['run_id']}")
    wait_for(driver, lambda b: b.find_elements(By.CSS_SELECTOR, "button[data-action=unarchive]"), "the Unarchive button of an archived run")
    driver.find_element(By.CSS_SELECTOR, "button[data-action=unarchive]").click()
    wait_for(driver, lambda b: "FAILED_PRECONDITION" in text_of(b, ".notice.error"), "the API's refusal")
    assert "archived" in text_of(driver, ".notice.error")

    driver.find_element(By.CSS_SELECTOR, "button[data-action=terminate]").click()
    wait_for(driver, lambda b: badge(b) == "CANCELED", "terminate: PENDING → CANCELED")
    wait_for(driver, lambda b: b.find_element(By.CSS_SELECTOR, "button[data-action=retry]").is_enabled(), "Retry enabled")

    # Delete asks first; Cancel keeps the run.
    driver.find_element(By.CSS_SELECTOR, "button[data-action=delete]").click()
    wait_for(driver, lambda b: b.find_element(By.ID, "confirm").is_displayed(), "the confirmation")
    driver.find_element(By.ID, "confirm-cancel").click()
    api.call("GET", f"/runs/{run['run_id']}")
    driver.find_element(By.CSS_SELECTOR, "button[data-action=delete]").click()
    wait_for(driver, lambda b: b.find_element(By.ID, "confirm").is_displayed(), "the confirmation")
    driver.find_element(By.ID, "confirm-ok").click()
    wait_for(driver, lambda b: "/experiments/details/" in b.current_url, "back on the experiment page")
    assert api.call("GET", f"/runs/{run['run_id']}", ok=False)["code"] == 5


def test_an_unknown_run_says_so(driver, base):
    driver.get(f"{base}/#/runs/details/no-such-run")
    wait_for(driver, lambda b: "NOT_FOUND" in text_of(b, ".notice.error"), "the NOT_FOUND error")


def test_sign_in_against_a_server_with_tls_and_auth(driver, auth_server, unique):
    # The server (run.sh's second one) answers every API call without a valid bearer token with
    # 401; the page then asks for a token, keeps it in sessionStorage and sends it with every
    # call and the watch.
    experiment = auth_server.api.create_experiment(f"ui-auth-{unique}", namespace="team-a")
    first = auth_server.api.create_run("behind-auth", experiment_id=experiment["experiment_id"])
    try:
        driver.get(f"{auth_server.base}/#/runs?exp={experiment['experiment_id']}")
        wait_for(driver, lambda b: b.find_elements(By.CSS_SELECTOR, "form.signin"), "the sign-in form")
        assert "authentication required" in text_of(driver, "form.signin")
        assert driver.execute_script("return location.protocol") == "https:"
        screenshot(driver, "desktop-sign-in")

        driver.find_element(By.CSS_SELECTOR, "form.signin input[name=token]").send_keys("wrong", Keys.ENTER)
        wait_for(driver, lambda b: "not accepted" in text_of(b, "form.signin"), "the refused token")
        assert "invalid credentials" in text_of(driver, "form.signin")
        assert driver.execute_script("return sessionStorage.getItem('runledger.token')") is None

        driver.find_element(By.CSS_SELECTOR, "form.signin input[name=token]").send_keys(auth_server.token, Keys.ENTER)
        wait_rows(driver, ["behind-auth"], "the run, once signed in")
        assert driver.execute_script("return sessionStorage.getItem('runledger.token')") == auth_server.token
        # The watch is authenticated too: it goes live, and a change made elsewhere shows up.
        wait_for(driver, lambda b: b.find_element(By.ID, "live").get_attribute("data-state") == "live", "the watch stream, signed in")
        auth_server.api.report(first["run_id"], "RUNNING")
        wait_for(driver, lambda b: "RUNNING" in b.find_element(By.CSS_SELECTOR, f"tr[data-run-id='{first['run_id']}']").text, "the live update, signed in")
        screenshot(driver, "desktop-signed-in")

        driver.find_element(By.ID, "sign-out").click()
        wait_for(driver, lambda b: b.find_elements(By.CSS_SELECTOR, "form.signin"), "the sign-in form after signing out")
        assert driver.execute_script("return sessionStorage.getItem('runledger.token')") is None
    finally:
        driver.execute_script("sessionStorage.clear()")


# The SSE parser on its own, in the page: events split across chunks at awkward places (inside
# a CRLF, inside a multi-byte character), comments, multi-line data, ids.
PARSE_SSE = """
const done = arguments[arguments.length - 1];
import('/ui/watch.js').then(async ({readEvents}) => {
  const bytes = new TextEncoder().encode(
    ': keep-alive\\r\\n\\r\\nevent: CREATED\\r\\nid: 1\\r\\ndata: {"n":"é"}\\r\\n\\r\\n' +
    'event: UPDATED\\nid: 2\\ndata: line one\\ndata: line two\\n\\n' +
    'data:no space\\rid:3\\r\\r');
  const cuts = [13, 14, 40, 41, 42, 60, bytes.length];
  let at = 0;
  const body = new ReadableStream({
    pull(controller) {
      const end = cuts.shift();
      if (end === undefined) { controller.close(); return; }
      controller.enqueue(bytes.slice(at, end));
      at = end;
    },
  });
  const events = [];
  const comments = [];
  await readEvents(body, (e) => events.push(e), (c) => comments.push(c));
  done({events, comments});
}).catch((e) => done({error: String(e)}));
"""


def test_the_sse_reader_splits_events_as_the_spec_says(driver, base):
    driver.get(f"{base}/#/experiments")
    result = driver.execute_async_script(PARSE_SSE)
    assert "error" not in result, result
    assert result["comments"] == [" keep-alive"]
    assert result["events"] == [
        {"type": "CREATED", "id": "1", "data": '{"n":"é"}'},
        {"type": "UPDATED", "id": "2", "data": "line one\nline two"},
        {"type": "message", "id": "3", "data": "no space"},
    ]


# The first watch stream the page opens delivers one event with id 7 and then drops; the
# page must reconnect sending Last-Event-ID: 7, and list again.
DROP_FIRST_WATCH = """
(() => {
  const realFetch = window.fetch.bind(window);
  window.__watches = [];
  window.__lists = 0;
  window.fetch = (input, init) => {
    const url = String(input instanceof Request ? input.url : input);
    if (url.includes('/runs:watch')) {
      const headers = new Headers((init && init.headers) || {});
      window.__watches.push(headers.get('Last-Event-ID'));
      if (window.__watches.length === 1) {
        const body = 'id: 7\\nevent: UPDATED\\ndata: {"type":"UPDATED","run":{"run_id":"elsewhere"}}\\n\\n';
        return Promise.resolve(new Response(body, {headers: {'Content-Type': 'text/event-stream'}}));
      }
    } else if (url.includes('/apis/v2beta1/runs/')) {
      window.__lists += 1;
    }
    return realFetch(input, init);
  };
})();
"""


def test_a_dropped_watch_reconnects_with_last_event_id_and_reads_the_run_again(driver, base, api):
    run = api.create_run("reconnecting")
    script = driver.execute_cdp_cmd("Page.addScriptToEvaluateOnNewDocument", {"source": DROP_FIRST_WATCH})
    try:
        driver.get(f"{base}/#/runs/details/{run['run_id']}")
        driver.refresh()
        wait_for(driver, lambda b: len(b.execute_script("return window.__watches || []")) >= 2, "a second watch request")
        assert driver.execute_script("return window.__watches")[:2] == [None, "7"]
        wait_for(driver, lambda b: b.find_element(By.ID, "live").get_attribute("data-state") == "live", "live again")
        # Read on load, on the first stream and again on the second.
        wait_for(driver, lambda b: b.execute_script("return window.__lists") >= 3, "the run read again after reconnecting")
        api.report(run["run_id"], "RUNNING")
        wait_for(driver, lambda b: badge(b) == "RUNNING", "live updates on the new stream")
    finally:
        driver.execute_cdp_cmd("Page.removeScriptToEvaluateOnNewDocument", {"identifier": script["identifier"]})
