"""The built course site in headless Chromium, page by page: every figure loads, no request fails nor leaves this
machine (the browser's own request for an icon included), the maths is typeset by the MathJax shipped with the site
(sphinx-mathjax-offline), and the search page quotes formulas as text (``book/_ext/search_snippets.py``).

The site is built once for the run (``built_site`` in ``conftest.py``) and served on localhost. The browser is the
one of ``conftest.chromium`` (Debian's chromium and chromedriver, every host name but this machine's unresolvable),
started once for the module with Chrome's network log turned on, so that each request of each page is seen: the
page itself, its scripts, styles, fonts and images.
"""

from __future__ import annotations

import functools
import json
import re
import shutil
import threading
import time
from dataclasses import dataclass
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import urlsplit

import pytest

#: Figures the chapters show (drawn by tools/make_figures.py): each must be among the images loaded somewhere.
FIGURES = {"sample.png", "augmentation.png", "class_histogram.png", "focal_term.png", "unet_diagram.png",
           "prediction.png"}
#: Pages that must hold maths (the chapters that define the metrics and the losses, and the notation page).
MATHS_PAGES = {"chapters/metrics.html", "chapters/losses.html", "notation.html"}
#: Folders of the build that hold no page of the site (templates, copies of the sources, downloads).
NOT_PAGES = {"_static", "_sources", "_downloads", "_images"}
#: URL schemes that go over the network; the others (``data:``, ``blob:``, the browser's own ``chrome:`` pages...)
#: never leave the browser.
NETWORK = ("http", "https", "ws", "wss", "ftp")

#: JavaScript (asynchronous): load every image now (a lazy one too), wait for them, for the fonts and for MathJax's
#: first typesetting, then describe the page.
SETTLE = """
const done = arguments[arguments.length - 1];
const images = Array.from(document.images);
for (const img of images) img.loading = "eager";
const loaded = images.map((img) => img.complete ? null
  : new Promise((resolve) => { img.addEventListener("load", resolve); img.addEventListener("error", resolve); }));
const mathjax = window.MathJax && window.MathJax.startup ? window.MathJax.startup.promise : null;
const timeout = new Promise((resolve) => setTimeout(resolve, 30000));
Promise.race([Promise.all([...loaded, document.fonts.ready, mathjax]), timeout]).then(() => {
  const article = document.querySelector("article") || document.body;
  done({
    images: images.map((img) => [img.getAttribute("src"), img.complete, img.naturalWidth]),
    mathjax: Boolean(mathjax),
    maths: document.querySelectorAll(".math").length,
    typeset: document.querySelectorAll("mjx-container").length,
    errors: document.querySelectorAll("mjx-merror").length,
    text: article.innerText,
  });
}).catch((error) => done({error: String(error)}));
"""


@dataclass
class Visit:
    """What one page did in the browser."""

    images: list[tuple[str, bool, int]]  # (src, complete, naturalWidth) of each <img>
    requests: list[str]  # every URL the page asked for, itself included
    failed: list[str]  # "URL: reason" of each request that failed or answered an HTTP error
    mathjax: bool  # MathJax was loaded and ran
    maths: int  # elements holding TeX in the HTML (class "math")
    typeset: int  # <mjx-container> elements after typesetting
    errors: int  # formulas MathJax could not typeset (<mjx-merror>)
    text: str  # the text of the article as shown


class _QuietHandler(SimpleHTTPRequestHandler):
    def log_message(self, format, *args) -> None:  # noqa: A002 - the signature of the base class
        pass


def site_pages(html: Path) -> list[str]:
    """The pages of a built site: every ``.html`` file, relative to its root, but those of the build's own folders."""
    return sorted(path.relative_to(html).as_posix() for path in html.rglob("*.html")
                  if not NOT_PAGES & set(path.relative_to(html).parts))


def network_problems(events: list[dict], origin: str) -> tuple[list[str], list[str]]:
    """The URLs requested and the failures among them, from Chrome's network log (``Network.*`` events).

    Args:
        events: the ``message`` objects of the log, in order.
        origin: ``scheme://host:port`` of the site; a request anywhere else is a failure even if it was answered.

    Returns:
        (every URL requested over the network, ``"URL: reason"`` for each that went elsewhere, failed or got an
        HTTP error).
    """
    urls: dict[str, str] = {}
    failed = []
    for event in events:
        method, params = event.get("method"), event.get("params", {})
        if method == "Network.requestWillBeSent":
            url = params["request"]["url"]
            urls[params["requestId"]] = url
            if urlsplit(url).scheme in NETWORK and not url.startswith(origin + "/"):
                failed.append(f"{url}: not this site")
        elif method == "Network.loadingFailed":
            url = urls.get(params["requestId"], f"request {params['requestId']} (not started by this page)")
            failed.append(f"{url}: {params.get('errorText')}")
        elif method == "Network.responseReceived" and params["response"]["status"] >= 400:
            failed.append(f"{params['response']['url']}: HTTP {params['response']['status']}")
    return [url for url in urls.values() if urlsplit(url).scheme in NETWORK], sorted(set(failed))


