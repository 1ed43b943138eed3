//! Copying every key, usage counter and audit event from one store to another, the way a team
//! moves from the embedded SQLite store to PostgreSQL. Rows are copied unchanged, hashes and
//! audit MACs included, so tokens keep verifying under the same pepper and the audit chain stays
//! verifiable. The copy is checked afterwards: row counts, every key record, and every audit row's
//! sequence number, canonical text and MAC.

use keyturn_store::{AuditFilter, CopiedKey, KeyFilter, RowCounts, Store};

use crate::Error;

/// How many keys or audit events are read and written per transaction.
const BATCH: u32 = 1_000;

/// The rows [`copy_store`] copied, and the target's row counts afterwards.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CopyReport {
    pub copied: RowCounts,
    /// The target's row counts after the copy, which include rows it held before.
    pub target: RowCounts,
}

/// Copies every key with its usage counters, then every audit event, from `source` to `target`,
/// and checks the result. A target that contains rows is rejected unless `allow_non_empty` is
/// set. Then a key id or audit sequence number that exists in both stores fails the batch that
/// contains it.
///
/// Each batch is written in one transaction, so a failure leaves whole batches behind: the error
/// says so, and the remedy is a new, empty target. The source must not change during the copy:
/// stop its writers first, because a change made meanwhile fails the final check.
pub async fn copy_store(source: &dyn Store, target: &dyn Store, allow_non_empty: bool) -> Result<CopyReport, Error> {
    let before = target.row_counts().await?;
    if !before.is_empty() && !allow_non_empty {
        return Err(Error::InvalidInput {
            field: "target",
            reason: format!(
                "{} already holds {}; copy into an empty database, or allow a non-empty target whose key ids and \
                 audit sequence numbers differ from the source's",
                target.location(),
                describe(&before)
            ),
        });
    }
    let expected = source.row_counts().await?;
    if !before.is_empty() {
        check_no_collision(source, target).await?;
    }

    let mut copied = RowCounts::default();
    let result = copy_rows(source, target, &mut copied).await;
    if let Err(error) = result {
        return Err(partial_copy(target, &copied, error));
    }

    let after = target.row_counts().await?;
    let sum = RowCounts {
        keys: before.keys + expected.keys,
        audit_events: before.audit_events + expected.audit_events,
        usage_counters: before.usage_counters + expected.usage_counters,
    };
    if copied != expected || after != sum {
        return Err(Error::CopyCheck(format!(
            "the source held {} when the copy started and {} were copied, so the target should hold {}, but it \
             holds {}; stop every writer of the source and copy into a new, empty target",
            describe(&expected),
            describe(&copied),
            describe(&sum),
            describe(&after)
        )));
    }
    check_keys(source, target).await?;
    check_audit(source, target).await?;
    check_policies(source, target).await?;
    Ok(CopyReport { copied, target: after })
}

/// Checks that the target contains every policy of the source unchanged.
async fn check_policies(source: &dyn Store, target: &dyn Store) -> Result<(), Error> {
    let copied = target.list_policies().await?;
    for policy in source.list_policies().await? {
        if !copied.contains(&policy) {
            return Err(Error::CopyCheck(format!(
                "policy {} differs between the source and the target, or is missing from the target; stop every \
                 writer of the source and copy into a new, empty target",
                policy.name
            )));
        }
    }
    Ok(())
}

async fn copy_rows(source: &dyn Store, target: &dyn Store, copied: &mut RowCounts) -> Result<(), Error> {
    // The source does not export when a policy changed, so copies are stamped with now.
    let policies = source.list_policies().await?;
    let at = keyturn_core::Clock::now(&keyturn_core::SystemClock);
    target.import_policies(&policies, at).await?;

    let mut after = None;
    loop {
        let filter = KeyFilter { after, limit: Some(BATCH), ..KeyFilter::default() };
        let records = source.list_keys(&filter).await?;
        let Some(last) = records.last() else { break };
        after = Some(last.key_id.clone());

        let mut keys = Vec::with_capacity(records.len());
        for record in records {
            let usage = source.usage_counts(&record.key_id).await?;
            let last_client_addr = source.last_client_addr(&record.key_id).await?;
            let uses_since_rotation = source.uses_since_rotation(&record.key_id).await?;
            keys.push(CopiedKey { record, last_client_addr, usage, uses_since_rotation });
        }
        target.import(&keys, &[]).await?;
        copied.keys += keys.len() as u64;
        copied.usage_counters += keys.iter().map(|key| key.usage.len() as u64).sum::<u64>();
    }

    let mut after_seq = None;
    loop {
        let filter = AuditFilter { after_seq, limit: Some(BATCH), ..AuditFilter::default() };
        let events = source.list_audit(&filter).await?;
        let Some(last) = events.last() else { break };
        after_seq = Some(last.seq);
        target.import(&[], &events).await?;
        copied.audit_events += events.len() as u64;
    }
    Ok(())
}

