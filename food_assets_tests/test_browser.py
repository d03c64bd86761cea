"""Real headless Chromium against the Gradio demo and the Dagster UI (Selenium, loopback only).

Needs Debian's `chromium` and `chromium-driver` (`/usr/bin/chromium`, `/usr/bin/chromedriver`);
without them these tests skip, except under CI (`CI=true`), where they must run and so fail.
Selenium is pointed at the chromedriver binary explicitly, so selenium-manager never downloads.

All tests share one tiny materialization (`food_images_raw`, `food_splits`, `model_custom_cnn`,
`evaluation_custom_cnn`, `gradcam_custom_cnn`, `onnx_custom_cnn`, every other model and evaluation
declining at once, and `leaderboard`, with their checks) into a persistent SQLite instance in a
temporary DAGSTER_HOME: the session's `graph_run` uses an ephemeral in-memory instance, which a
separate `dagster dev` process cannot read. The Dagster tests share one `dagster dev` (the webserver
and the daemon, whose freshness daemon evaluates the freshness policies) over that instance.

Screenshots go to each test's tmp_path; with FOOD_ASSETS_SAVE_SCREENSHOTS=1 they are also copied
to docs/screenshots/.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from food_assets_tests.images import noisy_jpeg
from food_assets_tests.leaderboard_run import leaderboard_run_config, leaderboard_selection

CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")
SCREENSHOT_DIR = Path(__file__).resolve().parents[1] / "docs" / "screenshots"
MODEL = "custom_cnn"
#: Up to the leaderboard (it sets the champion): only MODEL trains, the others decline at once.
SUBSET = leaderboard_selection(MODEL, f"onnx_{MODEL}", f"gradcam_{MODEL}")
CHROME_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--window-size=1300,1000",
]

pytestmark = [pytest.mark.browser, pytest.mark.slow]


def _require_browser() -> None:
    missing = [str(p) for p in (CHROMIUM, CHROMEDRIVER) if not p.exists()]
    if not missing:
        return
    reason = f"browser tests need {', '.join(missing)}: apt-get install -y chromium chromium-driver"
    if os.environ.get("CI") == "true":
        pytest.fail(f"CI must run the browser tests; {reason}")
    pytest.skip(reason)


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _screenshot(driver: Any, tmp_path: Path, name: str) -> Path:
    path = tmp_path / f"{name}.png"
    assert driver.save_screenshot(str(path)), f"could not save {path}"
    if os.environ.get("FOOD_ASSETS_SAVE_SCREENSHOTS") == "1":
        SCREENSHOT_DIR.mkdir(parents=True, exist_ok=True)
        shutil.copy2(path, SCREENSHOT_DIR / path.name)
    return path


def _wait(driver: Any, condition: Callable[[Any], Any], what: str, timeout: float = 60) -> Any:
    from selenium.common.exceptions import TimeoutException
    from selenium.webdriver.support.ui import WebDriverWait

    try:
        return WebDriverWait(driver, timeout, poll_frequency=0.25).until(condition)
    except TimeoutException:
        body = driver.find_element("tag name", "body").text[-1500:]
        pytest.fail(f"timed out after {timeout:g} s waiting for {what}; page ends with:\n{body}")


def _wait_text(driver: Any, needles: list[str], timeout: float = 60) -> str:
    def all_there(d: Any) -> str | bool:
        text = d.find_element("tag name", "body").text
        return text if all(n in text for n in needles) else False

    return _wait(driver, all_there, f"{needles} on {driver.current_url}", timeout)


@pytest.fixture(scope="module")
def browser(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    _require_browser()
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for flag in CHROME_FLAGS:
        options.add_argument(flag)
    options.add_argument(f"--user-data-dir={tmp_path_factory.mktemp('chromium-profile')}")
    driver = webdriver.Chrome(service=Service(str(CHROMEDRIVER)), options=options)
    driver.set_page_load_timeout(60)
    try:
        yield driver
    finally:
        driver.quit()


@pytest.fixture(scope="module")
def materialized(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A tiny real run (with its asset checks) recorded in a SQLite DAGSTER_HOME."""
    _require_browser()  # do not spend half a minute training when the tests will skip
    import dagster as dg

    from food_assets.definitions import build_definitions, default_resources
    from food_assets.defs.resources import QualityGates

    root = tmp_path_factory.mktemp("dagster")
    home, data_dir = root / "home", root / "data"
    home.mkdir()
    # As the repository's dagster.yaml: freshness evaluated (by `dagster dev`'s daemon).
    (home / "dagster.yaml").write_text(
        "telemetry:\n  enabled: false\nfreshness:\n  enabled: true\n"
    )
    resources = default_resources(str(data_dir))
    # Two epochs at 48 px leave the model near chance: gate nothing (as graph_run does).
    resources["quality"] = QualityGates(accuracy={"sample/*": 0.0})
    defs = build_definitions(resources)
    run_config = leaderboard_run_config(MODEL, SUBSET)
    with dg.DagsterInstance.from_config(str(home)) as instance:
        result = dg.materialize(
            [*defs.assets, *(defs.asset_checks or [])],
            selection=dg.AssetSelection.assets(*SUBSET),  # checks of these assets included
            resources=resources,
            run_config=run_config,
            instance=instance,
        )
    assert result.success
    return {"home": home, "data_dir": data_dir}


