//! The state machine as a snapshot: a RocksDB checkpoint of the metastore (hard
//! links to its table files, taken between two applies, so it holds exactly the
//! entries up to one index), and the installation of such a checkpoint received
//! from another master.
//!
//! Installing replaces the content of every column family in place rather than
//! swapping the RocksDB instance under the readers that hold the store: each
//! family of the checkpoint is written out as a table file, the live family is
//! cleared with a range deletion, and the file is ingested (ingested data is newer
//! than the deletion, so exactly the checkpoint's keys remain). The journal
//! pairing stays this master's own. Caches, the mount table and the cluster id are
//! reloaded after. A crash in the middle leaves a mixed store: the journal marks
//! the installation before it starts and repeats it at the next start.

use super::{storage, MetaStore, ALL_CFS, CF_META, KEY_JOURNAL_PAIRING};
use rocksdb::checkpoint::Checkpoint;
use rocksdb::{IteratorMode, Options, SstFileWriter, DB};
use std::path::Path;
use std::sync::atomic::Ordering;
use strata_common::{Error, Result};

/// Name of the table file a column family is exported to, in the staging folder.
fn export_name(cf: &str) -> String {
    format!("install-{cf}.sst")
}

impl MetaStore {
    /// Writes a checkpoint of the store to `dir`, which must not exist. The caller
    /// makes sure no apply runs meanwhile (the journal's thread takes it).
    pub fn checkpoint(&self, dir: &Path) -> Result<()> {
        Checkpoint::new(&self.db)
            .and_then(|c| c.create_checkpoint(dir))
            .map_err(|e| {
                Error::internal(format!(
                    "metastore: cannot write a checkpoint to {}: {e}",
                    dir.display()
                ))
            })
    }

    /// Replaces the whole state with the checkpoint in `dir` (made by
    /// [`MetaStore::checkpoint`] on another master, at `index`), keeping this
    /// store's journal pairing. `work` is a folder for the exported table files.
    /// Repeating it after a crash gives the same result.
    pub fn install_checkpoint(&self, dir: &Path, index: u64, work: &Path) -> Result<()> {
        let exported = export_checkpoint(dir, work)?;
        for cf_name in ALL_CFS {
            let cf = self.cf(cf_name)?;
            let first = self
                .db
                .iterator_cf(cf, IteratorMode::Start)
                .next()
                .transpose()
                .map_err(storage)?;
            let last = self
                .db
                .iterator_cf(cf, IteratorMode::End)
                .next()
                .transpose()
                .map_err(storage)?;
            if let (Some((first, _)), Some((last, _))) = (first, last) {
                let mut batch = rocksdb::WriteBatch::default();
                if cf_name == CF_META {
                    // A handful of keys: each but the pairing, which stays this
                    // master's.
                    for item in self.db.iterator_cf(cf, IteratorMode::Start) {
                        let (k, _) = item.map_err(storage)?;
                        if &*k != KEY_JOURNAL_PAIRING {
                            batch.delete_cf(cf, &*k);
                        }
                    }
                } else {
                    batch.delete_range_cf(cf, &*first, &*last);
                    batch.delete_cf(cf, &*last);
                }
                self.db.write(batch).map_err(storage)?;
            }
            if let Some(file) = exported.iter().find(|(name, _)| name == cf_name) {
                self.db
                    .ingest_external_file_cf(cf, vec![file.1.as_path()])
                    .map_err(|e| {
                        Error::internal(format!(
                            "metastore: cannot ingest {}: {e}",
                            file.1.display()
                        ))
                    })?;
            }
        }
        self.db.flush_wal(true).map_err(storage)?;
        let applied = self.applied_index()?;
        if applied != index {
            return Err(Error::internal(format!(
                "metastore: the installed snapshot says it applied {applied}, not {index}"
            )));
        }
        self.inode_cache.invalidate_all();
        self.edge_cache.invalidate_all();
        self.generation.fetch_add(1, Ordering::AcqRel);
        self.reload_after_install()?;
        for (_, path) in exported {
            let _ = std::fs::remove_file(path);
        }
        Ok(())
    }
}

/// Writes each non-empty column family of the checkpoint in `dir` as a table file
/// in `work`: (family, file).
fn export_checkpoint(dir: &Path, work: &Path) -> Result<Vec<(String, std::path::PathBuf)>> {
    let bad =
        |e: &dyn std::fmt::Display| Error::internal(format!("snapshot {}: {e}", dir.display()));
    let opts = Options::default();
    let present = DB::list_cf(&opts, dir).map_err(|e| bad(&e))?;
    for cf in ALL_CFS {
        if !present.iter().any(|p| p == cf) {
            return Err(bad(&format!("it has no column family {cf}")));
        }
    }
    if let Some(extra) = present
        .iter()
        .find(|p| *p != "default" && !ALL_CFS.contains(&p.as_str()))
    {
        return Err(bad(&format!(
            "it has a column family {extra} this version does not know"
        )));
    }
    let db = DB::open_cf_for_read_only(&opts, dir, &present, false).map_err(|e| bad(&e))?;
    std::fs::create_dir_all(work).map_err(|e| bad(&e))?;
    let mut out = Vec::new();
    for cf_name in ALL_CFS {
        let cf = db
            .cf_handle(cf_name)
            .ok_or_else(|| bad(&format!("column family {cf_name} cannot be opened")))?;
        let path = work.join(export_name(cf_name));
        let mut writer: Option<SstFileWriter> = None;
        for item in db.iterator_cf(cf, IteratorMode::Start) {
            let (k, v) = item.map_err(|e| bad(&e))?;
            if cf_name == CF_META && &*k == KEY_JOURNAL_PAIRING {
                continue;
            }
            let w = match &mut writer {
                Some(w) => w,
                None => {
                    let w = SstFileWriter::create(&opts);
                    w.open(&path).map_err(|e| bad(&e))?;
                    writer.insert(w)
                }
            };
            w.put(&k, &v).map_err(|e| bad(&e))?;
        }
        if let Some(mut w) = writer {
            w.finish().map_err(|e| bad(&e))?;
            out.push((cf_name.to_string(), path));
        }
    }
    Ok(out)
}
