//! The data-format marker: setting `S format` (decimal), the format this build writes. A data dir
//! marked with a higher number was written by a newer runledger and is refused.

use super::{keys, storage};
use crate::error::{Error, Result};

/// The data format this build writes.
pub const DATA_FORMAT: u32 = 2;
pub(super) const FORMAT_SETTING: &str = "format";

/// The data format the tree is marked with (None: not marked yet).
pub(super) fn read_format(tree: &sled::Tree) -> Result<Option<u32>> {
    let Some(raw) = tree.get(keys::setting(FORMAT_SETTING)).map_err(storage)? else {
        return Ok(None);
    };
    let format = std::str::from_utf8(&raw)
        .ok()
        .and_then(|s| s.parse::<u32>().ok())
        .ok_or_else(|| {
            Error::Internal(format!(
                "the data format marker is damaged ({:?}); run `runledger check --repair`",
                String::from_utf8_lossy(&raw)
            ))
        })?;
    if format > DATA_FORMAT {
        return Err(Error::FailedPrecondition(format!(
            "this data dir was written by a newer runledger (data format {format}); this build \
             reads format {DATA_FORMAT} and will not touch it: use a newer runledger"
        )));
    }
    Ok(Some(format))
}

/// Checks the format marker and writes it on a store that has none: a new store gets
/// [`DATA_FORMAT`]; one with records made before the marker existed is format 1 (and is then
/// migrated, see `migrate.rs`).
pub(super) fn ensure_format(tree: &sled::Tree) -> Result<()> {
    if read_format(tree)?.is_none() {
        let has_records = tree.scan_prefix([keys::RUN]).next().is_some()
            || tree.scan_prefix([keys::EXPERIMENT]).next().is_some();
        let format = if has_records { 1 } else { DATA_FORMAT };
        tree.insert(keys::setting(FORMAT_SETTING), format.to_string().as_bytes())
            .map_err(storage)?;
    }
    Ok(())
}

/// Fails unless the tree is at [`DATA_FORMAT`] with no migration under way (for the offline
/// check, which knows only this format's layout).
pub(super) fn require_current(tree: &sled::Tree, dir: &std::path::Path) -> Result<()> {
    let migrating = tree
        .get(keys::setting(super::migrate::MIGRATION_SETTING))
        .map_err(storage)?
        .is_some();
    match read_format(tree)? {
        Some(DATA_FORMAT) if !migrating => Ok(()),
        // No marker and no records: an empty store.
        None if tree.iter().next().is_none() => Ok(()),
        _ => Err(Error::FailedPrecondition(format!(
            "the data dir {} is in an older data format (or its migration was interrupted); run \
             `runledger migrate --data-dir {}` (or start the server on it) first",
            dir.display(),
            dir.display()
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn temp_tree() -> (tempfile::TempDir, sled::Db, sled::Tree) {
        let dir = tempfile::tempdir().expect("temp dir");
        let db = super::super::sled_config(dir.path())
            .open()
            .expect("open sled");
        let tree = db.open_tree(super::super::TREE).expect("tree");
        (dir, db, tree)
    }

    #[test]
    fn a_newer_format_is_refused_and_a_missing_marker_is_written() {
        let (_dir, _db, tree) = temp_tree();
        assert_eq!(read_format(&tree).unwrap(), None);
        ensure_format(&tree).unwrap();
        assert_eq!(read_format(&tree).unwrap(), Some(DATA_FORMAT));
        tree.insert(keys::setting(FORMAT_SETTING), b"999").unwrap();
        let err = ensure_format(&tree).unwrap_err();
        assert!(err.to_string().contains("newer runledger"), "{err}");
    }
}