# -- (a) the Gradio demo ---------------------------------------------------------------------


@pytest.fixture
def demo_url(materialized: dict[str, Path]) -> Iterator[str]:
    from food_assets.demo import build_app

    # 0.5 MB: small enough that the test can upload a file over the limit in no time.
    app = build_app(data_dir=materialized["data_dir"], max_upload_mb=0.5)
    port = _free_port()
    app.launch(prevent_thread_lock=True, server_name="127.0.0.1", server_port=port, quiet=True)
    try:
        yield f"http://127.0.0.1:{port}/"
    finally:
        app.close()


def _upload(driver: Any, path: Path) -> None:
    from selenium.webdriver.common.by import By

    clear = driver.find_elements(By.CSS_SELECTOR, "#photo-upload button[aria-label='Clear']")
    if clear:
        clear[0].click()
    file_input = _wait(
        driver,
        lambda d: d.find_element(By.CSS_SELECTOR, "#photo-upload input[type=file]"),
        "the file input",
    )
    file_input.send_keys(str(path))


def _overlay_images(driver: Any) -> list[Any]:
    from selenium.webdriver.common.by import By

    return [
        i for i in driver.find_elements(By.CSS_SELECTOR, "#gradcam img") if i.get_attribute("src")
    ]


def _classes_shown(driver: Any) -> list[str]:
    from selenium.webdriver.common.by import By

    rows = driver.find_elements(By.CSS_SELECTOR, "#top3 [data-testid$='-confidence-set'] dt")
    return [r.text for r in rows]


RUNTIMES = ("ONNX Runtime", "OpenVINO")


def test_demo_in_chromium(browser, demo_url: str, materialized, tmp_path: Path) -> None:
    from selenium.common.exceptions import WebDriverException
    from selenium.webdriver.common.by import By

    from food_assets.demo import example_images
    from food_assets.ml.models.bundle import load_card

    card = load_card(materialized["data_dir"] / "artifacts" / f"model_{MODEL}" / "bundle")
    browser.get(demo_url)
    _wait_text(browser, ["what food is this?", MODEL, "Examples"])

    # A good photo: three classes and the Grad-CAM overlay.
    _upload(browser, example_images()[0])
    _wait(browser, lambda d: len(_classes_shown(d)) == 3, "three classes in the label")
    overlay = _wait(browser, _overlay_images, "the Grad-CAM overlay image")
    assert set(_classes_shown(browser)) <= set(card.class_names)
    _wait(browser, lambda d: overlay[0].get_attribute("naturalWidth") not in (None, "0"), "pixels")
    _wait(
        browser,
        lambda d: (
            # the serving rule picks the runtime on this machine (ONNX Runtime or OpenVINO)
            any(r in (t := d.find_element(By.ID, "model-info").text) for r in RUNTIMES)
            and "Precision: auto:" in t
            and "Test top-1 accuracy" in t
        ),
        "the model info",
    )
    _screenshot(browser, tmp_path, "demo_prediction")

    # Not an image: the message in the page, no classes, and the app still answers afterwards.
    bad = tmp_path / "notes.jpg"
    bad.write_text("this is not a photo")
    _upload(browser, bad)
    _wait_text(browser, ["Not a usable image", "notes.jpg"])
    # The toast may show the text before the message box re-renders: wait for the box itself.
    _wait(
        browser,
        lambda d: "Not a usable image" in d.find_element(By.ID, "demo-message").text,
        "the message box",
    )
    assert _classes_shown(browser) == []
    # A toast element can exist before its text renders: wait for one that says it.
    _wait(
        browser,
        lambda d: [
            t
            for t in d.find_elements(By.CSS_SELECTOR, "[data-testid=toast-body]")
            if "Not a usable image" in t.text
        ],
        "the warning toast",
    )
    _screenshot(browser, tmp_path, "demo_bad_file")
    for close in browser.find_elements(By.CSS_SELECTOR, "[data-testid=toast-close]"):
        try:
            close.click()  # so that the next screenshot shows only its own message
        except WebDriverException:
            pass  # the toast timed out meanwhile

    # Over the upload limit (0.5 MB here).
    big = noisy_jpeg(tmp_path / "big.jpg", size=(1000, 800), quality=95)
    assert big.stat().st_size > 0.5 * 1024 * 1024
    _upload(browser, big)
    _wait_text(browser, ["File too large", "the limit is 0.5 MB"])
    _screenshot(browser, tmp_path, "demo_too_large")

    # A bundled example, picked with a click: the page answers again, with no message.
    example = example_images()[1].name
    browser.find_element(By.XPATH, f"//button[normalize-space()='{example}']").click()
    _wait(browser, lambda d: len(_classes_shown(d)) == 3, "three classes after the bad files")
    _wait_text(browser, [example])
    assert browser.find_element(By.ID, "demo-message").text.strip() == ""


