//! [`Records`]: the storage service's file records and each owner's quota use, under one
//! lock.
//!
//! A file is *reserved* when its upload URL is issued: its declared size counts against
//! its owner's quota from then on, and the check and the reservation happen under the
//! same lock, so concurrent requests cannot all pass a quota that fits only some. A
//! reservation not used by its expiry is dropped and its bytes released. An upload
//! *claims* the file (one at a time, and only while reserved); it ends *uploaded*, with
//! the quota corrected to the bytes received, or goes back to reserved if it failed.

use std::collections::{BTreeSet, HashMap};
use std::sync::{Mutex, MutexGuard, PoisonError};

/// Where a file is in its life.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Stage {
    /// An upload URL was issued; unused, the reservation ends at `expires` (Unix
    /// seconds).
    Reserved {
        /// When the reservation ends.
        expires: u64,
    },
    /// An upload is under way.
    Uploading,
    /// The bytes are stored.
    Uploaded,
}

/// A file's record.
#[derive(Clone, Debug)]
pub(super) struct FileMeta {
    pub(super) owner: String,
    pub(super) name: String,
    /// Declared while reserved or uploading, received once uploaded: what counts
    /// against the quota.
    pub(super) size: u64,
    pub(super) content_type: String,
    pub(super) stage: Stage,
}

/// Why an upload cannot start.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum ClaimRefused {
    /// No such file (never reserved, deleted, or its reservation expired).
    NotFound,
    /// Another upload of the file is under way.
    InProgress,
    /// The file was uploaded already: upload URLs work once.
    AlreadyUploaded,
}

#[derive(Debug, Default)]
struct Table {
    files: HashMap<String, FileMeta>,
    /// Bytes counted against each owner's quota.
    usage: HashMap<String, u64>,
    /// Reservations by expiry.
    expiring: BTreeSet<(u64, String)>,
}

impl Table {
    fn release(&mut self, owner: &str, bytes: u64) {
        if let Some(used) = self.usage.get_mut(owner) {
            *used = used.saturating_sub(bytes);
            if *used == 0 {
                self.usage.remove(owner);
            }
        }
    }

    fn remove(&mut self, id: &str) -> Option<FileMeta> {
        let meta = self.files.remove(id)?;
        if let Stage::Reserved { expires } = meta.stage {
            self.expiring.remove(&(expires, id.to_owned()));
        }
        self.release(&meta.owner, meta.size);
        Some(meta)
    }

    /// Drops the reservations that ended by `now`; how many.
    fn sweep(&mut self, now: u64) -> usize {
        let mut dropped = 0;
        while let Some((expires, id)) = self.expiring.first() {
            if *expires >= now {
                break;
            }
            let id = id.clone();
            self.remove(&id);
            dropped += 1;
        }
        dropped
    }
}

/// See the [module docs](self).
#[derive(Debug, Default)]
pub(super) struct Records {
    table: Mutex<Table>,
}

impl Records {
    fn lock(&self) -> MutexGuard<'_, Table> {
        self.table.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Reserves `meta.size` bytes of `meta.owner`'s `quota` for file `id` until
    /// `expires`, unless that would exceed the quota: then the bytes the owner uses
    /// already.
    pub(super) fn reserve(
        &self,
        id: &str,
        mut meta: FileMeta,
        quota: u64,
        expires: u64,
        now: u64,
    ) -> Result<(), u64> {
        debug_assert!(expires >= now);
        let mut table = self.lock();
        table.sweep(now);
        let used = table.usage.get(&meta.owner).copied().unwrap_or(0);
        if used.saturating_add(meta.size) > quota {
            return Err(used);
        }
        *table.usage.entry(meta.owner.clone()).or_insert(0) += meta.size;
        meta.stage = Stage::Reserved { expires };
        table.expiring.insert((expires, id.to_owned()));
        table.files.insert(id.to_owned(), meta);
        Ok(())
    }

    /// Starts the upload of `id`: its record, now uploading, and when its reservation
    /// would have ended.
    pub(super) fn claim(&self, id: &str, now: u64) -> Result<(FileMeta, u64), ClaimRefused> {
        let mut table = self.lock();
        let meta = table.files.get_mut(id).ok_or(ClaimRefused::NotFound)?;
        let expires = match meta.stage {
            Stage::Uploaded => return Err(ClaimRefused::AlreadyUploaded),
            Stage::Uploading => return Err(ClaimRefused::InProgress),
            Stage::Reserved { expires } if expires < now => return Err(ClaimRefused::NotFound),
            Stage::Reserved { expires } => expires,
        };
        meta.stage = Stage::Uploading;
        let meta = meta.clone();
        table.expiring.remove(&(expires, id.to_owned()));
        Ok((meta, expires))
    }

