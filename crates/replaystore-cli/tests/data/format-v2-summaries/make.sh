#!/bin/bash
# Writes the format-v2-summaries fixture (./st and ./ls.json) with the replaystore binary $1,
# from the posthog-js captures in $2 (tests/data/posthog-js/wire).
set -e
B=$1; W=$2
MIN=60000
T0=1796040000000        # ingest: segment 1
T1=$((T0 + 60 * MIN))   # compact: segment 1 regrouped into segment 2 (idle > 30 min)
T2=$((T0 + 120 * MIN))  # ingest: segment 3
T3=$((T2 + MIN))        # serve: a client 3 h behind, two requests into segment 3
T4=$((T2 + 61 * MIN))   # stats: opening seals segment 3 (older than 1 h): a footer
T5=$((T2 + 62 * MIN))   # serve: a third request of that client, and a new session: segment 4
T6=$((T2 + 63 * MIN))   # ls
SKEW=$((180 * MIN))
S=0192f000-0000-7000-8000-00000000c10c
rm -rf st
$B ingest --dir st --now $T0 --team 1 $W/s-00{1..8}.gz
$B compact --dir st --now $T1
$B ingest --dir st --now $T2 --team 1 $W/s-009.gz $W/s-01*.gz

# serve NOW: runs the server at store time NOW; then post SESSION PERSON EVENTS... (each a
# request whose rrweb events are timed by the client's clock, SKEW behind the store's).
serve() {
  $B serve --dir st --now $1 --listen 127.0.0.1:0 --token tok=1 > serve.out 2> serve.err &
  PID=$!
  for _ in $(seq 50); do grep -q listening serve.out 2>/dev/null && break; sleep 0.1; done
  ADDR=$(head -1 serve.out | grep -o '127.0.0.1:[0-9]*')
}
post() {
  local sent=$1 sid=$2 person=$3 data=$4
  curl -sf -X POST --data-binary "[{\"event\":\"\$snapshot\",\"properties\":{\"\$session_id\":\"$sid\",\"\$window_id\":\"w-$person\",\"distinct_id\":\"$person\",\"token\":\"tok\",\"\$snapshot_data\":$data},\"sent_at\":$sent}]" http://$ADDR/s/ > /dev/null
}
stop() { kill $PID; wait $PID || true; }

C=$((T3 - SKEW - 5000))
serve $T3
post $((C + 4000)) $S skewed "[{\"type\":4,\"data\":{\"href\":\"https://skew.test/start\",\"width\":1024,\"height\":768},\"timestamp\":$C},{\"type\":3,\"data\":{\"source\":2,\"type\":2,\"x\":10,\"y\":10},\"timestamp\":$((C+100))},{\"type\":3,\"data\":{\"source\":5,\"text\":\"a\"},\"timestamp\":$((C+900))}]"
post $((C + 4000)) $S skewed "[{\"type\":6,\"data\":{\"plugin\":\"rrweb/console@1\",\"payload\":{\"level\":\"error\",\"payload\":[\"boom\"]}},\"timestamp\":$((C+2000))},{\"type\":5,\"data\":{\"tag\":\"\$pageview\",\"payload\":{\"href\":\"https://skew.test/next\"}},\"timestamp\":$((C+2500))},{\"type\":3,\"data\":{\"source\":1,\"positions\":[]},\"timestamp\":$((C+3000))}]"
stop
$B stats --dir st --now $T4 > /dev/null
C=$((T5 - SKEW - 5000))
serve $T5
post $((C + 4000)) $S skewed "[{\"type\":3,\"data\":{\"source\":2,\"type\":2,\"x\":50,\"y\":50},\"timestamp\":$C},{\"type\":3,\"data\":{\"source\":2,\"type\":2,\"x\":51,\"y\":50},\"timestamp\":$((C+200))},{\"type\":3,\"data\":{\"source\":2,\"type\":2,\"x\":52,\"y\":50},\"timestamp\":$((C+400))}]"
post $((T5 - 1000)) 0192f000-0000-7000-8000-0000000050e0 solo "[{\"type\":4,\"data\":{\"href\":\"https://solo.test/\",\"width\":390,\"height\":844},\"timestamp\":$((T5 - 2000))},{\"type\":6,\"data\":{\"plugin\":\"rrweb/console@1\",\"payload\":{\"level\":\"warn\"}},\"timestamp\":$((T5 - 1500))}]"
stop
rm -f st/LOCK serve.out serve.err
$B ls --dir st --now $T6 --team 1 --json > ls.json
rm -f st/LOCK
