"""The search experience in a real browser: headless Chromium (Debian's) driven by Selenium
against a live server on the real stack (Elasticsearch, the indexing pipeline, a real rerank
worker). Each page is also photographed at 1280 and 375 px (into docs/screenshots/ under
`make screenshots`).

The tests are transactional (`django_db(transaction=True)`): the live server's threads read
only committed rows, and the server writes the judgments from its own connection. The tables
are emptied after each test, so each test gets its corpus anew (indexed in a few seconds).
"""
from __future__ import annotations

from urllib.parse import parse_qs, urlsplit

import pytest

from tests.support.browser import LiveServer, chromium, screenshot
from tests.support.searching import SCIENCE, add_documents, build_reranker, drop_collections, index_now, long_text

pytestmark = pytest.mark.django_db(transaction=True)
QUERY = "telomerase activity of stem cells"
WAIT = 120  # seconds: a shared 2-core machine, a first search that loads models


@pytest.fixture(scope="module")
def live_url():
    server = LiveServer().start()
    yield server.url
    server.stop()


@pytest.fixture
def site(es, live_url, rerank_worker):
    from django.contrib.auth.models import User

    from indexer.models import Collection

    public = Collection.objects.create(name="Biology papers", slug="b-bio", chunk_size=48, chunk_overlap=8,
                                       facet_fields="kind, year",
                                       visibility=Collection.Visibility.PUBLIC)
    private = Collection.objects.create(name="Internal notes", slug="b-internal",
                                        visibility=Collection.Visibility.AUTHENTICATED)
    docs = [(f"bio{i}", title, text, {"year": str(2020 + i % 2), "kind": "review" if i % 4 == 0 else "study"})
            for i, (title, text) in enumerate(SCIENCE)]
    docs.append(("long-telomere", "Telomere biology over many sections", long_text("telomerase activity"),
                 {"year": "2020", "kind": "study"}))
    add_documents(public, docs)
    add_documents(private, [("memo", "Telomerase memo", "Internal memo on telomerase activity in stem cells.",
                             {"kind": "memo"})])
    index_now(es, public, private)
    User.objects.create_user("curator", password="pw-curator", is_staff=True)
    yield {"url": live_url, "public": public, "private": private}
    drop_collections(es, public, private)


@pytest.fixture(scope="module")
def driver():
    chrome = chromium()
    yield chrome
    chrome.quit()


@pytest.fixture(autouse=True)
def search_setup(settings, site, driver):
    from tests.support.searching import search_settings

    search_settings(settings, build_reranker())
    driver.delete_all_cookies()


def wait_for(driver, css: str):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions
    from selenium.webdriver.support.ui import WebDriverWait

    return WebDriverWait(driver, WAIT).until(expected_conditions.presence_of_element_located((By.CSS_SELECTOR, css)))


def click_and_wait(driver, element, selector: str):
    """Click `element`, then wait for the next page (the old one gone) to show `selector`."""
    from selenium.common.exceptions import WebDriverException
    from selenium.webdriver.support import expected_conditions
    from selenium.webdriver.support.ui import WebDriverWait

    old = driver.find_element("css selector", "html")
    element.click()
    # Chromedriver can answer a check on a node that is being torn down with a
    # plain WebDriverException ("Node with given id does not belong to the
    # document") instead of a stale-element error; ask again until it settles.
    WebDriverWait(driver, WAIT, ignored_exceptions=(WebDriverException,)).until(
        expected_conditions.staleness_of(old))
    return wait_for(driver, selector)


def css(driver, selector: str):
    from selenium.webdriver.common.by import By

    return driver.find_elements(By.CSS_SELECTOR, selector)


def params_of(driver) -> dict[str, list[str]]:
    return parse_qs(urlsplit(driver.current_url).query)


def search(driver, site, query: str, **form) -> None:
    """Type `query` into the search box from the empty page, after `/` focused it."""
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.keys import Keys

    driver.get(site["url"] + "/" + ("?" + "&".join(f"{k}={v}" for k, v in form.items()) if form else ""))
    wait_for(driver, "#q")
    driver.execute_script("document.activeElement.blur()")
    ActionChains(driver).send_keys("/").perform()  # the "/" shortcut focuses the box
    box = css(driver, "#q")[0]
    assert driver.switch_to.active_element == box
    box.clear()
    box.send_keys(query)
    box.send_keys(Keys.ENTER)
    wait_for(driver, "ol.results li, .banner.error, p.banner.degraded")