def test_demo_without_a_model_in_chromium(browser, tmp_path: Path) -> None:
    from food_assets.demo import build_app

    app = build_app(data_dir=tmp_path / "empty")
    port = _free_port()
    app.launch(prevent_thread_lock=True, server_name="127.0.0.1", server_port=port, quiet=True)
    try:
        browser.get(f"http://127.0.0.1:{port}/")
        _wait_text(browser, ["No trained model found", "make run", "food-assets train"])
        _screenshot(browser, tmp_path, "demo_no_model")
    finally:
        app.close()


# -- (b) the Dagster UI ----------------------------------------------------------------------


def _graphql(base: str, query: str, timeout: float = 30) -> dict:
    req = urllib.request.Request(
        f"{base}/graphql",
        data=json.dumps({"query": query}).encode(),
        headers={"Content-Type": "application/json"},
    )
    with urllib.request.urlopen(req, timeout=timeout) as resp:
        body = json.loads(resp.read())
    assert "errors" not in body, body
    return body["data"]


LOCATION_QUERY = "{ workspaceOrError { ... on Workspace { locationEntries { name loadStatus } } } }"


@pytest.fixture(scope="module")
def dagster_ui(
    materialized: dict[str, Path], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[str]:
    """`dagster dev` (webserver and daemon, one code server) over the materialized instance,
    stopped (group-killed) at the end. The freshness daemon runs every 2 s instead of 30 s."""
    port = _free_port()
    exe = Path(sys.executable).with_name("dagster")
    env = {
        **os.environ,
        "DAGSTER_HOME": str(materialized["home"]),
        "FOOD_ASSETS_DATA_DIR": str(materialized["data_dir"]),
        "FRESHNESS_DAEMON_INTERVAL_SECONDS": "2",
    }
    cwd = tmp_path_factory.mktemp("dagster_dev")
    log_path = cwd / "dagster_dev.log"
    log = log_path.open("wb")
    cmd = [str(exe), "dev", "-m", "food_assets.definitions", "-h", "127.0.0.1", "-p", str(port)]
    # Its own session: the webserver, daemon and code server it spawns stop with it, and only those.
    proc = subprocess.Popen(
        cmd, env=env, cwd=cwd, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
    )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 180  # the code server imports torch and Dagster: ~15 s
        while True:
            if proc.poll() is not None:
                tail = log_path.read_text()[-2000:]
                pytest.fail(f"dagster dev exited ({proc.returncode}):\n{tail}")
            try:
                entries = _graphql(base, LOCATION_QUERY, timeout=5)["workspaceOrError"]
                if [e["loadStatus"] for e in entries["locationEntries"]] == ["LOADED"]:
                    break
            except (urllib.error.URLError, ConnectionError, TimeoutError, KeyError):
                pass
            if time.monotonic() > deadline:
                pytest.fail("dagster dev did not load the code location in 180 s")
            time.sleep(1)
        yield base
    finally:
        _stop(proc)
        log.close()


def _stop(proc: subprocess.Popen) -> None:
    if proc.poll() is not None:
        return
    os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout=20)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)


DEFINITIONS_QUERY = """{
  repositoriesOrError { ... on RepositoryConnection { nodes {
    jobs { name } schedules { name cronSchedule }
  } } }
  assetNodes { assetKey { path } assetChecksOrError { ... on AssetChecks { checks { name } } } }
}"""


def _loaded(driver: Any) -> bool:
    # Dagster fills asset nodes and the status panel in after the page itself.
    return "Loading" not in driver.find_element("tag name", "body").text


