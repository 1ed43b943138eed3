//! The audit rows one transaction appends: each is signed into the audit chain when the store
//! has an audit key, and announced on the `keyturn::audit` tracing target once the transaction
//! has committed, so a log shipper receives exactly the rows the database kept.

use std::sync::Arc;

use keyturn_core::{AuditKey, KeyId, NewAuditEvent};

/// The tracing target of audit records.
pub const AUDIT_TARGET: &str = "keyturn::audit";

/// The audit key of one transaction and the events it appended.
pub(crate) struct AuditWrites {
    key: Option<Arc<AuditKey>>,
    written: Vec<(i64, NewAuditEvent)>,
}

impl AuditWrites {
    pub(crate) fn new(key: Option<Arc<AuditKey>>) -> Self {
        AuditWrites { key, written: Vec::new() }
    }

    /// Computes the MAC of the row `canonical`, chained to `previous`, when there is a key.
    pub(crate) fn sign(&self, previous: Option<&[u8]>, canonical: &str) -> Option<Vec<u8>> {
        self.key.as_ref().map(|key| key.chain_mac(previous, canonical).to_vec())
    }

    pub(crate) fn is_signing(&self) -> bool {
        self.key.is_some()
    }

    pub(crate) fn record(&mut self, seq: i64, event: &NewAuditEvent) {
        self.written.push((seq, event.clone()));
    }

    /// Emits one structured record per appended event. Call it after the commit.
    pub(crate) fn announce(self) {
        for (seq, event) in self.written {
            tracing::info!(
                target: AUDIT_TARGET,
                seq,
                event = event.event.as_str(),
                at = %event.at,
                key_id = event.key_id.as_ref().map(KeyId::as_str),
                actor = %event.actor.to_stored(),
                client_addr = event.client_addr.as_deref(),
                reason = event.reason.as_deref(),
                details = %event.details,
                signed = self.key.is_some(),
                "audit event"
            );
        }
    }
}
