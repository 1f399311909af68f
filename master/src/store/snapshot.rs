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

use super::{storage, MetaStore, ALL_CFS, CF_META, KEY_APPLIED_INDEX, KEY_JOURNAL_PAIRING};
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
        let exported = prepare_install(dir, index, work)?;
        self.install_prepared(exported, index)
    }

    /// The second step of [`MetaStore::install_checkpoint`]: replaces the state
    /// with the table files [`prepare_install`] made.
    pub fn install_prepared(&self, exported: Prepared, index: u64) -> Result<()> {
        let Prepared(exported) = exported;
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

/// A checkpoint exported for installation (see [`prepare_install`]).
pub struct Prepared(Vec<(String, std::path::PathBuf)>);

/// Checks the checkpoint in `dir` holds a whole metastore at `index` (every
/// column family, no unknown one, readable, the applied index recorded), and
/// writes each non-empty column family as a table file in `work`. Touches
/// nothing of the live store: a bad snapshot is refused here.
pub fn prepare_install(dir: &Path, index: u64, work: &Path) -> Result<Prepared> {
    let (db, bad) = open_checkpoint(dir, index)?;
    let _ = std::fs::remove_dir_all(work);
    std::fs::create_dir_all(work).map_err(|e| bad(&e))?;
    let mut out = Vec::new();
    let writer_opts = Options::default();
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
                    let w = SstFileWriter::create(&writer_opts);
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
    Ok(Prepared(out))
}

/// Checks, without exporting anything, that `dir` holds a whole metastore
/// checkpoint at `index` (as [`prepare_install`] does first).
pub fn verify_checkpoint(dir: &Path, index: u64) -> Result<()> {
    open_checkpoint(dir, index).map(|_| ())
}

type Bad<'a> = Box<dyn Fn(&dyn std::fmt::Display) -> Error + 'a>;

fn open_checkpoint(dir: &Path, index: u64) -> Result<(DB, Bad<'_>)> {
    let bad: Bad<'_> = Box::new(move |e: &dyn std::fmt::Display| {
        Error::internal(format!("snapshot {}: {e}", dir.display()))
    });
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
    let meta = db
        .cf_handle(CF_META)
        .ok_or_else(|| bad(&"no meta column family"))?;
    let applied = db
        .get_cf(meta, KEY_APPLIED_INDEX)
        .map_err(|e| bad(&e))?
        .and_then(|v| <[u8; 8]>::try_from(v.as_slice()).ok())
        .map(u64::from_be_bytes);
    if applied != Some(index) {
        return Err(bad(&format!(
            "it holds the entries up to {applied:?}, not {index}"
        )));
    }
    Ok((db, bad))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::entries::{CreateEntry, InodeRecord, Op};

    fn create(id: u64) -> crate::entries::JournalEntry {
        Op::Create(CreateEntry {
            parent_id: 1,
            path: format!("/f{id}"),
            inodes: vec![InodeRecord {
                id,
                parent_id: 1,
                name: format!("f{id}"),
                block_size: 4096,
                ..Default::default()
            }],
            expected_parent_version: None,
        })
        .into()
    }

    /// A checkpoint installed into another store makes it hold the same state
    /// (the pairing stays its own); a damaged or mislabelled one is refused
    /// before the store is touched.
    #[test]
    fn checkpoints_install_whole_or_not_at_all() {
        let d = tempfile::tempdir().unwrap();
        let a = MetaStore::open(&d.path().join("a"), 100).unwrap();
        for i in 2..50 {
            a.apply(i - 1, &create(i)).unwrap();
        }
        let snap = d.path().join("snap");
        a.checkpoint(&snap).unwrap();
        let b = MetaStore::open(&d.path().join("b"), 100).unwrap();
        b.set_journal_pairing("b's own").unwrap();
        b.apply(1, &create(999)).unwrap();
        assert!(verify_checkpoint(&snap, 48).is_ok());
        assert!(verify_checkpoint(&snap, 47).is_err(), "another index");
        b.install_checkpoint(&snap, 48, &d.path().join("work"))
            .unwrap();
        assert_eq!(b.dump().unwrap(), a.dump().unwrap());
        assert_eq!(b.journal_pairing().unwrap().as_deref(), Some("b's own"));
        assert!(b.get_inode(999).unwrap().is_none());

        // A file of the checkpoint missing: refused, and the store is untouched.
        let broken = d.path().join("broken");
        std::fs::create_dir_all(&broken).unwrap();
        let mut skipped = false;
        for f in std::fs::read_dir(&snap).unwrap() {
            let f = f.unwrap();
            let name = f.file_name().to_string_lossy().into_owned();
            if name.ends_with(".sst") && !skipped {
                skipped = true;
                continue;
            }
            std::fs::copy(f.path(), broken.join(&name)).unwrap();
        }
        assert!(skipped, "the checkpoint has table files");
        let before = b.dump().unwrap();
        assert!(verify_checkpoint(&broken, 48).is_err());
        assert!(b
            .install_checkpoint(&broken, 48, &d.path().join("work"))
            .is_err());
        assert_eq!(b.dump().unwrap(), before);
        assert!(verify_checkpoint(&d.path().join("nothing"), 48).is_err());
    }
}
