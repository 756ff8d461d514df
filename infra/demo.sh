#!/usr/bin/env bash
# The main job on the embedded default: backfill the samples shipped in samples/ into
# $MEMTAPE_HOME, then show what landed with SQL. Safe to run twice (idempotent writes: the
# second run reports every row as already stored). Each heading is computed from what it runs.
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=.venv/bin
uris=()
add() { for p in $2; do [ -e "$p" ] && uris+=("$1:$p"); done; return 0; }
add slack "samples/im/slack/*.zip"
add whatsapp "samples/im/whatsapp/*.txt"
add telegram "samples/im/telegram/result.json"
add irc "samples/im/irc/*.txt"
add jsonl "samples/jsonl"
add maildir "samples/email/enron"
add fhir "samples/health/fhir"
add labs-csv "samples/health/labs/observations.csv"
add audio "samples/meeting"
families=$(printf '%s\n' "${uris[@]%%:*}" | sort -u | tr '\n' ' ')
echo "== backfill ${#uris[@]} sample sources ($(wc -w <<<"$families" | tr -d ' ') families: ${families% }) into ${MEMTAPE_HOME} for tenant demo"
$BIN/memtape backfill --tenant demo "${uris[@]}"
echo "== raw events by source family (memtape sql)"
$BIN/memtape sql "SELECT source_kind, source, count(*) AS events, min(event_time) AS first, max(event_time) AS last FROM raw_events GROUP BY ALL ORDER BY ALL"
echo "== derived tables"
$BIN/memtape sql "SELECT (SELECT count(*) FROM episodes) AS episodes, (SELECT count(*) FROM triples) AS triples, (SELECT count(*) FROM entities) AS entities, (SELECT count(*) FROM memories) AS memories, (SELECT count(*) FROM dead_letters) AS dead_letters"
echo "== a few memories"
$BIN/memtape sql "SELECT source_kind, token_count, header, text FROM memories ORDER BY start_time LIMIT 5" --format json | $BIN/python -m json.tool
