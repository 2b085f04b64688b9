"""The admin's analytics report for one collection (or all) and one period: top queries,
zero-result queries, queries without a click, click-through rate by rank, searches per day and
the reranked share, with two plots."""
from __future__ import annotations

import base64
import io
from collections import Counter
from dataclasses import dataclass, field
from datetime import date, datetime

from django.db.models import Avg, Count, Q
from django.db.models.functions import TruncDate

from indexer.models import Collection

from .models import SearchClick, SearchLog

# Rows in each query table, and the ranks the click-through table covers.
TOP = 20
RANKS = 10


@dataclass
class Report:
    collection: Collection | None
    since: datetime
    until: datetime
    searches: int = 0
    clicks: int = 0
    searches_clicked: int = 0  # searches with at least one click
    reranked: int = 0
    top_queries: list[dict] = field(default_factory=list)  # query, searches, clicks, results (mean)
    zero_result_queries: list[dict] = field(default_factory=list)  # query, searches
    no_click_queries: list[dict] = field(default_factory=list)  # query, searches, results (mean)
    ctr_by_rank: list[dict] = field(default_factory=list)  # rank, shown, clicks, ctr
    per_day: list[dict] = field(default_factory=list)  # day, searches, reranked, reranked_share

    @property
    def reranked_share(self) -> float | None:
        return self.reranked / self.searches if self.searches else None

    @property
    def click_through(self) -> float | None:
        return self.searches_clicked / self.searches if self.searches else None


def searches_in(collection: Collection | None, since: datetime, until: datetime):
    rows = SearchLog.objects.filter(created_at__gte=since, created_at__lt=until)
    return rows.filter(collections=collection) if collection is not None else rows


def build_report(collection: Collection | None, since: datetime, until: datetime) -> Report:
    report = Report(collection, since, until)
    # One id list, so the per-query counts below never multiply through the collections join.
    ids = searches_in(collection, since, until).values("pk")
    rows = SearchLog.objects.filter(pk__in=ids)
    # A later page of the same results is no new search: searches are page-1 rows, while clicks
    # and click-through by rank count every page.
    first_pages = rows.filter(page=1)
    report.searches = first_pages.count()
    report.reranked = first_pages.filter(reranked=True).count()
    clicks = SearchClick.objects.filter(search__in=ids)
    report.clicks = clicks.count()
    report.searches_clicked = first_pages.filter(clicks__isnull=False).distinct().count()
    by_query = rows.values("query").annotate(searches=Count("pk", filter=Q(page=1), distinct=True),
                                            clicks=Count("clicks"), results=Avg("result_count", filter=Q(page=1))).filter(searches__gt=0)
    report.top_queries = list(by_query.order_by("-searches", "query")[:TOP])
    report.zero_result_queries = list(first_pages.filter(result_count=0).values("query")
                                      .annotate(searches=Count("pk")).order_by("-searches", "query")[:TOP])
    report.no_click_queries = list(by_query.filter(results__gt=0, clicks=0).order_by("-searches", "query")[:TOP])
    shown = Counter()
    for first_rank, documents in rows.values_list("first_rank", "shown").iterator():
        for rank in range(first_rank, min(first_rank + len(documents), RANKS + 1)):
            shown[rank] += 1
    clicked = dict(clicks.filter(rank__lte=RANKS).values_list("rank").annotate(n=Count("pk")).values_list("rank", "n"))
    report.ctr_by_rank = [{"rank": rank, "shown": shown[rank], "clicks": clicked.get(rank, 0),
                           "ctr": clicked.get(rank, 0) / shown[rank] if shown[rank] else None}
                          for rank in range(1, RANKS + 1)]
    days = (first_pages.annotate(day=TruncDate("created_at")).values("day")
            .annotate(searches=Count("pk"), reranked=Count("pk", filter=Q(reranked=True))).order_by("day"))
    report.per_day = [dict(d, reranked_share=d["reranked"] / d["searches"]) for d in days]
    return report


def _png(fig) -> str:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=110)
    return base64.b64encode(buffer.getvalue()).decode("ascii")


def plots(report: Report) -> dict[str, str]:
    """Base64 PNGs: `per_day` (searches and the reranked share) and `ctr` (click-through by
    rank); none when there is nothing to draw."""
    if not report.searches:
        return {}
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out = {}
    days: list[date] = [d["day"] for d in report.per_day]
    import matplotlib.dates as mdates

    fig, ax = plt.subplots(figsize=(7, 3))
    bars = ax.bar(days, [d["searches"] for d in report.per_day], color="#4c78a8", label="searches", width=0.8)
    ax.set_ylabel("searches per day")
    ax.set_ylim(0, max(d["searches"] for d in report.per_day) * 1.25)
    share = ax.twinx()
    line, = share.plot(days, [d["reranked_share"] for d in report.per_day], color="#e45756", marker="o",
                       label="reranked share")
    share.set_ylim(0, 1.05)
    share.set_ylabel("reranked share")
    ax.xaxis.set_major_locator(mdates.AutoDateLocator(minticks=1, maxticks=10))
    ax.xaxis.set_major_formatter(mdates.DateFormatter("%m-%d"))
    ax.legend([bars, line], ["searches", "reranked share"], loc="upper left", fontsize=8, ncols=2)
    fig.tight_layout()
    out["per_day"] = _png(fig)
    plt.close(fig)

    fig, ax = plt.subplots(figsize=(7, 3))
    rows = [r for r in report.ctr_by_rank if r["shown"]]
    bars = ax.bar([r["rank"] for r in rows], [r["ctr"] for r in rows], color="#54a24b")
    ax.bar_label(bars, fmt="%.2f", fontsize=7)
    ax.set_xticks(range(1, RANKS + 1))
    ax.set_xlabel("rank")
    ax.set_ylabel("clicks / times shown")
    ax.set_ylim(0, 1)
    fig.tight_layout()
    out["ctr"] = _png(fig)
    plt.close(fig)
    return out
