#!/usr/bin/env bash
# The main job on the embedded default: backfill the samples shipped in samples/ into
# $MEMTAPE_HOME, then show what landed with SQL. Safe to run twice (idempotent writes).
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=.venv/bin
uris=()
add() { for p in $2; do [ -e "$p" ] && uris+=("$1:$p"); done; return 0; }
add slack "samples/slack/*.zip"
add whatsapp "samples/whatsapp/*.txt"
add telegram "samples/telegram/*.json"
add irc "samples/irc/*.txt"
add maildir "samples/email"
add fhir "samples/fhir"
add audio "samples/audio"
add jsonl "samples/jsonl"
echo "== backfill ${#uris[@]} sample sources into ${MEMTAPE_HOME}"
$BIN/memtape backfill --tenant demo "${uris[@]}"
echo "== raw events by source family"
$BIN/memtape sql "SELECT source_kind, source, count(*) AS events, min(event_time) AS first, max(event_time) AS last FROM raw_events GROUP BY ALL ORDER BY ALL"
echo "== tables"
$BIN/memtape tables
