//! The key-value peers, each behind its cargo feature (heavy builds stay out of the default).

#[cfg(any(feature = "fjall", feature = "rocksdb"))]
mod keys {
    use std::collections::HashMap;

    use parking_lot::Mutex;
    use replaystore::Chunk;

    /// Key of a chunk in the key-value peers: team, session, then a per-session sequence number,
    /// so a prefix scan reads one session in order.
    pub fn kv_key(team: u64, session: &str, seq: u64) -> Vec<u8> {
        let mut k = team.to_be_bytes().to_vec();
        k.extend_from_slice(session.as_bytes());
        k.push(0);
        k.extend_from_slice(&seq.to_be_bytes());
        k
    }

    pub fn kv_prefix(team: u64, session: &str) -> Vec<u8> {
        let mut k = team.to_be_bytes().to_vec();
        k.extend_from_slice(session.as_bytes());
        k.push(0);
        k
    }

    /// Per-session sequence numbers for the key-value peers.
    #[derive(Default)]
    pub struct Seqs(Mutex<HashMap<(u64, String), u64>>);

    impl Seqs {
        pub fn next(&self, c: &Chunk) -> u64 {
            let mut m = self.0.lock();
            let s = m.entry((c.team, c.session_id.clone())).or_default();
            *s += 1;
            *s
        }
    }
}

#[cfg(feature = "fjall")]
pub mod fjall_peer {
    use std::path::{Path, PathBuf};

    use fjall::{
        Config, KvSeparationOptions, PartitionCreateOptions, PartitionHandle, PersistMode,
    };
    use replaystore::Chunk;

    use super::keys::{kv_key, kv_prefix, Seqs};
    use crate::peers::{dir_bytes, io_err, Res, System};

    /// fjall (an LSM in Rust), LZ4, key-value separation for the large values.
    pub struct Fjall {
        dir: PathBuf,
        keyspace: fjall::Keyspace,
        part: PartitionHandle,
        seqs: Seqs,
    }

    impl Fjall {
        pub fn new(dir: &Path) -> Res<Self> {
            let keyspace = Config::new(dir).open().map_err(io_err)?;
            let opts = PartitionCreateOptions::default()
                .manual_journal_persist(true)
                .with_kv_separation(KvSeparationOptions::default());
            let part = keyspace.open_partition("chunks", opts).map_err(io_err)?;
            Ok(Fjall {
                dir: dir.to_path_buf(),
                keyspace,
                part,
                seqs: Seqs::default(),
            })
        }
    }

    impl System for Fjall {
        fn name(&self) -> String {
            "fjall (LSM, LZ4, kv separation)".into()
        }
        fn append(&self, _t: usize, c: &Chunk) -> Res<()> {
            let key = kv_key(c.team, &c.session_id, self.seqs.next(c));
            self.part.insert(key, &c.payload).map_err(io_err)
        }
        fn flush(&self, _t: usize) -> Res<()> {
            self.keyspace.persist(PersistMode::SyncData).map_err(io_err)
        }
        fn read(&self, team: u64, session: &str) -> Res<Option<usize>> {
            let mut n = 0;
            for kv in self.part.prefix(kv_prefix(team, session)) {
                n += kv.map_err(io_err)?.1.len();
            }
            Ok(Some(n))
        }
        fn disk_bytes(&self) -> u64 {
            dir_bytes(&self.dir)
        }
    }
}

#[cfg(feature = "rocksdb")]
pub mod rocksdb_peer {
    use std::path::{Path, PathBuf};

    use replaystore::Chunk;
    use rocksdb::{DBCompressionType, Options, WriteOptions, DB};

    use super::keys::{kv_key, kv_prefix, Seqs};
    use crate::peers::{dir_bytes, io_err, Res, System};

    /// RocksDB with zstd compression; a synced WAL flush per durability point.
    pub struct Rocks {
        dir: PathBuf,
        db: DB,
        seqs: Seqs,
    }

    impl Rocks {
        pub fn new(dir: &Path) -> Res<Self> {
            let mut o = Options::default();
            o.create_if_missing(true);
            o.set_compression_type(DBCompressionType::Zstd);
            let db = DB::open(&o, dir).map_err(io_err)?;
            Ok(Rocks {
                dir: dir.to_path_buf(),
                db,
                seqs: Seqs::default(),
            })
        }
    }

    impl System for Rocks {
        fn name(&self) -> String {
            "RocksDB (zstd)".into()
        }
        fn append(&self, _t: usize, c: &Chunk) -> Res<()> {
            let key = kv_key(c.team, &c.session_id, self.seqs.next(c));
            let mut w = WriteOptions::default();
            w.set_sync(false);
            self.db.put_opt(key, &c.payload, &w).map_err(io_err)
        }
        fn flush(&self, _t: usize) -> Res<()> {
            self.db.flush_wal(true).map_err(io_err)
        }
        fn read(&self, team: u64, session: &str) -> Res<Option<usize>> {
            let prefix = kv_prefix(team, session);
            let mut n = 0;
            for kv in self.db.prefix_iterator(&prefix) {
                let (k, v) = kv.map_err(io_err)?;
                if !k.starts_with(&prefix) {
                    break;
                }
                n += v.len();
            }
            Ok(Some(n))
        }
        fn disk_bytes(&self) -> u64 {
            let _ = self.db.flush();
            dir_bytes(&self.dir)
        }
    }
}
