"""First stage of search: candidate chunks from Elasticsearch. The one module that searches it
(the document page only reads one document's chunks by id: search/documents.py).

    semantic  kNN on `embedding` (the query embedded with the model that built the index)
    keyword   BM25 `multi_match` (`best_fields`, tie breaker 0.3: chosen by measurement, text_query)
              over the title and text terms the index holds in its language
              (indexer/analysis.py: `title_terms`/`text_terms` for en and zh, the query
              analyzed the same way; `title`/`text` with the standard analyzer for none)
    hybrid    both, fused here (search/hybrid_fusion.py) by the collection's rule: the one chosen
              on its judged queries for the model it serves (relevance/fusion_choice.py), else
              SEARCH_HYBRID_FUSION, else its language's default

Access control and filters are part of every Elasticsearch query (`terms` on `collection` for
the collections the user may see, `terms` on `metadata.<key>`), also inside the kNN clause where
they pre-filter the HNSW search. Hits are never dropped afterwards: that would leak counts and
break pagination. Ties are broken by document id and chunk number, so the same query gives the
same order every time.

Every hit carries a fragment of its text and its title marked with HIGHLIGHT_START/HIGHLIGHT_END
(characters from Unicode's private use area), computed here in Python with the analysis of its
collection's language (indexer/analysis.py highlight: the surface words whose terms are the
query's, never a stop word), for kNN hits too; `highlight_html` escapes the text and turns the
marks into <mark> tags, so no markup from a document ever reaches a page.

A collection is searched in the language of its live index (indexer.lookups.serving), so a rebuild
in another language changes nothing until the alias swaps. Collections of different languages
searched together get one BM25 clause per language, each filtered to its collections.
"""
from __future__ import annotations

import re
import time
from dataclasses import dataclass, field

from django.conf import settings
from django.db.models import Q
from django.utils.html import escape

from indexer.analysis import ANALYZED, HIGHLIGHT_END, HIGHLIGHT_START, highlight, query_terms
from indexer.lookups import index_states, serving
from indexer.models import Collection
from indexer.store import IndexMissing, StoreError, alias_name, get_store

from .errors import INDEX_MISSING, SearchBackendError
from .facets import FacetRequest, facet_body
from .hybrid_fusion import LANGUAGE_DEFAULTS, MIXED_DEFAULT, FusionRule, fused_scores
from .query_vectors import embed_query

MODES = ("semantic", "keyword", "hybrid")
SOURCE_FIELDS = ["collection", "document_id", "external_id", "title", "text", "chunk", "start", "end", "metadata"]
# Same order for equal scores on every request (stable pagination); document ids are unique
# across collections.
TIE_BREAK = [{"_score": "desc"}, {"document_id": "asc"}, {"chunk": "asc"}]


@dataclass
class Hit:
    """One chunk found by the first stage."""

    id: str  # Elasticsearch _id: "<collection>/<external id>/<chunk>"
    collection: str
    document_id: int
    external_id: str
    title: str
    text: str
    chunk: int
    start: int
    end: int
    metadata: dict
    score: float  # first-stage score: ES score (semantic, keyword) or fused score (hybrid)
    fragment: str = ""  # the best passage of `text`, with HIGHLIGHT_START/END marks (add_highlights)
    title_fragment: str = ""  # the title, marked the same way
    semantic_rank: int | None = None
    keyword_rank: int | None = None
    first_stage_rank: int = 0  # 1-based position in the first stage's list
    reranker_logit: float | None = None  # set by the second stage (search/rerank_client.py)


@dataclass
class FirstStage:
    hits: list[Hit]
    embed_ms: float = 0.0
    es_ms: float = 0.0
    vector_cached: bool | None = None
    models: list[str] = field(default_factory=list)
    # The bi-encoder whose vectors each searched collection's live index holds.
    collection_models: dict[str, str] = field(default_factory=dict)
    facets_response: dict | None = None  # the raw answer of the facet search (search/facets.py)
    fusion: dict | None = None  # hybrid: the rule that fused the lists and where it came from


# --------------------------------------------------------------------------- access control


