//! Cursor pagination of the key listing, for front ends that page through many keys. The store
//! applies the owner filter, the cursor and the limit in SQL; the state, expiry and idle filters
//! depend on the instant, so they are applied here.

use keyturn_core::KeyId;
use keyturn_store::KeyFilter;

use crate::{Error, KeyView, Keyring, ListFilter};

/// The largest page [`Keyring::list_page`] returns.
pub const MAX_PAGE_SIZE: u32 = 1000;
/// How many store reads one [`Keyring::list_page`] call makes at most while a state filter skips
/// keys; the page then ends early with a cursor.
const MAX_PAGE_READS: usize = 20;

/// One page of keys from [`Keyring::list_page`].
#[derive(Debug, Clone)]
pub struct KeyPage {
    pub keys: Vec<KeyView>,
    /// The cursor of the next page, absent when no more keys follow. A page can hold fewer keys
    /// than its limit and still have a next page, when a state filter skipped many keys.
    pub next_after: Option<KeyId>,
}

impl Keyring {
    /// Lists one page of keys after the key `after`, in creation order, at most `limit` of them
    /// (clamped to 1 to [`MAX_PAGE_SIZE`]). With a state filter it reads at most
    /// `MAX_PAGE_READS` batches of keys.
    pub async fn list_page(&self, filter: &ListFilter, after: Option<KeyId>, limit: u32) -> Result<KeyPage, Error> {
        let now = self.clock.now();
        let limit = limit.clamp(1, MAX_PAGE_SIZE);
        let batch = if filter.needs_scan() { MAX_PAGE_SIZE } else { limit + 1 };
        let mut keys: Vec<KeyView> = Vec::new();
        let mut scanned = after;

        for _ in 0..MAX_PAGE_READS {
            let store_filter = KeyFilter { owner: filter.owner.clone(), after: scanned.clone(), limit: Some(batch) };
            let records = self.store.list_keys(&store_filter).await?;
            let exhausted = records.len() < batch as usize;
            for record in records {
                let view = KeyView { state: record.state_at(now), record };
                if !filter.matches(&view, now) {
                    scanned = Some(view.record.key_id);
                    continue;
                }
                if keys.len() == limit as usize {
                    let next_after = keys.last().map(|last| last.record.key_id.clone());
                    return Ok(KeyPage { keys, next_after });
                }
                scanned = Some(view.record.key_id.clone());
                keys.push(view);
            }
            if exhausted {
                return Ok(KeyPage { keys, next_after: None });
            }
        }
        Ok(KeyPage { keys, next_after: scanned })
    }
}
