//! Key reads on the calling thread. sqlx runs each SQLite connection on a thread of its own, so
//! every query is sent to that thread and its result sent back. Those two thread wake-ups
//! cost more than reading one key by its primary key, and on a busy machine, where a woken thread
//! waits for a free core, they make the tail latency of a verification that misses the cache.
//!
//! [`InlineReader`] reads a key over connections of its own, on the calling thread. Its
//! connections never wait for a lock: when SQLite reports the database busy, or anything else
//! goes wrong before a row is decoded, the read falls back to the pooled sqlx connection, which
//! waits for the busy timeout off this thread and classifies the error as every other read does.
//! A read that needs a page from disk rather than from the operating system's page cache blocks
//! the calling thread for that read.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;
use std::time::Duration;

use keyturn_core::{KeyId, KeyRecord};
use rusqlite::{Connection, OpenFlags, OptionalExtension};

use super::TARGET;
use crate::rows::{decode_key, StoredRow, KEY_COLUMNS};
use crate::StoreError;

/// Reads keys by id over a small set of idle connections, opened on first use.
#[derive(Debug)]
pub(super) struct InlineReader {
    path: PathBuf,
    /// The SELECT of one key, built once so that the statement cache finds it by its text.
    select: String,
    idle: Mutex<Vec<Connection>>,
    /// The maximum number of idle connections kept. A read that finds none idle opens one.
    max_idle: usize,
    /// Set by [`InlineReader::close`]: every later read falls back to the closed pool.
    closed: AtomicBool,
}

/// Why an inline read gave up: the caller reads the key through the pool instead.
#[derive(Debug)]
pub(super) struct Fallback(String);

impl std::fmt::Display for Fallback {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter.write_str(&self.0)
    }
}

impl InlineReader {
    pub(super) fn new(path: &Path, max_idle: usize) -> InlineReader {
        InlineReader {
            path: path.to_owned(),
            select: format!("SELECT {KEY_COLUMNS} FROM keys WHERE key_id = ?1"),
            idle: Mutex::new(Vec::new()),
            max_idle: max_idle.max(1),
            closed: AtomicBool::new(false),
        }
    }

    /// Reads the key `key_id`. A row that cannot be decoded is an error, as on the pool; every
    /// other failure is a [`Fallback`].
    pub(super) fn read(&self, key_id: &KeyId) -> Result<Result<Option<KeyRecord>, StoreError>, Fallback> {
        if self.closed.load(Ordering::Acquire) {
            return Err(Fallback("the store is closed".to_owned()));
        }
        let connection = match self.idle.lock().unwrap_or_else(|poisoned| poisoned.into_inner()).pop() {
            Some(connection) => connection,
            None => self.connect().map_err(|error| Fallback(format!("opening a read connection failed: {error}")))?,
        };
        let result = self.select_key(&connection, key_id);
        match result {
            Ok(decoded) => {
                self.release(connection);
                Ok(decoded)
            }
            Err(error) => {
                // A connection that failed is closed rather than reused: the next read opens a new one.
                tracing::debug!(target: TARGET, key_id = %key_id, %error, "inline key read failed; reading through the pool");
                Err(Fallback(error.to_string()))
            }
        }
    }

    fn select_key(
        &self,
        connection: &Connection,
        key_id: &KeyId,
    ) -> Result<Result<Option<KeyRecord>, StoreError>, rusqlite::Error> {
        let mut statement = connection.prepare_cached(&self.select)?;
        let record = statement.query_row([key_id.as_str()], |row| Ok(decode_key(&InlineRow(row)))).optional()?;
        Ok(record.transpose())
    }

    fn release(&self, connection: Connection) {
        let mut idle = self.idle.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        if idle.len() < self.max_idle && !self.closed.load(Ordering::Acquire) {
            idle.push(connection);
        }
    }

    /// Opens a connection that never waits for a lock. It opens the file read-write like the
    /// pool, and `query_only` makes SQLite reject every write on it.
    fn connect(&self) -> Result<Connection, rusqlite::Error> {
        let flags = OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX;
        let connection = Connection::open_with_flags(&self.path, flags)?;
        connection.busy_timeout(Duration::ZERO)?;
        connection.pragma_update(None, "query_only", true)?;
        Ok(connection)
    }

    /// Closes the idle connections.
    pub(super) fn close(&self) {
        self.closed.store(true, Ordering::Release);
        self.idle.lock().unwrap_or_else(|poisoned| poisoned.into_inner()).clear();
    }
}

/// A row of the inline SELECT, read by column name like a sqlx row.
struct InlineRow<'row, 'statement>(&'row rusqlite::Row<'statement>);

impl InlineRow<'_, '_> {
    fn get<T: rusqlite::types::FromSql>(&self, column: &str) -> Result<Option<T>, sqlx::Error> {
        self.0.get::<_, Option<T>>(column).map_err(|error| sqlx::Error::Decode(Box::new(error)))
    }
}

impl StoredRow for InlineRow<'_, '_> {
    fn text(&self, column: &str) -> Result<Option<String>, sqlx::Error> {
        self.get(column)
    }

    fn integer(&self, column: &str) -> Result<Option<i64>, sqlx::Error> {
        self.get(column)
    }

    fn bytes(&self, column: &str) -> Result<Option<Vec<u8>>, sqlx::Error> {
        self.get(column)
    }

    fn boolean(&self, column: &str) -> Result<Option<bool>, sqlx::Error> {
        self.get(column)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A locked file makes the inline read give up at once instead of waiting for the lock, so
    /// that the pooled connection waits for it off the calling thread.
    #[test]
    fn locked_file_falls_back_at_once() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("keyturn.db");
        let schema = Connection::open(&path).unwrap();
        schema.execute_batch(&format!("PRAGMA journal_mode = WAL; CREATE TABLE keys ({KEY_COLUMNS});")).unwrap();
        drop(schema);
        let key_id = KeyId::parse("abcdefABCDEF").unwrap();
        let reader = InlineReader::new(&path, 1);
        let write = reader.connect().unwrap().execute_batch("DELETE FROM keys;");
        assert!(write.is_err(), "a write through an inline connection must fail");

        // In WAL mode, a connection in exclusive locking mode that has written keeps every other
        // connection from reading until it closes. It can only take the lock while no
        // other connection has the file open.
        let holder = Connection::open(&path).unwrap();
        holder.execute_batch("PRAGMA locking_mode = EXCLUSIVE; BEGIN EXCLUSIVE; UPDATE keys SET name = name;").unwrap();
        let started = std::time::Instant::now();
        let fallback = reader.read(&key_id).unwrap_err();
        assert!(started.elapsed() < Duration::from_secs(1), "waited {:?} for the lock", started.elapsed());
        assert!(fallback.to_string().contains("locked"), "{fallback}");

        holder.execute_batch("COMMIT;").unwrap();
        drop(holder);
        let read = reader.read(&key_id);
        assert!(matches!(read, Ok(Ok(None))), "{read:?}");
        reader.close();
        assert!(reader.read(&key_id).is_err());
    }
}