def visible_collections(user):
    """Collections `user` may search: public ones for anyone, `authenticated` ones for signed-in
    users, `groups` ones for members of one of their groups; superusers see all."""
    if user is not None and user.is_authenticated and user.is_active and user.is_superuser:
        return Collection.objects.all()
    allowed = Q(visibility=Collection.Visibility.PUBLIC)
    if user is not None and user.is_authenticated and user.is_active:
        allowed |= Q(visibility=Collection.Visibility.AUTHENTICATED)
        allowed |= Q(visibility=Collection.Visibility.GROUPS, groups__in=user.groups.all())
    return Collection.objects.filter(allowed).distinct()


# --------------------------------------------------------------------------- Elasticsearch


def es_filters(collection_slugs: list[str], metadata: dict[str, list[str]]) -> list[dict]:
    """Access control (collections) and metadata filters, for `bool.filter` and `knn.filter`."""
    filters = [{"terms": {"collection": sorted(collection_slugs)}}]
    for key, values in sorted(metadata.items()):
        filters.append({"terms": {f"metadata.{key}": list(values)}})
    return filters


def text_query(query: str, language: str) -> dict | None:
    """The BM25 clause of one language; None when the query has no term in it (only stop words,
    say: like Elasticsearch's own language analyzers, such a query matches nothing)."""
    if language in ANALYZED:
        terms = query_terms(query, language)
        if not terms:
            return None
        # The fields' `whitespace` analyzer splits the terms exactly as indexer/analysis.py wrote them.
        query, fields = " ".join(terms), ["title_terms", "text_terms"]
    else:
        fields = ["title", "text"]
    # Scored by the better of the two fields plus 0.3 of the other (`best_fields`): measured
    # against `combined_fields` (BM25F, title and text as one field), `cross_fields`,
    # `most_fields`, a title boost, one concatenated field and other BM25 k1/b on the train
    # queries of SciFact and NFCorpus, on both engines (identical figures): no other form is
    # ahead on both, and this one is level with a plain BM25 over whole title + text documents
    # on train and ahead of it on dev (bench/keyword_query.py, bench/bm25_reference.py;
    # docs/keyword-search.md, "The keyword query"). `combined_fields` would also need the terms
    # fields without their per-field similarity (Elasticsearch refuses the query over them), so
    # a new mapping and a rebuild of every index.
    return {"multi_match": {"query": query, "fields": fields, "type": "best_fields", "tie_breaker": 0.3}}


def keyword_query(query: str, languages: dict[str, str]) -> dict | None:
    """BM25 over collections {slug: language}: one clause when they share a language, else one
    per language restricted to its collections (a term of one analysis means nothing in
    another's fields). None when no language leaves a term."""
    by_language: dict[str, list[str]] = {}
    for slug, language in languages.items():
        by_language.setdefault(language, []).append(slug)
    clauses = [(sorted(slugs), text_query(query, language)) for language, slugs in sorted(by_language.items())]
    clauses = [(slugs, clause) for slugs, clause in clauses if clause is not None]
    if not clauses:
        return None
    if len(by_language) == 1:
        return clauses[0][1]
    return {"bool": {"should": [{"bool": {"must": [clause], "filter": [{"terms": {"collection": slugs}}]}}
                                for slugs, clause in clauses], "minimum_should_match": 1}}


def keyword_body(query: str, filters: list[dict], depth: int, match: dict | None = None) -> dict:
    """`match`: the clause of keyword_query; without it, the query of language `none`."""
    match = match or text_query(query, "none")
    return {
        "query": {"bool": {"must": [match], "filter": filters}},
        "size": depth, "sort": TIE_BREAK, "track_scores": True, "track_total_hits": False,
        "_source": SOURCE_FIELDS,
    }


def semantic_body(query: str, vector: list[float], filters: list[dict], depth: int) -> dict:
    """(`query` is unused: highlights are computed after the search, add_highlights.)"""
    return {
        **get_store().knn_search_body(vector, k=depth, num_candidates=settings.SEARCH_NUM_CANDIDATES, filters=filters),
        "size": depth, "sort": TIE_BREAK, "track_scores": True, "track_total_hits": False,
        "_source": SOURCE_FIELDS,
    }


def to_hit(raw: dict) -> Hit:
    source = raw["_source"]
    return Hit(
        id=raw["_id"], collection=source["collection"], document_id=source["document_id"],
        external_id=source["external_id"], title=source.get("title", ""), text=source.get("text", ""),
        chunk=source["chunk"], start=source["start"], end=source["end"], metadata=source.get("metadata") or {},
        score=float(raw["_score"]),
    )