    /// The upload of `id` failed: reserved again until `expires` (it may be retried).
    pub(super) fn unclaim(&self, id: &str, expires: u64) {
        let mut table = self.lock();
        if let Some(meta) = table.files.get_mut(id) {
            if meta.stage == Stage::Uploading {
                meta.stage = Stage::Reserved { expires };
                table.expiring.insert((expires, id.to_owned()));
            }
        }
    }

    /// The upload of `id` stored `received` bytes (at most the reserved size): the
    /// rest of the reservation goes back to the quota. `false` if the file was deleted
    /// meanwhile.
    pub(super) fn complete(&self, id: &str, received: u64) -> bool {
        let mut table = self.lock();
        let Some(meta) = table.files.get_mut(id) else {
            return false;
        };
        if meta.stage != Stage::Uploading {
            return false;
        }
        let unused = meta.size.saturating_sub(received);
        meta.size = received;
        meta.stage = Stage::Uploaded;
        let owner = meta.owner.clone();
        table.release(&owner, unused);
        true
    }

    /// The record of `id`.
    pub(super) fn get(&self, id: &str) -> Option<FileMeta> {
        self.lock().files.get(id).cloned()
    }

    /// Removes the record of `id`, releasing its bytes.
    pub(super) fn remove(&self, id: &str) -> Option<FileMeta> {
        self.lock().remove(id)
    }

    /// Drops the reservations that ended by `now`; how many.
    pub(super) fn sweep(&self, now: u64) -> usize {
        self.lock().sweep(now)
    }

    /// The bytes counted against `owner`'s quota.
    #[cfg(test)]
    pub(super) fn used_by(&self, owner: &str) -> u64 {
        self.lock().usage.get(owner).copied().unwrap_or(0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn meta(owner: &str, size: u64) -> FileMeta {
        FileMeta {
            owner: owner.into(),
            name: "f".into(),
            size,
            content_type: String::new(),
            stage: Stage::Uploaded,
        }
    }

    #[test]
    fn the_quota_counts_reservations_and_expired_ones_are_released() {
        let r = Records::default();
        assert_eq!(r.reserve("a", meta("u", 60), 100, 10, 0), Ok(()));
        assert_eq!(r.reserve("b", meta("u", 50), 100, 20, 0), Err(60));
        assert_eq!(
            r.reserve("b", meta("v", 50), 100, 20, 0),
            Ok(()),
            "per owner"
        );
        // At 11, a's reservation (until 10) is gone.
        assert_eq!(r.reserve("c", meta("u", 100), 100, 30, 11), Ok(()));
        assert!(r.get("a").is_none());
        assert_eq!(r.used_by("u"), 100);
    }

    #[test]
    fn an_upload_claims_once_and_a_failed_one_can_be_retried() {
        let r = Records::default();
        r.reserve("a", meta("u", 10), 100, 50, 0).unwrap();
        let (_, expires) = r.claim("a", 1).unwrap();
        assert_eq!(expires, 50);
        assert_eq!(r.claim("a", 1).unwrap_err(), ClaimRefused::InProgress);
        assert_eq!(r.sweep(60), 0, "an upload under way does not expire");
        r.unclaim("a", expires);
        let _ = r.claim("a", 2).unwrap();
        assert!(r.complete("a", 4));
        assert_eq!(r.used_by("u"), 4, "the unused part is released");
        assert_eq!(r.claim("a", 3).unwrap_err(), ClaimRefused::AlreadyUploaded);
        assert_eq!(r.claim("zz", 3).unwrap_err(), ClaimRefused::NotFound);
    }

    #[test]
    fn a_file_deleted_during_its_upload_is_not_completed() {
        let r = Records::default();
        r.reserve("a", meta("u", 10), 100, 50, 0).unwrap();
        let _ = r.claim("a", 1).unwrap();
        assert!(r.remove("a").is_some());
        assert!(!r.complete("a", 10));
        assert_eq!(r.used_by("u"), 0);
    }

    #[test]
    fn an_unused_reservation_expires_after_its_last_second() {
        let r = Records::default();
        r.reserve("a", meta("u", 10), 100, 50, 0).unwrap();
        assert_eq!(r.sweep(50), 0, "valid through second 50");
        assert!(r.claim("a", 50).is_ok());
        r.unclaim("a", 50);
        assert_eq!(r.sweep(51), 1);
        assert_eq!(r.used_by("u"), 0);
    }
}
