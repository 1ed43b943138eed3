//! Online backups of a SQLite store into a new file, taken with `VACUUM INTO` while other
//! processes keep verifying and writing. The copy is one consistent snapshot: SQLite reads it in
//! a single read transaction, so it holds either all or none of every committed change. This
//! module does not restore a backup; `keyturn store copy` does that into an empty database.

use std::fs::OpenOptions;
use std::io::ErrorKind;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

use sqlx::sqlite::{SqliteConnectOptions, SqliteConnection};
use sqlx::{ConnectOptions, Connection, Row};

use super::errors::classify;
use super::{SqliteStore, TARGET};
use crate::StoreError;

impl SqliteStore {
    /// Writes a consistent copy of the whole database to `target`, a new file created with mode
    /// 0600, then checks the copy with `PRAGMA integrity_check`. Fails with
    /// [`StoreError::Backup`] naming `target` when it exists, its directory is missing, or the
    /// copy fails its check; a failed copy is removed.
    pub async fn backup_to(&self, target: &Path) -> Result<(), StoreError> {
        self.check_file()?;
        create_empty_private_file(target)?;

        if let Err(error) = self.vacuum_into(target).await.and(check_copy(target).await) {
            // The copy is incomplete or damaged; leaving it would look like a usable backup.
            let _ = std::fs::remove_file(target);
            return Err(error);
        }
        tracing::info!(target: TARGET, path = %self.path.display(), backup = %target.display(), "backed up sqlite store");
        Ok(())
    }

    async fn vacuum_into(&self, target: &Path) -> Result<(), StoreError> {
        let target_text = target.to_str().ok_or_else(|| backup_error(target, "the path is not valid UTF-8"))?;
        sqlx::query("VACUUM INTO ?").bind(target_text).execute(&self.pool).await.map_err(classify)?;
        Ok(())
    }
}

/// Creates `target` empty with mode 0600, so the copy is never readable by other users, not even
/// for an instant. `VACUUM INTO` accepts an empty file.
fn create_empty_private_file(target: &Path) -> Result<(), StoreError> {
    let created = OpenOptions::new().write(true).create_new(true).mode(0o600).open(target);
    match created {
        Ok(_) => Ok(()),
        Err(error) if error.kind() == ErrorKind::AlreadyExists => Err(backup_error(
            target,
            "the file already exists; choose a new file name, because a backup never overwrites",
        )),
        Err(error) if error.kind() == ErrorKind::NotFound => {
            Err(backup_error(target, "its directory does not exist; create it first"))
        }
        Err(error) => Err(backup_error(target, &error.to_string())),
    }
}

/// Opens the copy read-only and runs SQLite's integrity check on it.
async fn check_copy(target: &Path) -> Result<(), StoreError> {
    let options = SqliteConnectOptions::new().filename(target).read_only(true);
    let mut connection: SqliteConnection = options.connect().await.map_err(classify)?;
    let row = sqlx::query("PRAGMA integrity_check").fetch_one(&mut connection).await.map_err(classify)?;
    let verdict: String = row.try_get(0).map_err(classify)?;
    connection.close().await.map_err(classify)?;
    if verdict != "ok" {
        return Err(backup_error(target, &format!("the copy failed SQLite's integrity check: {verdict}")));
    }
    Ok(())
}

fn backup_error(target: &Path, reason: &str) -> StoreError {
    StoreError::Backup { target: target.display().to_string(), reason: reason.to_owned() }
}