def test_search_and_open_a_document(driver, site):
    search(driver, site, QUERY, mode="hybrid")
    results = css(driver, "ol.results li")
    assert results, driver.page_source[:2000]
    titles = [r.find_element("css selector", ".title a").text for r in results]
    assert any("Telomer" in t for t in titles)
    # A visitor sees no internals: no scores, ranks, offsets or timings.
    page = driver.find_element("css selector", "body").text
    for internal in ("logit", "sigmoid", "first stage", "semantic rank", "keyword rank", "characters", "Elasticsearch", " ms", "Details"):
        assert internal not in page, internal
    screenshot(driver, "search")
    screenshot(driver, "search-dark", dark=True)

    # The skip link is the first stop of the keyboard and leads to the results.
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.keys import Keys

    driver.execute_script("document.activeElement.blur(); window.scrollTo(0, 0)")
    ActionChains(driver).send_keys(Keys.TAB).perform()
    skip = driver.switch_to.active_element
    assert skip.get_attribute("class") == "skip" and skip.get_attribute("href").endswith("#main")
    assert skip.is_displayed()
    # While the next page loads, the page says it is searching and reranking (the submit is
    # held back here so that the cue can be read).
    waiting = css(driver, "#waiting")[0]
    assert not waiting.is_displayed()
    driver.execute_script("document.getElementById('search-form').addEventListener('submit', e => e.preventDefault())")
    css(driver, "form.search button[type=submit]")[0].click()
    assert waiting.is_displayed() and waiting.text == "Searching and reranking…"

    # The long document (many chunks) shows the scrolling best.
    link = next(r.find_element("css selector", ".title a") for r in results
                if r.find_element("css selector", ".title a").text == "Telomere biology over many sections")
    title = link.text
    chunk = int(parse_qs(urlsplit(link.get_attribute("href")).query)["chunk"][0])
    marked = click_and_wait(driver, link, "mark#matched")
    assert driver.find_element("css selector", "#doc-title").text == title
    # The matched chunk is in view and is exactly what the index holds for that chunk.
    assert driver.execute_script(
        "var r = arguments[0].getBoundingClientRect(); return r.top < window.innerHeight && r.bottom > 0;", marked)
    current = css(driver, "ol.chunks li[aria-current]")
    assert len(current) == 1 and f"chunk {chunk}" in current[0].text
    assert "status" in driver.page_source and "Indexed" in driver.page_source
    assert "Edit in the admin" not in driver.page_source  # staff only
    screenshot(driver, "document")


def test_facets_filter_and_the_form_keeps_every_choice(driver, site):
    search(driver, site, QUERY, mode="keyword", k="3", group="off")
    kinds = {a.get_attribute("data-value"): a for a in css(driver, '.facets a[data-facet="meta.kind"]')}
    assert set(kinds) == {"review", "study"}, driver.page_source[:3000]
    review_count = int(kinds["review"].text.split()[-1])
    # The private collection is neither counted nor offered to a visitor.
    assert [a.get_attribute("data-value") for a in css(driver, '.facets a[data-facet="collection"]')] == ["b-bio"]

    click_and_wait(driver, kinds["review"], '.facets a[data-facet="meta.kind"][aria-pressed="true"]')
    chosen = params_of(driver)
    assert chosen["meta.kind"] == ["review"] and chosen["k"] == ["3"] and chosen["group"] == ["off"]
    shown = {r.get_attribute("data-document") for r in css(driver, "ol.results li")}
    from indexer.models import Document

    kinds_shown = {d.metadata["kind"] for d in Document.objects.filter(pk__in=shown)}
    assert kinds_shown == {"review"}
    assert len(shown) <= review_count
    screenshot(driver, "facets")

    # A new query from the form keeps the filter, the grouping, the page size and the mode.
    box = css(driver, "#q")[0]
    box.clear()
    box.send_keys("stem cells telomerase")
    click_and_wait(driver, css(driver, "form.search button[type=submit]")[0], "ol.results li, p.banner.degraded")
    again = params_of(driver)
    assert again["q"] == ["stem cells telomerase"]
    assert again["meta.kind"] == ["review"] and again["k"] == ["3"] and again["group"] == ["off"]
    assert again["mode"] == ["keyword"]


