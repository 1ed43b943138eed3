//! Editing a pepper file: adding a freshly generated pepper and removing a retired one. Each
//! edit rewrites the file atomically: the new text goes to a temporary file in the same
//! directory, created with mode 0600 and synced, which is then renamed over the old file, and
//! the directory is synced. A reader therefore sees the old ring or the new one, never a part.
//! Comment and blank lines are kept. No error or log line of this module shows a pepper.
//!
//! NOTE: two edits of one file at the same time can lose one of them, because neither locks the
//! file. Run one `keyturn pepper` edit at a time. The new file belongs to the user who ran the
//! edit, so run it as the user that owns the pepper file.

use std::fs;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use keyturn_core::{PepperId, PepperRing};
use rand_core::OsRng;
use zeroize::Zeroizing;

use crate::settings::{absolute, io_reason, read_private_file, PEPPER_FILE_VAR, PEPPER_VAR};
use crate::Error;

/// The position of a new pepper in the ring.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Placement {
    /// First, so it becomes the current pepper and hashes every new key.
    Current,
    /// Last, so it only verifies until it is made current.
    Last,
}

/// Reads and parses a pepper file, checking its mode like every read.
pub fn read_ring(path: &Path) -> Result<PepperRing, Error> {
    let text = Zeroizing::new(read_private_file(path)?);
    PepperRing::parse_file(&text).map_err(|error| Error::PepperFile { path: absolute(path), reason: error.to_string() })
}

/// Returns the id after the largest numeric id of the ring, or 1 when no id is a number.
pub fn next_pepper_id(ring: &PepperRing) -> PepperId {
    let next = ring.ids().filter_map(|id| id.as_str().parse::<u64>().ok()).max().map_or(1, |max| max + 1);
    let mut candidate = next;
    loop {
        // Numbers are valid pepper ids, and a u64 has at most 20 digits.
        let id = PepperId::parse(&candidate.to_string()).expect("a number is a valid pepper id");
        if !ring.contains(&id) {
            return id;
        }
        candidate += 1;
    }
}

/// Generates a new `ID:BASE64` entry with 32 random bytes, without writing it anywhere.
pub fn generate_entry(id: &PepperId) -> Zeroizing<String> {
    Zeroizing::new(PepperRing::generate_entry(id, &mut OsRng))
}

/// Adds a freshly generated pepper to the file at `path` and returns its id: `id`, or the next
/// number when `None`. Fails when the file cannot be read or rewritten, or already has the id.
pub fn add_pepper(path: &Path, id: Option<PepperId>, placement: Placement) -> Result<PepperId, Error> {
    let text = Zeroizing::new(read_private_file(path)?);
    let ring = PepperRing::parse_file(&text)
        .map_err(|error| Error::PepperFile { path: absolute(path), reason: error.to_string() })?;
    let id = id.unwrap_or_else(|| next_pepper_id(&ring));
    if ring.contains(&id) {
        return Err(Error::InvalidInput {
            field: "id",
            reason: format!("pepper {id} is already in the ring; choose another id"),
        });
    }

    let entry = generate_entry(&id);
    let mut lines: Vec<&str> = text.lines().collect();
    let entry_lines: Vec<usize> = lines.iter().enumerate().filter(|(_, line)| is_entry(line)).map(|(i, _)| i).collect();
    // The file parsed, so it has at least one entry.
    let at = match placement {
        Placement::Current => entry_lines.first().copied().unwrap_or(lines.len()),
        Placement::Last => entry_lines.last().map_or(lines.len(), |last| last + 1),
    };
    lines.insert(at, entry.as_str());
    write_ring(path, &lines)?;
    Ok(id)
}

/// Removes the pepper `id` from the file at `path`. Fails when the file lacks it, when it is the
/// current pepper, or when the file cannot be rewritten.
pub fn remove_pepper(path: &Path, id: &PepperId) -> Result<(), Error> {
    let text = Zeroizing::new(read_private_file(path)?);
    let ring = PepperRing::parse_file(&text)
        .map_err(|error| Error::PepperFile { path: absolute(path), reason: error.to_string() })?;
    if !ring.contains(id) {
        return Err(unknown_pepper(id, &ring));
    }
    if ring.current_id() == id {
        return Err(Error::CurrentPepper(id.clone()));
    }

    let lines: Vec<&str> = text.lines().filter(|line| entry_id(line) != Some(id.as_str())).collect();
    write_ring(path, &lines)
}