def test_dagster_ui_in_chromium(browser, dagster_ui: str, tmp_path: Path) -> None:
    from food_assets.defs.schedules import REEVALUATE_CRON

    # Definitions, through the webserver's GraphQL API: jobs, schedule, asset checks.
    data = _graphql(dagster_ui, DEFINITIONS_QUERY)
    (repo,) = data["repositoriesOrError"]["nodes"]
    assert {"train_all", "reevaluate"} <= {j["name"] for j in repo["jobs"]}
    assert {"name": "nightly_reevaluation", "cronSchedule": REEVALUATE_CRON} in repo["schedules"]
    checks = {
        "/".join(n["assetKey"]["path"]): {c["name"] for c in n["assetChecksOrError"]["checks"]}
        for n in data["assetNodes"]
    }
    assert {"every_class_in_every_split", "no_image_in_two_splits"} <= checks["food_splits"]
    assert "accuracy_above_floor" in checks[f"evaluation_{MODEL}"]
    # A missing asset is a failure (a `.get` default here once passed for any missing node).
    assert "onnx_parity" in checks[f"onnx_{MODEL}"]
    # Every check the code location defines is shown, on its asset, and no other.
    # Breakage tried: the onnx_<name> checks dropped from the served location (fails above).
    from food_assets.definitions import build_definitions

    expected: dict[str, set[str]] = {}
    for key in build_definitions().resolve_asset_graph().asset_check_keys:
        expected.setdefault(key.asset_key.to_user_string(), set()).add(key.name)
    assert {k: v for k, v in checks.items() if v} == expected

    # Dagster shows a one-time "join the community" dialog over the first page; mark it seen.
    browser.get(f"{dagster_ui}/overview")
    browser.execute_script("window.localStorage.setItem('communityNux', JSON.stringify('1'));")

    browser.get(f"{dagster_ui}/asset-groups")
    _wait_text(browser, ["Global asset lineage", "data", "models", "evaluation"])
    _screenshot(browser, tmp_path, "dagster_asset_graph")

    browser.get(f"{dagster_ui}/assets/evaluation_{MODEL}?view=lineage&lineageScope=upstream")
    _wait_text(browser, ["food_splits", f"model_{MODEL}", f"evaluation_{MODEL}", "Materialized"])
    _wait(browser, _loaded, "the lineage nodes to finish loading")
    _screenshot(browser, tmp_path, "dagster_lineage")

    browser.get(f"{dagster_ui}/assets/evaluation_{MODEL}")
    _wait_text(browser, ["Metadata", "acc_top1", "acc_top5", "macro_f1", "temperature"])
    _wait_text(browser, ["Latest materialization", "Latest check results"])
    _wait(browser, _loaded, "the asset page to finish loading")
    metric = browser.find_element("xpath", "//tr[td[1][normalize-space()='acc_top1']]")
    browser.execute_script("arguments[0].scrollIntoView({block: 'center'});", metric)
    _screenshot(browser, tmp_path, "dagster_evaluation_asset")

    browser.get(f"{dagster_ui}/assets/food_splits?view=checks")
    _wait_text(browser, ["every_class_in_every_split", "no_image_in_two_splits", "Passed"])
    _screenshot(browser, tmp_path, "dagster_asset_checks")

    browser.get(f"{dagster_ui}/jobs")
    _wait_text(browser, ["train_all", "reevaluate"])
    _screenshot(browser, tmp_path, "dagster_jobs")

    browser.get(f"{dagster_ui}/automation")
    _wait_text(browser, ["nightly_reevaluation"])
    _screenshot(browser, tmp_path, "dagster_schedules")


FRESHNESS_QUERY = """{ assetNodeOrError(assetKey: {path: ["%s"]}) { ... on AssetNode {
  freshnessStatusInfo { freshnessStatus } } } }"""


def _freshness(base: str, asset: str) -> str | None:
    node = _graphql(base, FRESHNESS_QUERY % asset)["assetNodeOrError"]
    return (node.get("freshnessStatusInfo") or {}).get("freshnessStatus")


def _metadata_value(driver: Any, key: str) -> str:
    """The value cell of the asset page's metadata row `key` ('' while it is not shown)."""
    from selenium.webdriver.common.by import By

    rows = driver.find_elements(By.XPATH, f"//tr[td[1][normalize-space()='{key}']]")
    return rows[0].find_elements(By.TAG_NAME, "td")[-1].text.strip() if rows else ""


