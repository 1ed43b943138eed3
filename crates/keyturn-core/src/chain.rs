//! The tamper-evident audit chain. Each audit row stores a canonical serialisation of itself
//! (which names its sequence number) and a MAC: HMAC-SHA256 under the audit key of the previous
//! row's MAC followed by the row's canonical text. The audit key lives outside the database, like
//! the pepper, so a database writer can edit rows but cannot compute their MACs again.
//!
//! [`ChainVerifier`] walks the rows in sequence order and reports the first one that was edited,
//! removed, inserted or reordered. A [`Checkpoint`] (the sequence number and MAC of the newest row
//! at some instant, kept outside the database) also detects a truncated tail.

use std::fmt;

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use hmac::{Hmac, Mac};
use rand_core::{CryptoRng, RngCore};
use serde::{Deserialize, Serialize};
use sha2::Sha256;
use subtle::ConstantTimeEq;
use zeroize::{Zeroize, ZeroizeOnDrop};

use crate::{AuditEvent, Error};

/// The minimum number of random bytes in an audit key.
const MIN_AUDIT_KEY_BYTES: usize = 32;

/// The MAC length: one HMAC-SHA256 output.
pub const MAC_BYTES: usize = 32;

/// The key of the audit chain's MACs. Its `Debug` output is redacted, it compares in constant
/// time, and its memory is zeroed on drop.
#[derive(Clone, Zeroize, ZeroizeOnDrop)]
pub struct AuditKey(Vec<u8>);

impl AuditKey {
    /// Parses an audit key written as base64 of at least 32 bytes, as `keyturn init` generates.
    /// `source` names where the text came from, for the error message, which never quotes it.
    pub fn parse(text: &str, source: &str) -> Result<AuditKey, Error> {
        let bytes = STANDARD.decode(text.trim()).map_err(|_| Error::InvalidAuditKey {
            origin: source.to_owned(),
            reason: "it is not valid base64".to_owned(),
        })?;
        if bytes.len() < MIN_AUDIT_KEY_BYTES {
            return Err(Error::InvalidAuditKey {
                origin: source.to_owned(),
                reason: format!(
                    "it is {} bytes long; use at least {MIN_AUDIT_KEY_BYTES} random bytes, as `keyturn init` generates",
                    bytes.len()
                ),
            });
        }
        Ok(AuditKey(bytes))
    }

    /// Generates the base64 text of a new 32-byte audit key.
    pub fn generate<R: RngCore + CryptoRng>(rng: &mut R) -> String {
        let mut bytes = [0u8; MIN_AUDIT_KEY_BYTES];
        rng.fill_bytes(&mut bytes);
        let text = STANDARD.encode(bytes);
        bytes.fill(0);
        text
    }

    /// Computes the MAC of a row whose canonical text is `canonical` and whose predecessor's MAC
    /// is `previous`. The first row of a chain, and a row after rows written without an audit
    /// key, has no previous MAC and is chained to 32 zero bytes.
    pub fn chain_mac(&self, previous: Option<&[u8]>, canonical: &str) -> [u8; MAC_BYTES] {
        // HMAC accepts keys of any length, so building one cannot fail.
        let mut mac = Hmac::<Sha256>::new_from_slice(&self.0).expect("HMAC accepts any key length");
        mac.update(previous.unwrap_or(&[0u8; MAC_BYTES]));
        mac.update(canonical.as_bytes());
        mac.finalize().into_bytes().into()
    }
}

impl fmt::Debug for AuditKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("AuditKey(<redacted>)")
    }
}

impl PartialEq for AuditKey {
    fn eq(&self, other: &Self) -> bool {
        self.0.ct_eq(&other.0).into()
    }
}

impl Eq for AuditKey {}

/// The sequence number and MAC of the newest audit row at some instant. Kept outside the
/// database (an export ends with one), it proves that the chain once reached that row.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Checkpoint {
    pub seq: i64,
    /// The row's MAC as lowercase hexadecimal.
    pub mac: String,
}

/// The first place where the chain does not hold.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ChainBreak {
    /// Rows with these sequence numbers are missing.
    Removed { first: i64, last: i64 },
    /// The row's canonical text names another sequence number: rows were moved or renumbered.
    Reordered { seq: i64, names: Option<i64> },
    /// The row's columns no longer match its canonical text.
    Edited { seq: i64 },
    /// The row's MAC does not match: it was edited or inserted, or another key wrote the chain.
    BadMac { seq: i64 },
    /// The row has no MAC although an earlier row has one.
    Unsigned { seq: i64 },
    /// The chain ends before the checkpoint's row: its tail was truncated.
    Truncated { last: Option<i64>, checkpoint: i64 },
    /// The checkpoint's row exists but has another MAC.
    CheckpointMismatch { seq: i64 },
}