pub(crate) fn unknown_pepper(id: &PepperId, ring: &PepperRing) -> Error {
    let ids: Vec<&str> = ring.ids().map(PepperId::as_str).collect();
    Error::UnknownPepper { pepper_id: id.clone(), ring: ids.join(", ") }
}

/// Returns whether a line of a pepper file is an entry rather than a comment or blank.
fn is_entry(line: &str) -> bool {
    let trimmed = line.trim();
    !trimmed.is_empty() && !trimmed.starts_with('#')
}

/// Returns the id of an entry line.
fn entry_id(line: &str) -> Option<&str> {
    is_entry(line).then(|| line.trim().split_once(':').map(|(id, _)| id.trim())).flatten()
}

/// Checks that `lines` still form a valid ring, then replaces the file with them atomically.
fn write_ring(path: &Path, lines: &[&str]) -> Result<(), Error> {
    let mut text = Zeroizing::new(lines.join("\n"));
    text.push('\n');
    PepperRing::parse_file(&text).map_err(|error| Error::PepperFile {
        path: absolute(path),
        reason: format!("the edited ring would be invalid, so the file was left unchanged: {error}"),
    })?;
    replace_file(path, text.as_bytes())
}

/// Writes `content` to a new file with mode 0600 next to `path`, syncs it, renames it over
/// `path` and syncs the directory. On failure the temporary file is removed and `path` is
/// unchanged.
fn replace_file(path: &Path, content: &[u8]) -> Result<(), Error> {
    let path = absolute(path);
    let fail = |reason: String| Error::PepperFile { path: path.clone(), reason };
    let directory = path.parent().map(Path::to_path_buf).unwrap_or_else(|| PathBuf::from("/"));
    let name = path.file_name().map(|name| name.to_string_lossy().into_owned()).unwrap_or_default();
    let temporary = directory.join(format!(".{name}.{}.tmp", std::process::id()));

    let written = (|| -> std::io::Result<()> {
        let mut file = fs::OpenOptions::new().write(true).create_new(true).mode(0o600).open(&temporary)?;
        file.write_all(content)?;
        file.sync_all()?;
        fs::rename(&temporary, &path)?;
        fs::File::open(&directory)?.sync_all()
    })();
    if let Err(error) = written {
        let _ = fs::remove_file(&temporary);
        return Err(fail(format!(
            "rewriting it through {} failed: {}",
            temporary.display(),
            io_reason(&error, &temporary, [PEPPER_VAR, PEPPER_FILE_VAR])
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::{MetadataExt, PermissionsExt};

    use super::*;

    fn pepper_file(dir: &Path, ids: &[&str]) -> PathBuf {
        let path = dir.join("keyturn.pepper");
        let mut text = String::from("# ring\n");
        for id in ids {
            text.push_str(&generate_entry(&PepperId::parse(id).unwrap()));
            text.push('\n');
        }
        fs::write(&path, text).unwrap();
        fs::set_permissions(&path, fs::Permissions::from_mode(0o600)).unwrap();
        path
    }

    fn ids(path: &Path) -> Vec<String> {
        read_ring(path).unwrap().ids().map(|id| id.as_str().to_owned()).collect()
    }

    #[test]
    fn add_current_goes_first_and_keeps_comments() {
        let dir = tempfile::tempdir().unwrap();
        let path = pepper_file(dir.path(), &["1"]);
        let before = fs::read_to_string(&path).unwrap();
        let inode = fs::metadata(&path).unwrap().ino();

        let id = add_pepper(&path, None, Placement::Current).unwrap();

        assert_eq!(id.as_str(), "2");
        assert_eq!(ids(&path), vec!["2", "1"]);
        let after = fs::read_to_string(&path).unwrap();
        assert!(after.starts_with("# ring\n2:"), "{}", after.lines().next().unwrap_or(""));
        assert!(after.contains(before.lines().nth(1).unwrap()), "the old entry is kept unchanged");
        let metadata = fs::metadata(&path).unwrap();
        assert_eq!(metadata.mode() & 0o777, 0o600);
        assert_ne!(metadata.ino(), inode, "the file is replaced by a rename, not rewritten in place");
        let leftovers: Vec<_> = fs::read_dir(dir.path()).unwrap().map(|entry| entry.unwrap().file_name()).collect();
        assert_eq!(leftovers.len(), 1, "no temporary file is left: {leftovers:?}");
    }

    #[test]
    fn add_last_and_named() {
        let dir = tempfile::tempdir().unwrap();
        let path = pepper_file(dir.path(), &["b", "a"]);

        let id = add_pepper(&path, Some(PepperId::parse("2027a").unwrap()), Placement::Last).unwrap();

        assert_eq!(id.as_str(), "2027a");
        assert_eq!(ids(&path), vec!["b", "a", "2027a"]);
        assert_eq!(next_pepper_id(&read_ring(&path).unwrap()).as_str(), "1");
    }

    #[test]
    fn add_existing_id_changes_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let path = pepper_file(dir.path(), &["1"]);
        let before = fs::read_to_string(&path).unwrap();

        let error = add_pepper(&path, Some(PepperId::parse("1").unwrap()), Placement::Current).unwrap_err();

        assert!(error.to_string().contains("already in the ring"), "{error}");
        assert_eq!(fs::read_to_string(&path).unwrap(), before);
    }

    #[test]
    fn add_rejects_readable_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = pepper_file(dir.path(), &["1"]);
        fs::set_permissions(&path, fs::Permissions::from_mode(0o644)).unwrap();

        let error = add_pepper(&path, None, Placement::Current).unwrap_err();

        assert!(error.to_string().contains("chmod 600"), "{error}");
        assert_eq!(ids_unchecked(&path), 1);
    }

    fn ids_unchecked(path: &Path) -> usize {
        fs::read_to_string(path).unwrap().lines().filter(|line| is_entry(line)).count()
    }

    #[test]
    fn remove_keeps_other_entries() {
        let dir = tempfile::tempdir().unwrap();
        let path = pepper_file(dir.path(), &["3", "2", "1"]);

        remove_pepper(&path, &PepperId::parse("2").unwrap()).unwrap();

        assert_eq!(ids(&path), vec!["3", "1"]);
        assert_eq!(fs::metadata(&path).unwrap().mode() & 0o777, 0o600);
    }

    #[test]
    fn remove_rejects_current_and_unknown() {
        let dir = tempfile::tempdir().unwrap();
        let path = pepper_file(dir.path(), &["2", "1"]);
        let before = fs::read_to_string(&path).unwrap();

        let current = remove_pepper(&path, &PepperId::parse("2").unwrap()).unwrap_err();
        let unknown = remove_pepper(&path, &PepperId::parse("9").unwrap()).unwrap_err();

        assert!(matches!(current, Error::CurrentPepper(_)), "{current}");
        assert!(matches!(unknown, Error::UnknownPepper { .. }), "{unknown}");
        assert!(unknown.to_string().contains("2, 1"), "{unknown}");
        assert_eq!(fs::read_to_string(&path).unwrap(), before);
    }

    #[test]
    fn errors_never_show_pepper_bytes() {
        let dir = tempfile::tempdir().unwrap();
        let path = pepper_file(dir.path(), &["2", "1"]);
        let text = fs::read_to_string(&path).unwrap();
        let secrets: Vec<&str> = text.lines().filter_map(|line| line.split_once(':').map(|(_, value)| value)).collect();

        let errors = [
            remove_pepper(&path, &PepperId::parse("2").unwrap()).unwrap_err(),
            remove_pepper(&path, &PepperId::parse("9").unwrap()).unwrap_err(),
            add_pepper(&path, Some(PepperId::parse("1").unwrap()), Placement::Last).unwrap_err(),
        ];
        for error in errors {
            let message = format!("{error} {error:?}");
            for secret in &secrets {
                assert!(!message.contains(secret), "{message}");
            }
        }
    }
}