@pytest.fixture(scope="module")
def site_url(built_site: Path):
    """The built site on an HTTP server on localhost (any free port): its address, with a final slash."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(_QuietHandler, directory=str(built_site)))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


@pytest.fixture(scope="module")
def logging_chromium(tmp_path_factory):
    """Headless Chromium as ``conftest.chromium`` starts it (this machine only), with its network log on."""
    from tests.course import require

    browser = next(filter(None, map(shutil.which, ("chromium", "chromium-browser", "google-chrome"))), None)
    driver_path = shutil.which("chromedriver")
    require(browser is not None and driver_path is not None,
            "Chromium and chromedriver are needed (Debian: apt-get install chromium chromium-driver)")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    profile = tmp_path_factory.mktemp("chromium-profile")
    options = webdriver.ChromeOptions()
    options.binary_location = browser
    for argument in ("--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                     "--disable-background-networking", "--disable-component-update", "--no-first-run",
                     "--window-size=1280,1000", f"--user-data-dir={profile}",
                     "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE localhost, EXCLUDE 127.0.0.1"):
        options.add_argument(argument)
    options.set_capability("goog:loggingPrefs", {"performance": "ALL"})
    driver = webdriver.Chrome(service=Service(driver_path), options=options)
    driver.set_page_load_timeout(60)
    driver.set_script_timeout(60)
    drain_startup(driver)
    try:
        yield driver
    finally:
        driver.quit()


def drain_startup(driver, quiet: float = 1.5, limit: float = 20.0) -> None:
    """Let the browser's own start-up traffic end before the first page, and drop it from the log.

    Chromium opens its new-tab page at start and, every host name being unresolvable, that page's navigation to a
    remote host fails (``net::ERR_NAME_NOT_RESOLVED``) some time later, sometimes while the first page of the site is
    loading, which would charge that page with a request it never made. Open ``about:blank`` and read the log until
    it has been silent for ``quiet`` seconds (at most ``limit``).
    """
    driver.get("about:blank")
    start = last = time.monotonic()
    while time.monotonic() - last < quiet and time.monotonic() - start < limit:
        if driver.get_log("performance"):
            last = time.monotonic()
        time.sleep(0.2)


def visit(driver, url: str, origin: str) -> Visit:
    """Open ``url``, let it settle (images, fonts, maths) and return what it showed and requested."""
    driver.get_log("performance")  # drop what earlier pages left in the log
    driver.get(url)
    state = driver.execute_async_script(SETTLE)
    assert "error" not in state, f"{url}: {state.get('error')}"
    events = [json.loads(entry["message"])["message"] for entry in driver.get_log("performance")]
    requests, failed = network_problems(events, origin)
    return Visit(images=[tuple(image) for image in state["images"]], requests=requests, failed=failed,
                 mathjax=state["mathjax"], maths=state["maths"], typeset=state["typeset"], errors=state["errors"],
                 text=state["text"])


@pytest.fixture(scope="module")
def visits(built_site: Path, site_url: str, logging_chromium) -> dict[str, Visit]:
    """Every page of the site, opened once in the browser: page -> what it did."""
    origin = site_url.rstrip("/")
    return {page: visit(logging_chromium, site_url + page, origin) for page in site_pages(built_site)}


@pytest.mark.slow
@pytest.mark.browser
def test_every_figure_of_every_page_loads(visits: dict[str, Visit]):
    assert len(visits) >= 20 and "intro.html" in visits and "segmentation/03_unet.html" in visits, sorted(visits)
    broken = [f"{page}: {src} (complete {complete}, naturalWidth {width})" for page, seen in visits.items()
              for src, complete, width in seen.images if not (complete and width > 0)]
    assert not broken, "images that did not load:\n" + "\n".join(broken)
    shown = {Path(src).name for seen in visits.values() for src, _, _ in seen.images}
    assert FIGURES <= shown, f"figures shown on no page: {sorted(FIGURES - shown)}"


@pytest.mark.slow
@pytest.mark.browser
def test_no_request_fails_nor_leaves_this_machine(visits: dict[str, Visit]):
    assert all(seen.requests for seen in visits.values()), "the network log recorded nothing"
    assert sum(len(seen.requests) for seen in visits.values()) > 3 * len(visits)  # styles, scripts, images
    failed = [f"{page}: {problem}" for page, seen in visits.items() for problem in seen.failed]
    assert not failed, "requests that failed or went to another host:\n" + "\n".join(failed)


@pytest.mark.slow
@pytest.mark.browser
def test_maths_is_typeset_offline_on_every_page_that_has_some(visits: dict[str, Visit]):
    with_maths = {page for page, seen in visits.items() if seen.maths}
    assert MATHS_PAGES <= with_maths, f"pages expected to hold formulas: {sorted(MATHS_PAGES - with_maths)}"
    problems = []
    for page in sorted(with_maths):
        seen = visits[page]
        mathjax = [url for url in seen.requests if "/_static/mathjax/" in url]
        raw = re.findall(r"\\[(\[]|\\begin\{|\\frac|\$\$", seen.text)
        if not seen.mathjax or not mathjax:
            problems.append(f"{page}: MathJax was not loaded from the site")
        elif seen.typeset < seen.maths or seen.errors or raw:
            problems.append(f"{page}: {seen.typeset} typeset of {seen.maths} formulas, {seen.errors} TeX errors, "
                            f"raw TeX left: {sorted(set(raw))}")
    assert not problems, "maths not rendered:\n" + "\n".join(problems)


@pytest.mark.slow
@pytest.mark.browser
def test_search_snippets_quote_formulas_as_text(site_url: str, logging_chromium):
    # Sphinx quotes each result from the page's HTML, where MathJax has not run: book/_ext/search_snippets.py turns
    # the TeX of those quotes into text. "modulating" is followed by the focal term (1 - \hat{p}_y)^\gamma.
    from selenium.webdriver.support.ui import WebDriverWait

    driver = logging_chromium
    driver.get(site_url + "search.html?q=modulating")
    WebDriverWait(driver, 60).until(lambda d: re.search(r"finished|did not match", d.execute_script(
        "const s = document.querySelector('#search-results p.search-summary'); return s ? s.textContent : '';")))
    snippets = driver.execute_script(
        "return Array.from(document.querySelectorAll('#search-results li p.context')).map(p => p.textContent);")
    assert snippets, "the search found nothing for 'modulating'"
    raw = [text for text in snippets if re.search(r"\\[(\[]|\\[A-Za-z]+\{?", text)]
    assert not raw, f"search snippets with TeX source: {raw}"
    assert any("(1 - p\u0302_y)^γ" in text for text in snippets), snippets
    assert driver.execute_script("return texToText(arguments[0]);",
                                 r"\(\mathcal{L} = \frac{\sum_{i} w_{y_i} \ell_i}{\{0, \dots, K-1\}}\)") \
        == "L = (Σ_i w_(y_i) ℓ_i)/({0, …, K-1})"


def test_the_network_check_sees_failures_and_other_hosts():
    origin = "http://127.0.0.1:8000"
    events = [
        {"method": "Network.requestWillBeSent", "params": {"requestId": "1", "request": {"url": origin + "/a.html"}}},
        {"method": "Network.requestWillBeSent", "params": {"requestId": "2", "request": {"url": origin + "/b.png"}}},
        {"method": "Network.responseReceived", "params": {"requestId": "2", "response": {"url": origin + "/b.png",
                                                                                        "status": 404}}},
        {"method": "Network.requestWillBeSent", "params": {"requestId": "3",
                                                           "request": {"url": "https://cdn.test/m.js"}}},
        {"method": "Network.loadingFailed", "params": {"requestId": "3", "errorText": "net::ERR_NAME_NOT_RESOLVED"}},
        {"method": "Network.requestWillBeSent", "params": {"requestId": "4", "request": {"url": "data:image/png,x"}}},
        {"method": "Network.requestWillBeSent", "params": {"requestId": "6",
                                                           "request": {"url": "chrome://resources/x.js"}}},
        {"method": "Network.requestWillBeSent", "params": {"requestId": "5",
                                                           "request": {"url": "http://127.0.0.1:8000.evil.test/"}}},
    ]
    requests, failed = network_problems(events, origin)
    assert requests == [f"{origin}/a.html", f"{origin}/b.png", "https://cdn.test/m.js",
                        "http://127.0.0.1:8000.evil.test/"]
    assert failed == sorted([f"{origin}/b.png: HTTP 404", "https://cdn.test/m.js: not this site",
                             "https://cdn.test/m.js: net::ERR_NAME_NOT_RESOLVED",
                             "http://127.0.0.1:8000.evil.test/: not this site"])


def test_site_pages_leaves_out_the_builds_own_folders(tmp_path: Path):
    for name in ("intro.html", "chapters/losses.html", "_static/x.html", "_sources/a.html", "_images/b.html"):
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text("<html></html>")
    assert site_pages(tmp_path) == ["chapters/losses.html", "intro.html"]