def test_dagster_ui_shows_the_champion_and_freshness(
    browser, dagster_ui: str, materialized, tmp_path: Path
) -> None:
    """The `leaderboard` page shows which model is the MLflow champion (its metadata rows
    `champion` and `champion_uri`) and the state of its freshness policy as the daemon that
    `dagster dev` runs evaluated it ("Passing": materialized minutes ago, 26 h warn window).

    Breakage tried: the test's instance with `freshness: enabled: false` (the daemon never
    evaluates the policy: the status stays UNKNOWN, fails); `tracking.set_champion` replaced by a
    no-op (no `champion` rows on the page: fails)."""
    from selenium.webdriver.common.by import By

    from food_assets.layout import LEADERBOARD_ASSET

    # The freshness daemon's verdict, through GraphQL first: it runs every 2 s here.
    deadline = time.monotonic() + 120
    while (state := _freshness(dagster_ui, LEADERBOARD_ASSET)) != "HEALTHY":
        if time.monotonic() > deadline:
            pytest.fail(f"the leaderboard's freshness is {state!r}, not HEALTHY, after 120 s")
        time.sleep(1)

    browser.get(f"{dagster_ui}/overview")
    browser.execute_script("window.localStorage.setItem('communityNux', JSON.stringify('1'));")
    browser.get(f"{dagster_ui}/assets/{LEADERBOARD_ASSET}")
    _wait_text(browser, ["Metadata", "champion_uri", "Freshness policy"])
    _wait(browser, _loaded, "the asset page to finish loading")
    _wait(browser, lambda d: _metadata_value(d, "champion") == MODEL, "the champion row")
    uri = f"models:/food_assets.{MODEL}@champion"
    assert _metadata_value(browser, "champion_uri") == uri
    assert "Passing" in _wait_text(browser, ["Passing"])
    section = browser.find_element(By.XPATH, "//*[normalize-space()='Freshness policy']/..")
    assert "Passing" in section.text, section.text
    champion_row = browser.find_element(By.XPATH, "//tr[td[1][normalize-space()='champion']]")
    browser.execute_script("arguments[0].scrollIntoView({block: 'center'});", champion_row)
    _screenshot(browser, tmp_path, "dagster_leaderboard_champion")


def _show_picture(driver: Any, key: str) -> Any:
    """Open the metadata row `key`'s Markdown (a picture is too long to show inline: Dagster
    puts it behind "[Show Markdown]") and wait for its image to be decoded; returns the <img>."""
    from selenium.webdriver.common.by import By

    row = _wait(
        driver,
        lambda d: d.find_elements(By.XPATH, f"//tr[td[1][normalize-space()='{key}']]"),
        f"the metadata row {key}",
    )[0]
    driver.execute_script("arguments[0].scrollIntoView({block: 'center'});", row)
    buttons = row.find_elements(By.XPATH, ".//*[normalize-space()='[Show Markdown]']")
    assert buttons, row.text
    buttons[-1].click()  # the innermost element with that text

    def decoded(d: Any) -> Any:
        for img in d.find_elements(By.CSS_SELECTOR, "img[src^='data:image/']"):
            if d.execute_script("return arguments[0].complete && arguments[0].naturalWidth", img):
                return img
        return False

    return _wait(driver, decoded, f"the picture of {key} to be decoded")


def test_dagster_ui_shows_the_pictures(browser, dagster_ui: str, tmp_path: Path) -> None:
    """The evaluation's page shows its confusion matrix and the Grad-CAM page a strip of tiles,
    as pictures decoded by the browser (ADR 0024), not as paths on the server's disk.

    Breakage tried: `picture` returning {} (no `confusion_matrix_preview` row: fails). Would
    also fail (not tried) if Dagster's Markdown sanitizer dropped `data:` sources (no decoded
    <img>)."""
    from selenium.webdriver.common.keys import Keys

    browser.get(f"{dagster_ui}/overview")
    browser.execute_script("window.localStorage.setItem('communityNux', JSON.stringify('1'));")
    for asset, key, shot in (
        (f"evaluation_{MODEL}", "confusion_matrix_preview", "dagster_confusion_matrix"),
        (f"gradcam_{MODEL}", "gradcam_tiles_preview", "dagster_gradcam_tiles"),
    ):
        browser.get(f"{dagster_ui}/assets/{asset}")
        _wait_text(browser, ["Metadata", key])
        _wait(browser, _loaded, f"the {asset} page to finish loading")
        img = _show_picture(browser, key)
        width = browser.execute_script("return arguments[0].naturalWidth", img)
        assert width >= 100, width
        assert "full size:" in _wait_text(browser, ["full size:"])
        _screenshot(browser, tmp_path, shot)
        browser.find_element("tag name", "body").send_keys(Keys.ESCAPE)
