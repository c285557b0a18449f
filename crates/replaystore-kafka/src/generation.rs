//! The consumer group's generation as this member's librdkafka knows it, and the check that
//! works around a coordinator that keeps a generation after a member died.
//!
//! Why: tansu 0.6's coordinator, when a member stops heartbeating, drops it from the group in
//! the survivor's heartbeat and answers "rebalance in progress", but keeps the group formed:
//! the survivor rejoins, gets the *same* generation back, and SyncGroup hands it its old
//! assignment, so the dead member's partitions are read by nobody, forever (seen in
//! tests/kafka.rs, the kill test; tansu's `Inner<Formed>::heartbeat`). A Kafka broker bumps the
//! generation on every completed rebalance, so "a rebalance ended in the generation it started
//! from" never happens there. When it does, the member leaves and joins again under a new
//! member id, which makes the coordinator form the group anew.

use rdkafka::client::NativeClient;

/// librdkafka's serialized group metadata starts with this magic (7 bytes, no NUL), then the
/// generation id as a native-endian i32 (`rd_kafka_consumer_group_metadata_write`, 2.2.0).
const MAGIC: &[u8] = b"CGMDv2:";

/// The generation of the group this member last joined; `None` before it joined (or if the
/// library's serialization is not the one above).
pub(crate) fn current(native: &NativeClient) -> Option<i32> {
    // SAFETY: `native.ptr()` is a live consumer handle for the duration of this call; the
    // metadata is destroyed and the buffer freed with librdkafka's own functions, once each.
    unsafe {
        let cgmd = rdkafka_sys::rd_kafka_consumer_group_metadata(native.ptr());
        if cgmd.is_null() {
            return None;
        }
        let mut buf: *mut std::ffi::c_void = std::ptr::null_mut();
        let mut size: usize = 0;
        let err = rdkafka_sys::rd_kafka_consumer_group_metadata_write(cgmd, &mut buf, &mut size);
        rdkafka_sys::rd_kafka_consumer_group_metadata_destroy(cgmd);
        if !err.is_null() {
            rdkafka_sys::rd_kafka_error_destroy(err);
            return None;
        }
        let bytes = std::slice::from_raw_parts(buf as *const u8, size).to_vec();
        rdkafka_sys::rd_kafka_mem_free(native.ptr(), buf);
        parse(&bytes)
    }
}

fn parse(bytes: &[u8]) -> Option<i32> {
    let rest = bytes.strip_prefix(MAGIC)?;
    let id: [u8; 4] = rest.get(..4)?.try_into().ok()?;
    Some(i32::from_ne_bytes(id))
}

/// What the member saw of rebalances, to tell a real one from one the coordinator skipped.
#[derive(Debug, Default)]
pub(crate) struct Watch {
    /// The generation of the last assignment.
    assigned: Option<i32>,
    /// A revoke came after that assignment.
    revoked: bool,
}

impl Watch {
    pub(crate) fn revoked(&mut self) {
        self.revoked = true;
    }

    /// Records an assignment in `generation`; true when it ended a rebalance that did not
    /// advance the generation (the coordinator skipped it: the member must rejoin anew).
    pub(crate) fn assigned(&mut self, generation: Option<i32>) -> bool {
        let stale = self.revoked && generation.is_some() && generation == self.assigned;
        self.assigned = generation;
        self.revoked = false;
        stale
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_generation_after_the_magic() {
        let mut b = MAGIC.to_vec();
        b.extend_from_slice(&7i32.to_ne_bytes());
        b.extend_from_slice(b"group\0member\0\x01");
        assert_eq!(parse(&b), Some(7));
        assert_eq!(parse(&b[..MAGIC.len() + 3]), None);
        assert_eq!(parse(b"CGMDv1:\x07\0\0\0"), None);
    }

    #[test]
    fn a_rebalance_that_keeps_the_generation_is_stale() {
        let mut w = Watch::default();
        assert!(!w.assigned(Some(1)), "first assignment");
        assert!(
            !w.assigned(Some(1)),
            "no revoke in between: not a rebalance"
        );
        w.revoked();
        assert!(!w.assigned(Some(2)), "a real rebalance");
        w.revoked();
        assert!(w.assigned(Some(2)), "skipped by the coordinator");
        w.revoked();
        assert!(!w.assigned(None), "unknown generation: no claim");
    }
}
