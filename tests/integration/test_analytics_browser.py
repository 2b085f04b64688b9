"""The search log in a real browser (headless Chromium, a live server, the real Elasticsearch):
searches on the page are logged, a result's plain link logs the click on the way to the
document (no JavaScript involved), and the admin's report shows them; photographed at 1280 and
375 px (docs/screenshots/admin-analytics-*.png under `make screenshots`)."""
from __future__ import annotations

from datetime import timedelta
from urllib.parse import urlencode

import pytest

from tests.support.browser import LiveServer, chromium, screenshot
from tests.support.searching import SCIENCE, add_documents, drop_collections, index_now

pytestmark = pytest.mark.django_db(transaction=True)
WAIT = 120


@pytest.fixture(scope="module")
def live_url():
    server = LiveServer().start()
    yield server.url
    server.stop()


@pytest.fixture
def site(es, live_url):
    from django.contrib.auth.models import User

    from indexer.models import Collection

    collection = Collection.objects.create(name="Biology papers", slug="an-bio", visibility=Collection.Visibility.PUBLIC)
    add_documents(collection, [(f"bio{i}", title, text, {}) for i, (title, text) in enumerate(SCIENCE)])
    index_now(es, collection)
    User.objects.create_superuser("analyst", password="pw-analyst")
    yield {"url": live_url, "collection": collection}
    drop_collections(es, collection)


@pytest.fixture
def driver():
    chrome = chromium()
    yield chrome
    chrome.quit()


def wait_for(driver, css: str):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions
    from selenium.webdriver.support.ui import WebDriverWait

    return WebDriverWait(driver, WAIT).until(expected_conditions.presence_of_element_located((By.CSS_SELECTOR, css)))


def test_page_searches_and_a_click_show_in_the_admin_report(driver, site):
    from django.utils import timezone

    from analytics.models import SearchClick, SearchLog

    url = site["url"]
    queries = ["telomerase stem cells", "insulin glucose", "telomerase stem cells", "vaccine adjuvants",
               "zzqx unknown words", "insulin glucose", "telomerase stem cells"]
    for query in queries:
        driver.get(f"{url}/?" + urlencode({"q": query, "mode": "keyword", "rerank": "off"}))
        wait_for(driver, "ol.results li, p.banner.degraded")
    # JavaScript off for the click: the link alone must log it and lead to the document.
    driver.execute_cdp_cmd("Emulation.setScriptExecutionDisabled", {"value": True})
    try:
        link = driver.find_element("css selector", "ol.results li .title a")
        assert "/click?" in link.get_attribute("href")
        link.click()
        wait_for(driver, "#doc-title")
    finally:
        driver.execute_cdp_cmd("Emulation.setScriptExecutionDisabled", {"value": False})
    assert "/documents/" in driver.current_url
    click = SearchClick.objects.get()
    assert click.rank == 1 and click.search.query == "telomerase stem cells" and click.channel == "page"
    assert SearchLog.objects.count() == len(queries)
    # Spread the same rows over three days, so the report has a few days to draw.
    rows = list(SearchLog.objects.order_by("created_at"))
    for days, row in zip((2, 2, 1, 1), rows):
        SearchLog.objects.filter(pk=row.pk).update(created_at=timezone.now() - timedelta(days=days))

    driver.get(f"{url}/admin/login/?next=/admin/analytics/searchlog/report/")
    wait_for(driver, "#id_username").send_keys("analyst")
    driver.find_element("css selector", "#id_password").send_keys("pw-analyst\n")
    wait_for(driver, "#analytics-report")
    page = driver.find_element("css selector", "#analytics-report").text
    assert f"{len(queries)} searches" in page and "1 click" in page and "1 clicks" not in page
    top = driver.find_element("css selector", "#top-queries").text
    assert top.splitlines()[1].startswith("telomerase stem cells 3 1")
    assert "zzqx unknown words" in driver.find_element("css selector", "#zero-result-queries").text
    assert "vaccine adjuvants" in driver.find_element("css selector", "#no-click-queries").text
    assert len(driver.find_elements("css selector", "#analytics-report img")) == 2
    screenshot(driver, "admin-analytics")