/// Wraps an error that stopped the copy with what the target now holds.
fn partial_copy(target: &dyn Store, copied: &RowCounts, error: Error) -> Error {
    if copied.is_empty() {
        return error;
    }
    Error::CopyCheck(format!(
        "{error}; {} was already written to {}, which now holds a partial copy, so copy again into a new, empty \
         database",
        describe(copied),
        target.location()
    ))
}

/// Describes row counts for a message, such as "3 keys, 2 usage counters and 7 audit events".
fn describe(counts: &RowCounts) -> String {
    format!("{} keys, {} usage counters and {} audit events", counts.keys, counts.usage_counters, counts.audit_events)
}

/// Rejects, before anything is written, a copy into a non-empty target where a source key id or
/// audit sequence number exists already.
async fn check_no_collision(source: &dyn Store, target: &dyn Store) -> Result<(), Error> {
    let collision = |what: String| {
        Error::CopyCheck(format!(
            "{what} exists in both {} and {}; nothing was copied, so copy into a new, empty database",
            source.location(),
            target.location()
        ))
    };
    let first = source.list_audit(&AuditFilter { limit: Some(1), ..AuditFilter::default() }).await?;
    if let Some(first) = first.first() {
        let overlap = AuditFilter { after_seq: Some(first.seq - 1), limit: Some(1), ..AuditFilter::default() };
        if let Some(taken) = target.list_audit(&overlap).await?.first() {
            return Err(collision(format!("audit sequence number {}", taken.seq)));
        }
    }
    let mut after = None;
    loop {
        let filter = KeyFilter { after, limit: Some(BATCH), ..KeyFilter::default() };
        let records = source.list_keys(&filter).await?;
        let Some(last) = records.last() else { return Ok(()) };
        after = Some(last.key_id.clone());
        for record in &records {
            if target.get_key(&record.key_id).await?.is_some() {
                return Err(collision(format!("key id {}", record.key_id)));
            }
        }
    }
}

/// Checks that every source key reads back from the target unchanged, with the same usage
/// counters and usage since rotation.
async fn check_keys(source: &dyn Store, target: &dyn Store) -> Result<(), Error> {
    let mut after = None;
    loop {
        let filter = KeyFilter { after, limit: Some(BATCH), ..KeyFilter::default() };
        let records = source.list_keys(&filter).await?;
        let Some(last) = records.last() else { return Ok(()) };
        after = Some(last.key_id.clone());
        for record in records {
            let copy = target.get_key(&record.key_id).await?;
            let usage_matches = target.usage_counts(&record.key_id).await?
                == source.usage_counts(&record.key_id).await?
                && target.uses_since_rotation(&record.key_id).await?
                    == source.uses_since_rotation(&record.key_id).await?;
            if copy.as_ref() != Some(&record) || !usage_matches {
                return Err(Error::CopyCheck(format!(
                    "key {} differs between the source and the target after the copy; stop every writer of the \
                     source and copy into a new, empty target",
                    record.key_id
                )));
            }
        }
    }
}

/// Checks that every source audit row exists in the target with the same sequence number,
/// canonical text and MAC, so a chain that verified in the source verifies in the target.
async fn check_audit(source: &dyn Store, target: &dyn Store) -> Result<(), Error> {
    let mut after_seq = None;
    loop {
        let filter = AuditFilter { after_seq, limit: Some(BATCH), ..AuditFilter::default() };
        let events = source.list_audit(&filter).await?;
        let Some(last) = events.last() else { return Ok(()) };
        let copies = target_audit_through(target, after_seq, last.seq).await?;
        after_seq = Some(last.seq);
        for event in &events {
            let copy = copies.iter().find(|copy| copy.seq == event.seq);
            let same = copy.is_some_and(|copy| copy.canonical == event.canonical && copy.mac == event.mac);
            if !same {
                return Err(Error::CopyCheck(format!(
                    "audit event {} differs between the source and the target after the copy; copy into a new, \
                     empty target",
                    event.seq
                )));
            }
        }
    }
}

/// Reads the target's audit rows after `after_seq` up to and including `last_seq`. A target that
/// held rows before the copy may interleave its own, so this reads as many pages as that takes.
async fn target_audit_through(
    target: &dyn Store,
    mut after_seq: Option<i64>,
    last_seq: i64,
) -> Result<Vec<keyturn_core::AuditEvent>, Error> {
    let mut rows = Vec::new();
    loop {
        let filter = AuditFilter { after_seq, limit: Some(BATCH), ..AuditFilter::default() };
        let page = target.list_audit(&filter).await?;
        let Some(last) = page.last() else { return Ok(rows) };
        after_seq = Some(last.seq);
        let done = last.seq >= last_seq;
        rows.extend(page.into_iter().filter(|row| row.seq <= last_seq));
        if done {
            return Ok(rows);
        }
    }
}
