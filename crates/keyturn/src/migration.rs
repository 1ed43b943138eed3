//! The migration report: every key in its overlap window, with the usage that shows whether its
//! clients have moved to the successor. The store selects the keys, their usage and their
//! successors' first use in one query, and `keyturn-core` computes each status. Usage is written
//! behind the verify path, so the report lags each process's clients by up to one flush interval.

use keyturn_core::{Instant, KeyId, MigrationStatus, Outcome};
use keyturn_store::{OverlapFilter, OverlappingKey};

use crate::{Error, Keyring, MAX_PAGE_SIZE};

/// How many pages of [`MAX_PAGE_SIZE`] keys [`Keyring::migration_report`] reads at most.
const MAX_REPORT_PAGES: usize = 100;

/// The maximum number of keys that [`Keyring::migration_report`] returns. It fails with
/// [`Error::ReportTooLarge`] when more keys match.
pub const MAX_REPORT_KEYS: usize = MAX_REPORT_PAGES * MAX_PAGE_SIZE as usize;

/// One key of the migration report: a rotated key in its overlap window and its successor.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MigrationEntry {
    pub key_id: KeyId,
    pub name: String,
    pub owner: Option<String>,
    pub rotated_at: Instant,
    pub overlap_ends_at: Instant,
    /// The old key's latest use.
    pub last_used_at: Option<Instant>,
    /// The client address of the old key's latest use that a usage flush recorded.
    pub last_client_addr: Option<String>,
    /// The allowed verifications of the old key after its rotation, counted per flush interval.
    pub uses_since_rotation: u64,
    pub successor_id: KeyId,
    /// The successor's first use: `None` while no client has moved to it.
    pub successor_first_used_at: Option<Instant>,
    pub status: MigrationStatus,
}

/// One page of the migration report.
#[derive(Debug, Clone)]
pub struct MigrationPage {
    pub keys: Vec<MigrationEntry>,
    /// The cursor of the next page, absent when no more keys follow.
    pub next_after: Option<KeyId>,
}

impl Keyring {
    /// Lists every key in its overlap window now, optionally of one owner, with the usage that
    /// shows whether its clients have moved to the successor. The keys whose window ends first
    /// come first. Fails with [`Error::ReportTooLarge`] when more than [`MAX_REPORT_KEYS`] keys
    /// match; [`Keyring::migration_report_page`] pages through any number.
    pub async fn migration_report(&self, owner: Option<&str>) -> Result<Vec<MigrationEntry>, Error> {
        let mut keys = Vec::new();
        let mut after = None;

        for _ in 0..MAX_REPORT_PAGES {
            let page = self.migration_report_page(owner, after, MAX_PAGE_SIZE).await?;
            keys.extend(page.keys);
            match page.next_after {
                Some(next) => after = Some(next),
                None => return Ok(keys),
            }
        }
        Err(Error::ReportTooLarge { limit: MAX_REPORT_KEYS })
    }

    /// Lists one page of the migration report after the key `after`, at most `limit` keys
    /// (clamped to 1 to [`MAX_PAGE_SIZE`]), ordered by the end of the overlap window, then key id.
    pub async fn migration_report_page(
        &self,
        owner: Option<&str>,
        after: Option<KeyId>,
        limit: u32,
    ) -> Result<MigrationPage, Error> {
        let now = self.clock.now();
        let limit = limit.clamp(1, MAX_PAGE_SIZE);
        // Reading one key more than the page shows whether another page follows.
        let filter = OverlapFilter { at: now, owner: owner.map(str::to_owned), after, limit: Some(limit + 1) };
        let mut rows = self.store.list_overlapping(&filter).await?;

        let more = rows.len() > limit as usize;
        rows.truncate(limit as usize);
        let next_after = if more { rows.last().map(|row| row.record.key_id.clone()) } else { None };
        let keys = rows.into_iter().filter_map(|row| migration_entry(row, now)).collect();
        Ok(MigrationPage { keys, next_after })
    }
}

/// Builds the report entry of a key that the store found in its overlap window, or `None` when
/// its state now is not superseded. Every rotation sets `rotated_at`, `overlap_ends_at` and
/// `successor_id` together, so a key without them was not written by keyturn and is skipped.
fn migration_entry(row: OverlappingKey, now: Instant) -> Option<MigrationEntry> {
    let record = row.record;
    if record.state_at(now).outcome != Outcome::Superseded {
        return None;
    }
    let (Some(rotated_at), Some(overlap_ends_at), Some(successor_id)) =
        (record.rotated_at, record.overlap_ends_at, record.successor_id)
    else {
        return None;
    };

    Some(MigrationEntry {
        key_id: record.key_id,
        name: record.name,
        owner: record.owner,
        rotated_at,
        overlap_ends_at,
        last_used_at: record.last_used_at,
        last_client_addr: row.last_client_addr,
        uses_since_rotation: row.uses_since_rotation,
        successor_id,
        successor_first_used_at: row.successor_first_used_at,
        status: MigrationStatus::of(record.last_used_at, row.successor_first_used_at),
    })
}
