//! Producing to Kafka as PostHog's capture service does: what `replaystore produce` (load for
//! measurements) and `delete-person --deletion-topic` use.

use std::time::Duration;

use rdkafka::config::ClientConfig;
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
use rdkafka::types::RDKafkaErrorCode;
use serde::Serialize;

/// A producer to one topic that waits (rather than fails) while its queue is full.
pub struct Publisher {
    producer: BaseProducer,
    topic: String,
}

impl Publisher {
    /// `client_config`: librdkafka properties set after ours (`message.max.bytes` 20 MB:
    /// a posthog-js request can be several MB).
    pub fn new(
        brokers: &str,
        topic: &str,
        client_config: &[(String, String)],
    ) -> crate::Result<Publisher> {
        let mut config = ClientConfig::new();
        config
            .set("bootstrap.servers", brokers)
            .set("message.max.bytes", "20000000")
            .set("linger.ms", "5");
        for (k, v) in client_config {
            config.set(k, v);
        }
        Ok(Publisher {
            producer: config.create()?,
            topic: topic.to_string(),
        })
    }

    pub fn send(&self, key: &[u8], value: &[u8]) -> crate::Result<()> {
        let mut record = BaseRecord::to(&self.topic).key(key).payload(value);
        loop {
            match self.producer.send(record) {
                Ok(()) => break,
                Err((e, r)) if e.rdkafka_error_code() == Some(RDKafkaErrorCode::QueueFull) => {
                    record = r;
                    self.producer.poll(Duration::from_millis(20));
                }
                Err((e, _)) => return Err(e.into()),
            }
        }
        self.producer.poll(Duration::ZERO);
        Ok(())
    }

    /// Waits until the broker has every message sent.
    pub fn flush(&self) -> crate::Result<()> {
        Ok(self.producer.flush(Duration::from_secs(60))?)
    }
}

#[derive(Serialize)]
struct CapturedEvent<'a> {
    uuid: &'a str,
    distinct_id: &'a str,
    ip: &'a str,
    /// The event, serialized a second time (capture's form).
    data: &'a str,
    now: Option<&'a str>,
    sent_at: Option<&'a str>,
    token: &'a str,
    event: &'a str,
}

/// Capture's message for one recording event (`event_json`, a posthog-js `$snapshot` event):
/// the envelope `envelope::decode` reads, with `data` a JSON string.
pub fn capture_message(
    event_json: &str,
    distinct_id: &str,
    token: &str,
    now_rfc3339: Option<&str>,
    sent_at: Option<&str>,
) -> Vec<u8> {
    let e = CapturedEvent {
        uuid: "00000000-0000-7000-8000-000000000000",
        distinct_id,
        ip: "127.0.0.1",
        data: event_json,
        now: now_rfc3339,
        sent_at,
        token,
        event: "$snapshot",
    };
    serde_json::to_vec(&e).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_captured_event_decodes_to_its_chunk() {
        let ev = r#"{"event":"$snapshot","properties":{"distinct_id":"p1","$session_id":"s1","$window_id":"w1","$snapshot_data":[{"type":4,"data":{},"timestamp":1000}]}}"#;
        let msg = capture_message(ev, "p1", "phc_a", Some("1970-01-01T00:00:05.000Z"), None);
        let d = crate::envelope::decode(&msg).unwrap().unwrap();
        assert_eq!(d.token.as_deref(), Some("phc_a"));
        assert_eq!(
            (d.chunk.session_id.as_str(), d.chunk.first_ts_ms),
            ("s1", 1000)
        );
        assert_eq!(d.received_ms, Some(5000));
    }
}
