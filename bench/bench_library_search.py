"""Library search: index rebuild time from KV and search p50/p99 over 10,000 entries with transcripts, against a plain
SQLite FTS5 MATCH over the same table in the same run.

    .venv/bin/python bench/bench_library_search.py --entries 10000 2>/dev/null

One embedded nats-server (JetStream, file storage) in a temp dir; the generated entries (tests/library_corpus.py,
1,000-3,000 words of transcript each, four languages) are written into its impromptu-library bucket; then, for each
storage (memory, temp file): LibraryIndex.start (rebuild from KV, until caught up), a mix of queries through
LibraryIndex.search (weighted bm25, facets over every match, snippets, transcript moments, paging), and the same
queries' words as `SELECT rowid FROM docs WHERE docs MATCH ? ORDER BY rank LIMIT 20` on the index's own table.
The baseline requires every word as typed (stop words too: `parse().literal()`); the last column is the same plain query
for what the search runs (stop words left out; stop words only: on the short_docs table).
"""

from __future__ import annotations

import argparse
import asyncio
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path

import nats
from nats.js.api import KeyValueConfig, StorageType

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from pipeline import stores  # noqa: E402
from pipeline.archive.query import parse  # noqa: E402
from pipeline.archive.search import LibraryIndex, SearchQuery  # noqa: E402
from pipeline.domain import catalog  # noqa: E402
from pipeline.embedded import EmbeddedNats, free_port  # noqa: E402
from tests.library_corpus import TAGS, Corpus, Vocabulary, generate  # noqa: E402


def rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def queries(vocabulary: Vocabulary, rng: random.Random, count: int) -> list[SearchQuery]:
    """A mix: rare and common words, two words, a phrase, an exclusion, accents, a tag filter, newest, browsing."""
    mixed: list[SearchQuery] = []
    for n in range(count):
        language = ("en", "de", "fr", "es")[n % 4]
        words = vocabulary.words[language]
        common, middle, rare = (
            words[rng.randrange(0, 20)],
            words[rng.randrange(50, 400)],
            words[rng.randrange(1000, 4000)],
        )
        kind = n % 10
        q = {
            0: rare,
            1: middle,
            2: f"{middle} {words[rng.randrange(50, 400)]}",
            3: common,
            4: f'"{common} {words[rng.randrange(0, 20)]}"',
            5: f"{middle} -{words[rng.randrange(20, 100)]}",
            6: rng.choice(["Zurich", "café zürich", "Apprentissage", "lernkultur", "Shackleton-Jones"]),
            7: middle,
            8: rare,
            9: "",
        }[kind]
        filters = {"tag": [rng.choice(TAGS)]} if kind in (7, 9) and n % 20 < 10 else {}
        sort = "newest" if kind == 8 else "relevance"
        mixed.append(SearchQuery(q=q, filters=filters, sort=sort, page=1 + (n % 3 == 0)))  # type: ignore[arg-type]
    return mixed


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


async def write(kv: object, corpus: Corpus) -> None:
    library = kv
    work = [(catalog.entry_key(r.entry.entry_id), r.model_dump_json().encode()) for r in corpus.records]
    work += [(catalog.article_key(a.article_id), a.model_dump_json().encode()) for a in corpus.articles]
    work += [(catalog.text_key(item_id), t.model_dump_json().encode()) for item_id, t in corpus.texts.items()]
    for start in range(0, len(work), 64):
        await asyncio.gather(*(library.put(key, value) for key, value in work[start : start + 64]))  # type: ignore[attr-defined]


