"""The monitor page in a real headless Chromium (Debian's chromium + chromium-driver, via selenium):
it loads, shows a MIG instance with its pod, a pod's request, GPU and full reason, its history
charts, and updates as the cluster changes. Skipped only where no browser is installed and we are
not in CI (.ci/run installs it and sets DYNAMIG_REQUIRE_BROWSER)."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from test_extender_support import filter_body, memory_store, pod_manifest

from extender import ExtenderConfig, ServerHandle, create_app, serve_in_thread
from models.store import InMemoryStore

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
DRIVER = shutil.which("chromedriver")


def _require_browser() -> None:
    missing = [name for name, path in (("chromium", CHROMIUM), ("chromedriver (chromium-driver)", DRIVER)) if not path]
    try:
        import selenium  # noqa: F401
    except ImportError:
        missing.append("selenium (pip install -e '.[dev]')")
    if not missing:
        return
    why = f"headless browser test needs {', '.join(missing)}"
    if os.environ.get("DYNAMIG_REQUIRE_BROWSER") or os.environ.get("CI"):
        pytest.fail(why + " (required in CI: .ci/run installs chromium and chromium-driver with apt-get)")
    pytest.skip(why + " (apt-get install chromium chromium-driver)")


@pytest.fixture(scope="module")
def store() -> InMemoryStore:
    return memory_store()


@pytest.fixture(scope="module")
def server(store: InMemoryStore) -> Iterator[ServerHandle]:
    h = serve_in_thread(create_app(store, ExtenderConfig(identity="browser-test")), "127.0.0.1", 0)
    yield h
    h.stop()


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    _require_browser()
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    opts = webdriver.ChromeOptions()
    opts.binary_location = str(CHROMIUM)
    for a in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--window-size=1400,1000",
              "--no-first-run", "--disable-extensions"):
        opts.add_argument(a)
    driver = webdriver.Chrome(service=Service(executable_path=str(DRIVER)), options=opts)
    driver.set_page_load_timeout(30)
    yield driver
    driver.quit()


def place(http: httpx.Client, store: InMemoryStore, name: str, mem: str,
          nodes: tuple[str, ...] = ("mig-0", "mig-1")) -> dict[str, Any]:
    pod = store.create_pod(pod_manifest(name, mem=mem))
    return dict(http.post("/filter", json=filter_body(pod, list(nodes))).json())


def wait_for(browser: Any, css: str, timeout: float = 20) -> Any:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as ec
    from selenium.webdriver.support.ui import WebDriverWait

    return WebDriverWait(browser, timeout).until(ec.presence_of_element_located((By.CSS_SELECTOR, css)))


def test_page_shows_a_mig_instance_with_its_pod_and_updates(browser: Any, server: ServerHandle,
                                                            store: InMemoryStore) -> None:
    from selenium.webdriver.common.by import By

    with httpx.Client(base_url=server.url, timeout=10) as http:
        assert place(http, store, "first", "3000")["NodeNames"]
        browser.get(f"{server.url}/monitor")
        seg = wait_for(browser, '.seg.held[data-pod="ml/first"]')
        assert seg.get_attribute("data-profile") and seg.get_attribute("data-profile") in seg.text
        assert "first" in seg.text
        assert "held by ml/first" in seg.get_attribute("title")
        assert "live" in browser.find_element(By.ID, "status").text
        legend = browser.find_element(By.ID, "legend").text
        assert "MIG instance held by a pod" in legend and "hami-core share" in legend
        row = wait_for(browser, '#pods tr[data-pod="ml/first"]')
        cells = [td.text for td in row.find_elements(By.TAG_NAME, "td")]
        assert cells[1] == "1× 3000 MiB" and cells[2] in ("mig-0", "mig-1")
        assert cells[3].startswith(cells[2] + " GPU ")
        # the history chart has drawn its series
        wait_for(browser, '#chart-util polyline[data-series="memory_pct"]')
        rev = int(browser.find_element(By.TAG_NAME, "body").get_attribute("data-revision"))

        # the page follows the cluster: a second pod appears without a reload, and a pod no GPU can
        # hold shows its reason in full
        assert place(http, store, "second", "9000")["NodeNames"]
        out = place(http, store, "giant", "500000", ("mig-0", "mig-1", "share-0"))
        assert not out["NodeNames"]
        wait_for(browser, '.seg.held[data-pod="ml/second"]')
        assert int(browser.find_element(By.TAG_NAME, "body").get_attribute("data-revision")) > rev
        reasons = [td.text for td in browser.find_elements(By.CSS_SELECTOR, "#unplaceable td.reason")]
        want = next(iter(out["FailedNodes"].values()))
        assert want in reasons and "larger than any GPU in the cluster" in want
        errors = [e for e in browser.get_log("browser") if e.get("level") == "SEVERE"]
        assert not errors, errors


def test_history_keeps_one_sample_per_period_and_counts_pods_holding_gpus() -> None:
    from fastapi.testclient import TestClient

    from extender.monitor import History, Sample

    store = memory_store()
    app = create_app(store, ExtenderConfig())
    ext = app.state.extender
    with TestClient(app) as http:
        pod = store.create_pod(pod_manifest("held", mem="3000"))
        assert http.post("/filter", json=filter_body(pod, ["mig-0"])).json()["NodeNames"] == ["mig-0"]
        giant = store.create_pod(pod_manifest("giant", mem="500000"))
        assert not http.post("/filter", json=filter_body(giant, ["mig-0", "mig-1"])).json()["NodeNames"]
    h = History(ext, every=10.0, keep_s=30.0)
    h.sample_now()  # what the background sampler records: no page involved
    s = h.samples()[-1]
    assert s.running == 1 and s.pending == 1 and s.memory_pct > 0 and s.busy_gpus == 1
    for t in (100.0, 101.0, 105.0, 111.0, 112.0, 200.0, 300.0, 400.0, 500.0):
        h.record(Sample(t, 0.0, 0.0, 0, 1, 0, 0))
    ts = [x.t for x in h.samples()]
    assert ts == sorted(ts) and len(ts) <= 4 and ts[-1] == 500.0  # bounded to keep_s / every + 1
    h2 = History(ext, every=10.0)
    for t in (100.0, 101.0, 105.0, 111.0, 112.0):
        h2.record(Sample(t, 0.0, 0.0, 0, 1, 0, 0))
    assert [x.t for x in h2.samples()] == [100.0, 111.0, 112.0]  # >= 10 s apart but the newest