impl ChainBreak {
    /// Returns the sequence number of the first row that does not hold, for exit messages.
    pub fn seq(&self) -> Option<i64> {
        match self {
            ChainBreak::Removed { first, .. } => Some(*first),
            ChainBreak::Reordered { seq, .. }
            | ChainBreak::Edited { seq }
            | ChainBreak::BadMac { seq }
            | ChainBreak::Unsigned { seq }
            | ChainBreak::CheckpointMismatch { seq } => Some(*seq),
            ChainBreak::Truncated { last, .. } => last.map(|last| last + 1).or(Some(1)),
        }
    }
}

impl fmt::Display for ChainBreak {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ChainBreak::Removed { first, last } if first == last => write!(f, "audit row {first} was removed"),
            ChainBreak::Removed { first, last } => write!(f, "audit rows {first} to {last} were removed"),
            ChainBreak::Reordered { seq, names: Some(names) } => {
                write!(f, "audit row {seq} holds the canonical text of row {names}: rows were reordered or renumbered")
            }
            ChainBreak::Reordered { seq, names: None } => {
                write!(f, "audit row {seq} has canonical text without a sequence number: it was edited")
            }
            ChainBreak::Edited { seq } => {
                write!(f, "audit row {seq} was edited: its columns no longer match its canonical text")
            }
            ChainBreak::BadMac { seq } => write!(
                f,
                "the MAC of audit row {seq} does not match: the row was edited or inserted, or the audit key is not \
                 the one that wrote the chain"
            ),
            ChainBreak::Unsigned { seq } => write!(
                f,
                "audit row {seq} has no MAC although earlier rows have one: it was inserted, or a process without \
                 the audit key wrote it"
            ),
            ChainBreak::Truncated { last: Some(last), checkpoint } => write!(
                f,
                "the audit chain ends at row {last}, but the checkpoint names row {checkpoint}: rows after {last} \
                 were removed"
            ),
            ChainBreak::Truncated { last: None, checkpoint } => {
                write!(f, "the audit log is empty, but the checkpoint names row {checkpoint}: every row was removed")
            }
            ChainBreak::CheckpointMismatch { seq } => {
                write!(f, "audit row {seq} has another MAC than the checkpoint records: the chain was rewritten")
            }
        }
    }
}

/// The result of a complete walk of the chain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChainSummary {
    /// The rows walked.
    pub rows: u64,
    /// Rows at the start of the chain written before an audit key was configured. They carry no
    /// MAC, so nothing proves they are unchanged.
    pub unsigned_prefix: u64,
    /// The newest row, as a checkpoint; `None` for an empty log or one without a signed row.
    pub head: Option<Checkpoint>,
}

/// Walks audit rows in sequence order and stops at the first one that breaks the chain.
#[derive(Debug)]
pub struct ChainVerifier<'a> {
    key: &'a AuditKey,
    checkpoint: Option<Checkpoint>,
    checkpoint_seen: bool,
    next_seq: i64,
    previous: Option<[u8; MAC_BYTES]>,
    rows: u64,
    unsigned_prefix: u64,
    head: Option<Checkpoint>,
}

impl<'a> ChainVerifier<'a> {
    /// Starts a walk from row 1, optionally checking the rows against a checkpoint.
    pub fn new(key: &'a AuditKey, checkpoint: Option<Checkpoint>) -> Self {
        ChainVerifier {
            key,
            checkpoint,
            checkpoint_seen: false,
            next_seq: 1,
            previous: None,
            rows: 0,
            unsigned_prefix: 0,
            head: None,
        }
    }