async def measure(kv: object, storage: str, mixed: list[SearchQuery]) -> dict[str, float]:
    before = rss_mb()
    index = LibraryIndex(storage=storage)  # type: ignore[arg-type]
    started = time.perf_counter()
    await index.start(kv)  # type: ignore[arg-type]
    rebuild = time.perf_counter() - started
    grown = rss_mb() - before
    for query in mixed[:20]:  # warm the caches
        await index.search(query)
    ours, totals = [], []
    for query in mixed:
        t = time.perf_counter()
        page = await index.search(query)
        ours.append((time.perf_counter() - t) * 1000)
        totals.append(page.total)
    # The baseline: every word as typed, stop words required too (parse().literal()), as plain FTS5 would; and the
    # same plain query for what the search runs (stop words left out, or stop words only on the short fields).
    worded = [(query, parse(query.q)) for query in mixed]
    worded = [(query, parsed) for query, parsed in worded if parsed.literal()]
    plain, plain_run, ours_worded = [], [], []
    db = index._db
    assert db is not None

    def plain_query(table: str, match: str | None) -> None:
        db.execute(f"SELECT rowid FROM {table} WHERE {table} MATCH ? ORDER BY rank LIMIT 20", (match,)).fetchall()

    for query, parsed in worded:
        t = time.perf_counter()
        await asyncio.to_thread(plain_query, "docs", parsed.literal())
        plain.append((time.perf_counter() - t) * 1000)
        run = ("short_docs", " AND ".join(parsed.words)) if parsed.short_only else ("docs", parsed.match())
        t = time.perf_counter()
        await asyncio.to_thread(plain_query, *run)
        plain_run.append((time.perf_counter() - t) * 1000)
        t = time.perf_counter()
        await index.search(query)
        ours_worded.append((time.perf_counter() - t) * 1000)
    size = index._path.stat().st_size / 2**20 if index._path else 0.0
    await index.stop()
    return {
        "rebuild_s": rebuild,
        "rss_mb": grown,
        "file_mb": size,
        "p50": statistics.median(ours),
        "p99": percentile(ours, 0.99),
        "worded_p50": statistics.median(ours_worded),
        "worded_p99": percentile(ours_worded, 0.99),
        "plain_p50": statistics.median(plain),
        "plain_p99": percentile(plain, 0.99),
        "run_p50": statistics.median(plain_run),
        "run_p99": percentile(plain_run, 0.99),
        "median_total": statistics.median(totals),
    }


async def main(args: argparse.Namespace) -> None:
    rng = random.Random(4)
    vocabulary = Vocabulary(random.Random(15))
    t = time.perf_counter()
    transcript = (args.min_words, args.max_words)
    corpus = generate(args.entries, transcript_words=transcript, article_words=(300, 900), vocabulary=vocabulary)
    words = sum(len(c.text.split()) for text in corpus.texts.values() for c in text.cues)
    each = words / len(corpus.records)
    print(f"generated {len(corpus.records)} entries, {len(corpus.articles)} articles, {each:.0f} transcript words each,"
          f" in {time.perf_counter() - t:.1f}s", flush=True)  # fmt: skip
    with tempfile.TemporaryDirectory() as store, EmbeddedNats(Path(store) / "nats", port=free_port()) as server:
        nc = await nats.connect(server.url)
        js = nc.jetstream()
        kv = await js.create_key_value(KeyValueConfig(bucket=stores.LIBRARY, history=16, storage=StorageType.FILE))
        t = time.perf_counter()
        await write(kv, corpus)
        info = await js.stream_info("KV_" + stores.LIBRARY)
        size = info.state.bytes / 2**20
        print(f"wrote {info.state.messages} keys, {size:.0f} MB, into KV in {time.perf_counter() - t:.1f}s", flush=True)
        del corpus
        mixed = queries(vocabulary, rng, args.queries)
        print("| storage | rebuild from KV | RSS growth | search p50 | search p99 | worded p50 (plain FTS5 as typed) "
              "| worded p99 (plain FTS5 as typed) | ratio p50 | plain FTS5 as run p50 / p99 |")  # fmt: skip
        print("|---|---|---|---|---|---|---|---|---|")
        for storage in args.storage:
            for run in range(args.runs):
                r = await measure(kv, storage, mixed)
                file = f" + {r['file_mb']:.0f} MB file" if r["file_mb"] else ""
                print(
                    f"| {storage} (run {run + 1}) | {r['rebuild_s']:.1f} s | {r['rss_mb']:.0f} MB"
                    f"{file} | {r['p50']:.1f} ms | {r['p99']:.1f} ms "
                    f"| {r['worded_p50']:.1f} ms ({r['plain_p50']:.1f} ms) "
                    f"| {r['worded_p99']:.1f} ms ({r['plain_p99']:.1f} ms) "
                    f"| {r['worded_p50'] / r['plain_p50']:.1f}x "
                    f"| {r['run_p50']:.1f} / {r['run_p99']:.1f} ms |",
                    flush=True,
                )
        consumers = (await js.stream_info("KV_" + stores.LIBRARY)).state.consumer_count
        print(f"consumers left on the bucket's stream: {consumers}")
        await nc.close()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--entries", type=int, default=10_000)
    parser.add_argument("--min-words", type=int, default=1000)
    parser.add_argument("--max-words", type=int, default=3000)
    parser.add_argument("--queries", type=int, default=400)
    parser.add_argument("--runs", type=int, default=1)
    parser.add_argument("--storage", nargs="+", default=["memory", "file"], choices=["memory", "file"])
    asyncio.run(main(parser.parse_args()))
