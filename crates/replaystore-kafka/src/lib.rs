//! replaystore as a Kafka consumer-group member: the replay consumer of a PostHog deployment
//! (issue 16). It joins a group on the recordings topic, keeps one store per assigned partition
//! (`<dir>/p<N>`, with `<remote>/p<N>` as its bucket prefix), decodes capture's messages
//! (`envelope`) and appends them, flushes, and commits the group's offsets after each flush
//! (with a bucket, only once the bucket holds the data).
//!
//! The engine knows nothing of Kafka: this crate uses only `Store`'s public API. The client is
//! rdkafka over librdkafka built from its bundled sources (docs/design.md, "Kafka consumer", says why).

pub mod envelope;
pub mod erasure;
mod generation;
mod metrics;
mod partition;
pub mod produce;
mod rebalance;
mod run;

pub use envelope::{decode, Decoded};
pub use partition::{Counts, StoreFactory};
pub use run::{Consumer, Options, Report};

/// Why the consumer stopped.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The Kafka client failed (configuration, subscription, a commit that had to succeed).
    #[error("kafka: {0}")]
    Kafka(#[from] rdkafka::error::KafkaError),
    /// A partition's store failed to open, flush or close.
    #[error("partition {partition}: {source}")]
    Store {
        partition: i32,
        #[source]
        source: replaystore::Error,
    },
    /// Deletion receipts could not be read or written.
    #[error("deletion receipts: {0}")]
    Receipts(String),
    /// The metrics listener could not be started.
    #[error("metrics listener: {0}")]
    Metrics(std::io::Error),
}

pub type Result<T> = std::result::Result<T, Error>;