def test_page_two_keeps_the_filters(driver, site):
    search(driver, site, QUERY, mode="keyword", k="2", group="off", **{"meta.kind": "study"})
    first_page = [r.get_attribute("data-document") for r in css(driver, "ol.results li")]
    assert css(driver, 'nav.pages a[aria-current="page"]')[0].text == "1"
    click_and_wait(driver, css(driver, 'nav.pages a[aria-label="Page 2"]')[0],
                   'nav.pages a[aria-current="page"][aria-label="Page 2"]')
    chosen = params_of(driver)
    assert chosen["page"] == ["2"] and chosen["meta.kind"] == ["study"] and chosen["k"] == ["2"]
    second_page = [r.get_attribute("data-document") for r in css(driver, "ol.results li")]
    assert second_page and css(driver, "ol.results")[0].get_attribute("start") == "3"
    assert first_page and len(first_page) == 2
    screenshot(driver, "page-2")


def login(driver, site, username: str, password: str) -> None:
    driver.get(site["url"] + "/admin/login/?next=/")
    wait_for(driver, "#id_username").send_keys(username)
    css(driver, "#id_password")[0].send_keys(password + "\n")
    wait_for(driver, "#q")


def test_staff_grade_a_result_and_see_the_grade(driver, site):
    from relevance.models import Judgment

    login(driver, site, "curator", "pw-curator")
    search(driver, site, QUERY, mode="keyword", collection="b-bio")
    first = css(driver, "ol.results li")[0]
    title = first.find_element("css selector", ".title a").text
    document_id = int(first.get_attribute("data-document"))
    click_and_wait(driver, first.find_element("css selector", f'button[aria-label="Grade 2 for {title}"]'), ".banner.ok")
    pressed = css(driver, f'li[data-document="{document_id}"] button[aria-pressed="true"]')
    assert [b.text for b in pressed] == ["2"]
    assert Judgment.objects.get(document_id=document_id, query=QUERY).grade == 2
    # The internals are behind "Details" for staff.
    details = css(driver, f'li[data-document="{document_id}"] details')[0]
    assert not details.find_element("css selector", ".scores").is_displayed()
    details.find_element("css selector", "summary").click()
    assert "reranker" in details.find_element("css selector", ".scores").text
    screenshot(driver, "staff-grades")

    click_and_wait(driver, css(driver, f'li[data-document="{document_id}"] button[aria-label="Grade 0 for {title}"]')[0],
                   ".banner.ok")
    assert [b.text for b in css(driver, f'li[data-document="{document_id}"] button[aria-pressed="true"]')] == ["0"]
    judgment = Judgment.objects.get(document_id=document_id, query=QUERY)
    assert judgment.grade == 0 and judgment.judged_by.username == "curator"


def test_a_visitor_cannot_reach_a_private_document(driver, site):
    from indexer.models import Document

    memo = Document.objects.get(collection=site["private"], external_id="memo")
    public = Document.objects.filter(collection=site["public"]).first()
    driver.get(f"{site['url']}/documents/{memo.pk}")
    assert "Not Found" in driver.title or "No such document" in driver.page_source
    assert "Telomerase memo" not in driver.page_source
    screenshot(driver, "private-404")
    # The same answer as for a document that does not exist.
    driver.get(f"{site['url']}/documents/{memo.pk + 100000}")
    missing = driver.page_source
    driver.get(f"{site['url']}/documents/{memo.pk}")
    assert driver.page_source == missing
    # A public document opens; a signed-in user reaches the private one.
    driver.get(f"{site['url']}/documents/{public.pk}")
    assert driver.find_element("css selector", "#doc-title").text == public.title
    login(driver, site, "curator", "pw-curator")
    driver.get(f"{site['url']}/documents/{memo.pk}")
    assert driver.find_element("css selector", "#doc-title").text == "Telomerase memo"
    assert "Edit in the admin" in driver.page_source
