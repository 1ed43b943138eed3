//! The migration status of a rotated key: whether its clients have moved to the successor. The
//! status compares two usage instants that the service layer reads from the store, where they
//! are written behind the verify path, so it can lag the clients by one flush interval.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::Instant;

/// Whether the clients of a rotated key have moved to its successor.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MigrationStatus {
    /// The successor was used, and the old key was not used since the successor's first use.
    Moved,
    /// The successor was used, and the old key was used again at or after the successor's first
    /// use, so some client still sends the old key.
    Both,
    /// The successor was never used.
    NotMoved,
}

impl MigrationStatus {
    pub const ALL: [MigrationStatus; 3] = [MigrationStatus::Moved, MigrationStatus::Both, MigrationStatus::NotMoved];

    /// Computes the status from the old key's last use and the successor's first use. A use of
    /// the old key in the same millisecond as the successor's first use counts as a use after
    /// it, so a key is reported as moved only when no use of the old key could have followed.
    pub fn of(old_last_used_at: Option<Instant>, successor_first_used_at: Option<Instant>) -> Self {
        match (old_last_used_at, successor_first_used_at) {
            (_, None) => MigrationStatus::NotMoved,
            (Some(old_last), Some(successor_first)) if old_last >= successor_first => MigrationStatus::Both,
            (_, Some(_)) => MigrationStatus::Moved,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            MigrationStatus::Moved => "moved",
            MigrationStatus::Both => "both",
            MigrationStatus::NotMoved => "not_moved",
        }
    }
}

impl fmt::Display for MigrationStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(millis: i64) -> Option<Instant> {
        Some(Instant::from_millis(millis))
    }

    #[test]
    fn unused_successor_is_not_moved() {
        assert_eq!(MigrationStatus::of(None, None), MigrationStatus::NotMoved);
        assert_eq!(MigrationStatus::of(at(5), None), MigrationStatus::NotMoved);
    }

    #[test]
    fn old_key_quiet_after_successor_is_moved() {
        assert_eq!(MigrationStatus::of(at(4), at(5)), MigrationStatus::Moved);
        assert_eq!(MigrationStatus::of(None, at(5)), MigrationStatus::Moved);
    }

    #[test]
    fn old_key_used_after_successor_is_both() {
        assert_eq!(MigrationStatus::of(at(6), at(5)), MigrationStatus::Both);
    }

    #[test]
    fn same_millisecond_counts_as_both() {
        assert_eq!(MigrationStatus::of(at(5), at(5)), MigrationStatus::Both);
    }

    #[test]
    fn serializes_as_snake_case() {
        for status in MigrationStatus::ALL {
            assert_eq!(serde_json::to_value(status).unwrap(), serde_json::json!(status.as_str()));
        }
    }
}