    /// Checks the next row. Rows must come in the order the store lists them, by sequence number.
    pub fn push(&mut self, row: &AuditEvent) -> Result<(), ChainBreak> {
        if row.seq > self.next_seq {
            return Err(ChainBreak::Removed { first: self.next_seq, last: row.seq - 1 });
        }
        if row.seq < self.next_seq {
            return Err(ChainBreak::Reordered { seq: row.seq, names: Some(row.seq) });
        }
        let names = canonical_seq(&row.canonical);
        if names != Some(row.seq) {
            return Err(ChainBreak::Reordered { seq: row.seq, names });
        }
        if row.event.canonical(row.seq) != row.canonical {
            return Err(ChainBreak::Edited { seq: row.seq });
        }

        match &row.mac {
            None if self.previous.is_none() => self.unsigned_prefix += 1,
            None => return Err(ChainBreak::Unsigned { seq: row.seq }),
            Some(mac) => {
                let expected =
                    self.key.chain_mac(self.previous.as_ref().map(<[u8; MAC_BYTES]>::as_slice), &row.canonical);
                if !bool::from(expected.ct_eq(mac.as_slice())) {
                    return Err(ChainBreak::BadMac { seq: row.seq });
                }
                self.previous = Some(expected);
                self.head = Some(Checkpoint { seq: row.seq, mac: to_hex(&expected) });
            }
        }
        if let Some(checkpoint) = &self.checkpoint {
            if checkpoint.seq == row.seq {
                let recorded = row.mac.as_deref().map(to_hex);
                if recorded.as_deref() != Some(checkpoint.mac.as_str()) {
                    return Err(ChainBreak::CheckpointMismatch { seq: row.seq });
                }
                self.checkpoint_seen = true;
            }
        }
        self.rows += 1;
        self.next_seq = row.seq + 1;
        Ok(())
    }

    /// Ends the walk: fails when a checkpoint names a row past the end of the chain.
    pub fn finish(self) -> Result<ChainSummary, ChainBreak> {
        if let Some(checkpoint) = &self.checkpoint {
            if !self.checkpoint_seen {
                let last = (self.next_seq > 1).then_some(self.next_seq - 1);
                return Err(ChainBreak::Truncated { last, checkpoint: checkpoint.seq });
            }
        }
        Ok(ChainSummary { rows: self.rows, unsigned_prefix: self.unsigned_prefix, head: self.head })
    }
}

/// Returns the sequence number that a canonical text names.
fn canonical_seq(canonical: &str) -> Option<i64> {
    let value: serde_json::Value = serde_json::from_str(canonical).ok()?;
    value.get("seq")?.as_i64()
}

