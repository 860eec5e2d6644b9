//! The data-format marker: setting `S format` (decimal), the format this build writes. A data dir
//! marked with a higher number was written by a newer runledger and is refused.

use super::{keys, storage};
use crate::error::{Error, Result};

/// The data format this build writes.
pub const DATA_FORMAT: u32 = 1;
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

/// Checks the format marker and writes it on a store that has none (a new store, or one made
/// before the marker existed: both are format 1).
pub(super) fn ensure_format(tree: &sled::Tree) -> Result<()> {
    if read_format(tree)?.is_none() {
        tree.insert(
            keys::setting(FORMAT_SETTING),
            DATA_FORMAT.to_string().as_bytes(),
        )
        .map_err(storage)?;
    }
    Ok(())
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
        tree.insert(keys::setting(FORMAT_SETTING), b"2").unwrap();
        let err = ensure_format(&tree).unwrap_err();
        assert!(err.to_string().contains("newer runledger"), "{err}");
    }
}
