#!/bin/bash
# Hand-over of a ~1 GB partition through the bucket: A consumes it (uploading as it goes, every
# $MAINT s), B waits in the group, A stops (SIGTERM: revoke = flush, seal, sync, close, commit),
# B takes the partition over from the bucket into an empty directory. A trickle of new messages
# keeps arriving, so B's first append marks the end of the hand-over. Needs tansu on
# 127.0.0.1:19092 and moto on 127.0.0.1:15055 (see the tops of crates/replaystore-cli/tests/
# kafka.rs and remote_s3.rs). UPLOAD=3600 for no upload point before the stop.
set -u
B=${REPLAYSTORE:-target/release/replaystore}
F=${FIXTURE:-../shared/fixtures/posthog-js-docs/snapshot-batches.jsonl}
COPIES=${COPIES:-480}; MAINT=${MAINT:-10}
W=/tmp/ho; rm -rf $W; mkdir -p $W
T=ho$RANDOM; G=g$RANDOM; P=ho-$RANDOM
$HOME/.cache/replaystore/tansu/bin/tansu topic create --broker tcp://127.0.0.1:19092 --partitions 1 $T
$B produce --brokers 127.0.0.1:19092 --topic $T --token phc_m --copies $COPIES $F
R="--remote s3://replaystore-test/$P --remote-option endpoint=http://127.0.0.1:15055 --remote-option allow_http=true --remote-option region=us-east-1 --remote-option access_key_id=testing --remote-option secret_access_key=testing"
C="consume --brokers 127.0.0.1:19092 --topic $T --group $G --token phc_m=1 --retention-days 3650 --max-age-days 3650 --kafka-config fetch.wait.max.ms=10 --maintenance-interval-s $MAINT --upload-interval-s ${UPLOAD:-10}"
RUST_LOG=info $B $C --dir $W/a $R --metrics 127.0.0.1:19501 > $W/a.out 2> $W/a.err &
APID=$!
start=$(date +%s)
while true; do
  lag=$(curl -s 127.0.0.1:19501/metrics | awk '/^replaystore_kafka_lag\{/ {print $2}')
  [ -n "$lag" ] && [ "$lag" -le 0 ] && break
  sleep 1
done
echo "A consumed the partition in $(( $(date +%s) - start )) s"
du -sh $W/a
sleep ${SETTLE:-12}
# the trickle: new messages all along the hand-over
$B produce --brokers 127.0.0.1:19092 --topic $T --token phc_m --copies 6 --rate-mb-s 0.5 $F > $W/trickle.out &
sleep 1
RUST_LOG=info $B $C --dir $W/b $R > $W/b.out 2> $W/b.err &
BPID=$!
sleep 8
kill -TERM $APID; wait $APID
sleep 12
kill -TERM $BPID; wait $BPID
grep -h "revoked at\|first append\|resuming at" $W/a.err $W/b.err | cut -c1-200