/// Writes bytes as lowercase hexadecimal.
pub fn to_hex(bytes: &[u8]) -> String {
    bytes.iter().map(|byte| format!("{byte:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use rand_core::OsRng;
    use serde_json::json;

    use super::*;
    use crate::{Actor, AuditEventType, Instant, KeyId, NewAuditEvent};

    fn key() -> AuditKey {
        AuditKey::parse(&AuditKey::generate(&mut OsRng), "test").unwrap()
    }

    fn event(n: i64) -> NewAuditEvent {
        NewAuditEvent::new(
            AuditEventType::AuthnTokenCreated,
            Instant::from_millis(1_000 * n),
            Some(KeyId::parse(&format!("key{n:09}")).unwrap()),
            Actor::Cli("ops".into()),
        )
        .with_details(json!({ "n": n }))
    }

    /// Builds a signed chain of `count` rows, as a store writes it.
    fn chain(key: &AuditKey, count: i64) -> Vec<AuditEvent> {
        let mut rows: Vec<AuditEvent> = Vec::new();
        for seq in 1..=count {
            let event = event(seq);
            let canonical = event.canonical(seq);
            let previous = rows.last().and_then(|row| row.mac.clone());
            let mac = key.chain_mac(previous.as_deref(), &canonical).to_vec();
            rows.push(AuditEvent { seq, event, canonical, mac: Some(mac) });
        }
        rows
    }

    fn verify(key: &AuditKey, rows: &[AuditEvent], checkpoint: Option<Checkpoint>) -> Result<ChainSummary, ChainBreak> {
        let mut verifier = ChainVerifier::new(key, checkpoint);
        for row in rows {
            verifier.push(row)?;
        }
        verifier.finish()
    }

    #[test]
    fn intact_chain_verifies() {
        let key = key();
        let rows = chain(&key, 5);
        let summary = verify(&key, &rows, None).unwrap();
        assert_eq!(summary.rows, 5);
        assert_eq!(summary.unsigned_prefix, 0);
        assert_eq!(summary.head.unwrap().seq, 5);
        assert_eq!(verify(&key, &[], None).unwrap().rows, 0);
    }

    #[test]
    fn edited_column_is_found() {
        let key = key();
        let mut rows = chain(&key, 5);
        rows[2].event.reason = Some("nothing happened".into());
        assert_eq!(verify(&key, &rows, None), Err(ChainBreak::Edited { seq: 3 }));
    }

    #[test]
    fn edited_row_with_new_canonical_fails_mac() {
        let key = key();
        let mut rows = chain(&key, 5);
        rows[2].event.reason = Some("nothing happened".into());
        rows[2].canonical = rows[2].event.canonical(3);
        assert_eq!(verify(&key, &rows, None), Err(ChainBreak::BadMac { seq: 3 }));
    }

    #[test]
    fn removed_rows_are_found() {
        let key = key();
        let mut rows = chain(&key, 6);
        rows.drain(2..4);
        assert_eq!(verify(&key, &rows, None), Err(ChainBreak::Removed { first: 3, last: 4 }));
        let mut rows = chain(&key, 3);
        rows.remove(0);
        assert_eq!(verify(&key, &rows, None), Err(ChainBreak::Removed { first: 1, last: 1 }));
    }

    #[test]
    fn swapped_rows_are_found() {
        let key = key();
        let mut rows = chain(&key, 5);
        // Swap the contents of rows 2 and 3 but keep the sequence numbers in order.
        let (second, third) = (rows[1].clone(), rows[2].clone());
        rows[1] = AuditEvent { seq: 2, ..third };
        rows[2] = AuditEvent { seq: 3, ..second };
        assert_eq!(verify(&key, &rows, None), Err(ChainBreak::Reordered { seq: 2, names: Some(3) }));
    }

    #[test]
    fn inserted_row_fails_mac() {
        let key = key();
        let other = AuditKey::parse(&AuditKey::generate(&mut OsRng), "other").unwrap();
        let mut rows = chain(&key, 3);
        let forged = event(4);
        let canonical = forged.canonical(4);
        let mac = other.chain_mac(rows[2].mac.as_deref(), &canonical).to_vec();
        rows.push(AuditEvent { seq: 4, event: forged, canonical, mac: Some(mac) });
        assert_eq!(verify(&key, &rows, None), Err(ChainBreak::BadMac { seq: 4 }));
        assert_eq!(verify(&other, &rows, None), Err(ChainBreak::BadMac { seq: 1 }));
    }

    #[test]
    fn unsigned_row_after_signed_is_found() {
        let key = key();
        let mut rows = chain(&key, 4);
        rows[2].mac = None;
        assert_eq!(verify(&key, &rows, None), Err(ChainBreak::Unsigned { seq: 3 }));
    }

    #[test]
    fn unsigned_prefix_is_counted() {
        let key = key();
        let mut rows = chain(&key, 4);
        for row in &mut rows[..2] {
            row.mac = None;
        }
        let mac = key.chain_mac(None, &rows[2].canonical).to_vec();
        rows[2].mac = Some(mac.clone());
        rows[3].mac = Some(key.chain_mac(Some(&mac), &rows[3].canonical).to_vec());
        let summary = verify(&key, &rows, None).unwrap();
        assert_eq!(summary.unsigned_prefix, 2);
        assert_eq!(summary.rows, 4);
    }

    #[test]
    fn checkpoint_detects_truncated_tail() {
        let key = key();
        let rows = chain(&key, 6);
        let head = verify(&key, &rows, None).unwrap().head.unwrap();
        assert!(verify(&key, &rows, Some(head.clone())).is_ok());
        assert_eq!(
            verify(&key, &rows[..4], Some(head.clone())),
            Err(ChainBreak::Truncated { last: Some(4), checkpoint: 6 })
        );
        assert_eq!(verify(&key, &[], Some(head.clone())), Err(ChainBreak::Truncated { last: None, checkpoint: 6 }));
        let wrong = Checkpoint { seq: 6, mac: "00".repeat(32) };
        assert_eq!(verify(&key, &rows, Some(wrong)), Err(ChainBreak::CheckpointMismatch { seq: 6 }));
    }

    #[test]
    fn audit_key_rejects_short_and_hides_value() {
        let short = STANDARD.encode([7u8; 16]);
        let message = AuditKey::parse(&short, "KEYTURN_AUDIT_KEY").unwrap_err().to_string();
        assert!(message.contains("16 bytes"), "{message}");
        assert!(!message.contains(&short), "{message}");
        let message = AuditKey::parse("not base64!", "KEYTURN_AUDIT_KEY").unwrap_err().to_string();
        assert!(!message.contains("not base64!"), "{message}");
        assert_eq!(format!("{:?}", key()), "AuditKey(<redacted>)");
    }
}
