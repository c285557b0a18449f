//! Opening a store on a fresh directory from the bucket alone (a partition moved to this
//! machine, docs/scale-out.md): every segment object is recorded verified, the bucket's `KEY`
//! and `tombstones.log` are installed, and the manifest is written last.

use std::path::{Path, PathBuf};

use super::client::Client;
use super::manifest::{Entry, Manifest, State};
use crate::error::{Error, Result};
use crate::failpoint::crash_point;
use crate::fs::Fs;

/// A meta file larger than this is not downloaded.
const MAX_META_BYTES: u64 = 1 << 30;

/// What an adoption works on (`RemoteTier::open` builds it for one call).
pub(super) struct Adoption<'a> {
    pub client: &'a Client,
    pub dir: &'a Path,
    pub fs: &'a Fs,
}

impl Adoption<'_> {
    /// Adopts the bucket on a directory with no manifest and no segment (a partition moved to
    /// this machine, docs/scale-out.md): records every segment object as verified, installs the
    /// bucket's `KEY` and `tombstones.log` (`install_meta`), and writes the manifest last. The
    /// manifest is the durable record that adoption is complete: a crash anywhere before it
    /// leaves a directory that the next open adopts again from the start, and every file it
    /// wrote is whole or absent (`Fs::replace_file`).
    pub(super) fn run(&self, m: &mut Manifest) -> Result<()> {
        let objects = self.client.list("segments")?;
        for o in &objects {
            let Some((lane_days, id)) = parse_segment_key(o.location.as_ref()) else {
                log::warn!("remote: ignoring {}: not a segment name", o.location);
                continue;
            };
            m.entries.insert(
                id,
                Entry {
                    id,
                    lane_days,
                    size: o.size,
                    crc32: 0,
                    state: State::Verified,
                },
            );
        }
        self.install_meta()?;
        crash_point("adopt:before_manifest");
        if !objects.is_empty() {
            log::info!(
                "remote: adopted {} segments from {}",
                m.entries.len(),
                self.client.url
            );
        }
        m.save()
    }

    /// The meta files of an adoption. The bucket's tombstone log (the one of the last sync) and
    /// its key replace whatever the directory holds: nothing (the usual case), or the files of
    /// an adoption cut short (whole, or torn or empty if an older version wrote them without
    /// fsync). One exception: a local log with a pending request the bucket's copy does not
    /// know (a deletion made in this directory while it was opened without the remote) is
    /// never overwritten; open fails and says so. A bucket without a tombstone log (a new
    /// prefix) leaves the directory's files as they are.
    fn install_meta(&self) -> Result<()> {
        let (dir, fs) = (self.dir, self.fs);
        let fetch = |name: &str| {
            self.client
                .get_small(&self.client.meta_key(name), MAX_META_BYTES)
        };
        let Some(log) = fetch("tombstones.log")? else {
            return Ok(());
        };
        let key = fetch("KEY")?;
        let log_path = dir.join("tombstones.log");
        let local = match fs.read(&log_path) {
            Ok(b) => Some(b),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
            Err(e) => return Err(Error::io(format!("read {}", log_path.display()), e)),
        };
        if let Some(local) = &local {
            let (_, theirs) = crate::tombstone::log_requests(&log);
            let (mine, _) = crate::tombstone::log_requests(local);
            let missing: Vec<u64> = mine
                .iter()
                .filter(|r| !theirs.contains(r))
                .map(|r| r.0)
                .collect();
            if !missing.is_empty() {
                return Err(Error::InvalidConfig {
                    field: "remote",
                    reason: format!(
                        "adopting {}: {} holds pending deletion requests {missing:?} that the \
                         bucket's tombstone log does not; refusing to overwrite them (this \
                         directory was used without the remote, or belongs to another store)",
                        self.client.url,
                        log_path.display()
                    ),
                });
            }
        }
        let key_path = dir.join("KEY");
        match key {
            Some(k) if k.len() == 32 => {
                if fs.read(&key_path).ok().as_deref() != Some(&k[..]) {
                    fs.replace_file(&key_path, &dir.join("KEY.tmp"), &[&k])?;
                }
            }
            Some(k) => {
                return Err(Error::Corrupt {
                    segment: 0,
                    path: PathBuf::from(self.client.meta_key("KEY").to_string()),
                    offset: 0,
                    reason: format!("the key file must hold exactly 32 bytes, holds {}", k.len()),
                })
            }
            // The old owner died between uploading the log and its key: pending requests stay
            // in force (they name their target in clear); retired ones no longer refuse late
            // chunks.
            None => log::error!(
                "remote: {} has a tombstone log but no KEY: retired deletions will not refuse \
                 late chunks",
                self.client.url
            ),
        }
        crash_point("adopt:after_key");
        if local.as_deref() != Some(&log[..]) {
            fs.replace_file(&log_path, &dir.join("tombstones.log.tmp"), &[&log])?;
        }
        Ok(())
    }
}

/// `.../segments/<days>d/<id>.seg` -> (days, id).
fn parse_segment_key(key: &str) -> Option<(u16, u64)> {
    let mut parts = key.rsplit('/');
    let file = parts.next()?;
    let lane = parts.next()?;
    let id = file.strip_suffix(".seg")?.parse().ok()?;
    let days = lane.strip_suffix('d')?.parse().ok()?;
    Some((days, id))
}

#[cfg(test)]
mod tests {
    use super::parse_segment_key;

    #[test]
    fn segment_keys_parse() {
        assert_eq!(
            parse_segment_key("p/segments/30d/00000000000000000042.seg"),
            Some((30, 42))
        );
        assert_eq!(parse_segment_key("p/segments/30d/x.seg"), None);
        assert_eq!(parse_segment_key("p/meta/KEY"), None);
    }
}