def add_highlights(hits: list[Hit], query: str, languages: dict[str, str]) -> None:
    """Mark the query's words in each hit's title and best passage, in its collection's language."""
    terms = {language: frozenset(query_terms(query, language)) for language in set(languages.values())}
    for hit in hits:
        language = languages[hit.collection]
        hit.fragment = highlight(hit.text, terms[language], language)
        hit.title_fragment = highlight(hit.title, terms[language], language, fragment_chars=None)


def msearch(searches: list[tuple[list[str], dict]]) -> list[dict]:
    """Several searches in one round trip, each over the aliases of its collections (slugs)
    that serve an index; a search with none answers no hits without asking. A collection with
    nothing indexed yet is left out; one whose live index is gone from the engine is an error
    that says so, never an empty answer."""
    store = get_store()
    live, building = index_states({slug for slugs, _ in searches for slug in slugs})
    try:
        # Rare (a build in progress): ask the engine whether its alias is there yet.
        searchable = live | {slug for slug in building if store.indices_behind(alias_name(slug))}
        sent, answers = [], []
        for slugs, body in searches:
            aliases = [alias_name(slug) for slug in slugs if slug in searchable]
            answers.append(None if aliases else {"hits": {"hits": []}})
            if aliases:
                sent.append((aliases, body))
        responses = iter(store.msearch(sent) if sent else [])
    except IndexMissing as exc:
        raise SearchBackendError(f"{exc}: a collection's live index is gone from the engine; rebuild it (admin → "
                                 "Collections → Rebuild index, or manage.py rebuild_index)", INDEX_MISSING) from exc
    except (StoreError, *store.transient_errors) as exc:
        raise SearchBackendError(str(exc)) from exc
    return [answer if answer is not None else next(responses) for answer in answers]


def collection_fusion(collection: Collection, model_id: str, language: str) -> tuple[FusionRule, str]:
    """(hybrid rule, where it comes from) of a collection whose live index serves `model_id`:
    a rule chosen on its judgments holds only for the model it was chosen with."""
    chosen = collection.hybrid_fusion or {}
    if chosen.get("rule") and chosen.get("model") == model_id:
        return FusionRule.from_dict(chosen["rule"]), "collection"
    return default_fusion(language)


def default_fusion(language: str) -> tuple[FusionRule, str]:
    """(rule, source) of a collection without a rule of its own."""
    if settings.SEARCH_HYBRID_FUSION:
        return FusionRule.parse(settings.SEARCH_HYBRID_FUSION), "setting"
    return LANGUAGE_DEFAULTS.get(language, MIXED_DEFAULT), "language default"


def search_fusion(rules: dict[str, tuple[FusionRule, str]]) -> tuple[FusionRule, str]:
    """One rule for collections searched together {slug: (rule, source)}: theirs when they agree
    (fused scores of different rules are not comparable), else the mixed default."""
    distinct = {rule for rule, _ in rules.values()}
    if len(distinct) == 1:
        rule = distinct.pop()
        return rule, "/".join(sorted({source for _, source in rules.values()}))
    return MIXED_DEFAULT, "collections differ: mixed default"


def fuse(semantic: list[Hit], keyword: list[Hit], rule: FusionRule, depth: int) -> list[Hit]:
    """The two ranked lists of chunks as one, keyed by chunk id; each hit keeps its rank in each."""
    by_id: dict[str, Hit] = {}
    for ranked, rank_field in ((semantic, "semantic_rank"), (keyword, "keyword_rank")):
        for rank, hit in enumerate(ranked, start=1):
            kept = by_id.setdefault(hit.id, hit)
            setattr(kept, rank_field, rank)
    scores = fused_scores([(h.id, h.score) for h in semantic], [(h.id, h.score) for h in keyword], rule)
    for hit_id, hit in by_id.items():
        hit.score = scores[hit_id]
    best_rank = lambda h: min(r for r in (h.semantic_rank, h.keyword_rank) if r is not None)  # noqa: E731
    ordered = sorted(by_id.values(), key=lambda h: (-h.score, best_rank(h), h.document_id, h.chunk))
    return ordered[:depth]


