//! The progress of rotation requests: every key with a rotation request that is not revoked,
//! whether it was rotated, whether its successor was used, and its deadline. The keys come from
//! the indexed range query over rotation deadlines, so the report never scans keys without a
//! request. Successor usage is written behind the verify path and lags by one flush interval.

use keyturn_core::{Instant, KeyId, KeyState, TimedEvent};
use keyturn_store::DueFilter;

use crate::{Error, Keyring, MAX_REPORT_KEYS};

const PAGE_SIZE: u32 = 1_000;

/// One key of a rotation request campaign.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CampaignEntry {
    pub key_id: KeyId,
    pub name: String,
    pub owner: Option<String>,
    pub requested_at: Instant,
    pub deadline: Instant,
    /// The key's state now: `rotation_requested` until it is rotated or its deadline passes.
    pub state: KeyState,
    /// The successor, once the key was rotated.
    pub successor_id: Option<KeyId>,
    /// The successor's first use: `None` while no client has used it.
    pub successor_first_used_at: Option<Instant>,
}

impl Keyring {
    /// Lists the keys with a rotation request, optionally of one owner, the earliest deadline
    /// first. Fails with [`Error::ReportTooLarge`] when more than [`MAX_REPORT_KEYS`] keys have
    /// one.
    pub async fn rotation_request_report(&self, owner: Option<&str>) -> Result<Vec<CampaignEntry>, Error> {
        let now = self.clock.now();
        let mut entries = Vec::new();
        let mut cursor = None;
        let mut read = 0;
        loop {
            let filter = DueFilter {
                event: TimedEvent::RotationDeadlineReached,
                after: Instant::from_millis(i64::MIN),
                until: Instant::from_millis(i64::MAX),
                cursor: cursor.clone(),
                limit: PAGE_SIZE,
            };
            let page = self.store.list_due(&filter).await?;
            read += page.len();
            if read > MAX_REPORT_KEYS {
                return Err(Error::ReportTooLarge { limit: MAX_REPORT_KEYS });
            }
            let full = page.len() == PAGE_SIZE as usize;
            cursor = page.last().and_then(|key| key.rotation_deadline.map(|deadline| (deadline, key.key_id.clone())));
            for record in page {
                if owner.is_some_and(|owner| record.owner.as_deref() != Some(owner)) {
                    continue;
                }
                let (Some(requested_at), Some(deadline)) = (record.rotation_requested_at, record.rotation_deadline)
                else {
                    continue;
                };
                let successor_first_used_at = match &record.successor_id {
                    Some(successor_id) => self.store.get_key(successor_id).await?.and_then(|key| key.first_used_at),
                    None => None,
                };
                entries.push(CampaignEntry {
                    state: record.state_at(now),
                    key_id: record.key_id,
                    name: record.name,
                    owner: record.owner,
                    requested_at,
                    deadline,
                    successor_id: record.successor_id,
                    successor_first_used_at,
                });
            }
            if !full {
                return Ok(entries);
            }
        }
    }
}