def first_stage(query: str, mode: str, collections: list[Collection], metadata: dict[str, list[str]] | None = None,
                depth: int | None = None, highlights: bool = True, facets: FacetRequest | None = None) -> FirstStage:
    """Ranked candidate chunks for `query` from `collections` (already access-checked);
    `highlights=False` skips the snippets (mining and evaluation read no snippet); `facets`
    adds the facet search (search/facets.py) to the same msearch."""
    if mode not in MODES:
        raise ValueError(f"mode must be one of {', '.join(MODES)}")
    depth = depth or settings.SEARCH_DEPTH
    metadata = metadata or {}
    stage = FirstStage(hits=[])
    if not collections:
        return stage
    slugs = [c.slug for c in collections]
    filters = es_filters(slugs, metadata)
    searches: list[tuple[list[str], dict]] = []
    # What the alias of each collection serves now: its vectors' model and its terms' language.
    models, languages = {}, {}
    for collection in collections:
        models[collection.slug], languages[collection.slug] = serving(collection)
    stage.collection_models = dict(models)

    if mode in ("semantic", "hybrid"):
        # Each index holds vectors of one model: the query is embedded once per model, and
        # collections built with different models are searched separately (vectors of
        # different models and sizes cannot be compared).
        by_model: dict[str, list[str]] = {}
        for slug in slugs:
            by_model.setdefault(models[slug], []).append(slug)
        started = time.perf_counter()
        cached = []
        for model_id, model_slugs in sorted(by_model.items()):
            vector, hit = embed_query(query, model_id)
            cached.append(hit)
            searches.append((model_slugs, semantic_body(query, vector, es_filters(model_slugs, metadata), depth)))
        stage.embed_ms = (time.perf_counter() - started) * 1000
        stage.vector_cached = all(cached)
        stage.models = sorted(by_model)
    match = keyword_query(query, languages) if mode in ("keyword", "hybrid") else None
    if match is not None:
        searches.append((slugs, keyword_body(query, filters, depth, match)))

    facet_search = None
    if facets is not None and (mode != "keyword" or match is not None):
        # The BM25 clause again, over every collection in the facets' scope (in their languages).
        scope_languages = {c.slug: languages.get(c.slug) or serving(c)[1] for c in facets.scope}
        facet_match = keyword_query(query, scope_languages) if mode in ("keyword", "hybrid") else None
        facet_search = ([c.slug for c in facets.scope], facet_body(facets, facet_match))

    started = time.perf_counter()
    responses = msearch(searches + ([facet_search] if facet_search else [])) if searches else []
    if facet_search:
        stage.facets_response = responses.pop()
    lists = [[to_hit(raw) for raw in response["hits"]["hits"]] for response in responses]
    stage.es_ms = (time.perf_counter() - started) * 1000

    if mode == "keyword":
        hits = lists[0] if lists else []  # none when the query is only stop words
        for rank, hit in enumerate(hits, start=1):
            hit.keyword_rank = rank
    else:
        semantic_lists = lists[:len(stage.models)]
        semantic = sorted((h for hits in semantic_lists for h in hits),
                          key=lambda h: (-h.score, h.document_id, h.chunk))[:depth]
        for rank, hit in enumerate(semantic, start=1):
            hit.semantic_rank = rank
        keyword = lists[-1] if match is not None else []
        if mode == "semantic":
            hits = semantic
        else:
            rule, source = search_fusion({c.slug: collection_fusion(c, models[c.slug], languages[c.slug])
                                          for c in collections})
            stage.fusion = {**rule.to_dict(), "source": source}
            hits = fuse(semantic, keyword, rule, depth)
    for rank, hit in enumerate(hits, start=1):
        hit.first_stage_rank = rank
    if highlights:
        add_highlights(hits, query, languages)
    stage.hits = hits
    return stage


# --------------------------------------------------------------------------- snippets

_MARKS = re.compile(f"({HIGHLIGHT_START}|{HIGHLIGHT_END})")


def highlight_html(fragment: str) -> str:
    """Escape a highlighter fragment and turn its marks into balanced <mark> tags."""
    out, open_mark = [], False
    for part in _MARKS.split(fragment):
        if part == HIGHLIGHT_START:
            if not open_mark:
                out.append("<mark>")
                open_mark = True
        elif part == HIGHLIGHT_END:
            if open_mark:
                out.append("</mark>")
                open_mark = False
        elif part:
            out.append(escape(part))
    if open_mark:
        out.append("</mark>")
    return "".join(out)


def plain_text(fragment: str) -> str:
    return _MARKS.sub("", fragment)
