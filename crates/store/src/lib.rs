//! corral's metadata store.
//!
//! One redb database (`<root>/meta.redb`) holds every record the runtime must not lose across a
//! restart: sandboxes, containers, images. Each kind lives in its own table, keyed by id, with the
//! record serialised as JSON so that adding a field to a record never needs a migration (fields
//! carry `#[serde(default)]`). Writes happen in transactions: a group of changes made through
//! [`Store::write`] lands whole or not at all.

use std::any::{Any, TypeId};
use std::cell::RefCell;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use redb::{ReadableDatabase, ReadableTable, TableDefinition};

mod lock_wait;
pub use lock_wait::holders;
use serde::{de::DeserializeOwned, Serialize};

/// A table of records keyed by id.
#[derive(Debug, Clone, Copy)]
pub struct Table(&'static str);

impl Table {
    /// A table with the given name; names are fixed at compile time.
    pub const fn new(name: &'static str) -> Self {
        Table(name)
    }

    fn definition(self) -> TableDefinition<'static, &'static str, &'static [u8]> {
        TableDefinition::new(self.0)
    }
}

/// Pod sandboxes, keyed by sandbox id.
pub const SANDBOXES: Table = Table::new("sandboxes");
/// Containers, keyed by container id.
pub const CONTAINERS: Table = Table::new("containers");
/// Images, keyed by image id (the config digest).
pub const IMAGES: Table = Table::new("images");
/// Runtime-wide settings (pod CIDR and the like), keyed by setting name.
pub const SETTINGS: Table = Table::new("settings");

/// Errors from the metadata store. Each names the table (or, for a whole transaction, the
/// tables it wrote) and the operation that failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The database file could not be opened, created or reopened.
    #[error("{op} metadata database {path}: {source}")]
    Open {
        /// `open` or `reopen` (after an I/O error poisoned the open database).
        op: &'static str,
        /// The database file.
        path: PathBuf,
        /// What redb said.
        source: Box<redb::DatabaseError>,
    },
    /// A read or write failed inside redb.
    #[error("{op} in table {table}: {source}")]
    Db {
        /// What was being done.
        op: &'static str,
        /// The table involved.
        table: &'static str,
        /// What redb said.
        source: Box<redb::Error>,
    },
    /// A write transaction could not begin or commit.
    #[error("{op} a write transaction{}: {source}", tables_written(.tables))]
    Transaction {
        /// `begin` or `commit`.
        op: &'static str,
        /// The tables the transaction wrote (none known when it could not begin).
        tables: Vec<&'static str>,
        /// What redb said.
        source: Box<redb::Error>,
    },
    /// A record did not serialise or deserialise.
    #[error("record {key} in table {table}: {source}")]
    Codec {
        /// The table involved.
        table: &'static str,
        /// The record's key.
        key: String,
        /// What serde said.
        source: serde_json::Error,
    },
}

fn tables_written(tables: &[&str]) -> String {
    match tables {
        [] => String::new(),
        [one] => format!(" to table {one}"),
        many => format!(" to tables {}", many.join(", ")),
    }
}

impl StoreError {
    /// Whether the database's file system is full (ENOSPC, or EDQUOT over a quota): the
    /// caller's status is then ResourceExhausted rather than Internal.
    pub fn is_out_of_space(&self) -> bool {
        is_out_of_space(self)
    }

    /// Whose fault the error is: a full disk is `ResourceExhausted` (retry once there is room);
    /// anything else is the host's (`Internal`): a record that does not decode is corrupt
    /// state, not a bad request.
    pub fn kind(&self) -> ErrorKind {
        if self.is_out_of_space() {
            ErrorKind::ResourceExhausted
        } else {
            ErrorKind::Internal
        }
    }
}

pub use corral_error_kind::{is_out_of_space, ErrorKind};

type Result<T> = std::result::Result<T, StoreError>;

fn tx_err(op: &'static str, tables: Vec<&'static str>) -> impl FnOnce(redb::Error) -> StoreError {
    move |e| StoreError::Transaction {
        op,
        tables,
        source: Box::new(e),
    }
}

fn db_err(op: &'static str, table: Table) -> impl FnOnce(redb::Error) -> StoreError {
    move |e| StoreError::Db {
        op,
        table: table.0,
        source: Box::new(e),
    }
}

/// The runtime's persistent records.
pub struct Store {
    path: PathBuf,
    /// The open database; `None` after a failed reopen (the next call tries again). After an
    /// I/O error in a commit (a full disk), redb refuses every later transaction until the
    /// database is opened again, so [`Store::db`] reopens it then.
    db: std::sync::Mutex<Option<Arc<redb::Database>>>,
    /// Bumped after every write transaction ends: the [`Store::list_shared`] snapshots taken
    /// at an older generation are stale.
    generation: AtomicU64,
    /// The last [`Store::list_shared`] snapshot per table and record type.
    snapshots: std::sync::Mutex<HashMap<(&'static str, TypeId), Snapshot>>,
}

/// Decoded records of one table (an `Arc<Vec<(String, T)>>`) and the store's generation
/// before they were read.
struct Snapshot {
    generation: u64,
    records: Arc<dyn Any + Send + Sync>,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store").finish_non_exhaustive()
    }
}

impl Store {
    /// Opens the database at `path`, creating it (and its parent directory) if missing.
    pub fn open(path: &Path) -> Result<Self> {
        let open_err = |e: redb::DatabaseError| StoreError::Open {
            op: "open",
            path: path.to_path_buf(),
            source: Box::new(e),
        };
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent)
                .map_err(|e| open_err(redb::DatabaseError::Storage(e.into())))?;
        }
        let db = redb::Database::create(path).map_err(open_err)?;
        Ok(Store {
            path: path.to_path_buf(),
            db: std::sync::Mutex::new(Some(Arc::new(db))),
            generation: AtomicU64::new(0),
            snapshots: std::sync::Mutex::new(HashMap::new()),
        })
    }

    /// The open database, reopened when a previous I/O error poisoned it or a reopen failed.
    fn db(&self) -> Result<Arc<redb::Database>> {
        let mut slot = self.db.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(db) = slot.as_ref() {
            return Ok(db.clone());
        }
        let db = redb::Database::create(&self.path).map_err(|e| StoreError::Open {
            op: "reopen",
            path: self.path.clone(),
            source: Box::new(e),
        })?;
        let db = Arc::new(db);
        *slot = Some(db.clone());
        Ok(db)
    }

    /// Drops the database after redb reported a previous I/O error, so that the next call
    /// opens it again (from its last committed state).
    fn poisoned(&self, err: &redb::Error) {
        if matches!(err, redb::Error::PreviousIo) {
            self.db.lock().unwrap_or_else(|p| p.into_inner()).take();
        }
    }

    /// Begins a read transaction, reopening a poisoned database once.
    fn begin_read(&self, op: &'static str, table: Table) -> Result<redb::ReadTransaction> {
        self.begin(redb::Database::begin_read, |e| db_err(op, table)(e))
    }

    /// Begins a write transaction, reopening a poisoned database once.
    fn begin_write(&self) -> Result<redb::WriteTransaction> {
        self.begin(redb::Database::begin_write, |e| {
            tx_err("begin", Vec::new())(e)
        })
    }

    /// Begins a transaction with `begin`; after a previous I/O error, reopens the database and
    /// tries once more. `fail` makes the error.
    fn begin<T, E: Into<redb::Error>>(
        &self,
        begin: impl Fn(&redb::Database) -> std::result::Result<T, E>,
        fail: impl Fn(redb::Error) -> StoreError,
    ) -> Result<T> {
        // Bound first, so that our handle on a poisoned database is gone before it reopens.
        let first = begin(&*self.db()?);
        match first {
            Ok(tx) => Ok(tx),
            Err(e) => {
                let e = e.into();
                self.poisoned(&e);
                if !matches!(e, redb::Error::PreviousIo) {
                    return Err(fail(e));
                }
                begin(&*self.db()?).map_err(|e| fail(e.into()))
            }
        }
    }

    /// Reads one record.
    pub fn get<T: DeserializeOwned>(&self, table: Table, key: &str) -> Result<Option<T>> {
        let tx = self.begin_read("read", table)?;
        let t = match tx.open_table(table.definition()) {
            Ok(t) => t,
            Err(redb::TableError::TableDoesNotExist(_)) => return Ok(None),
            Err(e) => return Err(db_err("read", table)(e.into())),
        };
        let Some(value) = t.get(key).map_err(|e| db_err("read", table)(e.into()))? else {
            return Ok(None);
        };
        decode(table, key, value.value()).map(Some)
    }

    /// Reads every record of a table, in key order.
    pub fn list<T: DeserializeOwned>(&self, table: Table) -> Result<Vec<(String, T)>> {
        let tx = self.begin_read("list", table)?;
        let t = match tx.open_table(table.definition()) {
            Ok(t) => t,
            Err(redb::TableError::TableDoesNotExist(_)) => return Ok(Vec::new()),
            Err(e) => return Err(db_err("list", table)(e.into())),
        };
        let mut out = Vec::new();
        for entry in t.iter().map_err(|e| db_err("list", table)(e.into()))? {
            let (k, v) = entry.map_err(|e| db_err("list", table)(e.into()))?;
            let key = k.value().to_string();
            let record = decode(table, &key, v.value())?;
            out.push((key, record));
        }
        Ok(out)
    }

    /// Every record of a table, in key order, shared: decoded once and handed out again until
    /// the next write. kubelet lists every pod and container every second while they rarely
    /// change; decoding hundreds of JSON records each time was most of the cost of a list.
    pub fn list_shared<T>(&self, table: Table) -> Result<Arc<Vec<(String, T)>>>
    where
        T: DeserializeOwned + Send + Sync + 'static,
    {
        let slot = (table.0, TypeId::of::<T>());
        // Read before the records: a write that lands meanwhile leaves this snapshot older
        // than the generation, so the next call reads again.
        let generation = self.generation.load(Ordering::Acquire);
        let cached = self
            .snapshots
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&slot)
            .filter(|snapshot| snapshot.generation == generation)
            .and_then(|snapshot| snapshot.records.clone().downcast().ok());
        if let Some(records) = cached {
            return Ok(records);
        }
        let records = Arc::new(self.list::<T>(table)?);
        self.snapshots
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(
                slot,
                Snapshot {
                    generation,
                    records: records.clone(),
                },
            );
        Ok(records)
    }

    /// Writes one record, replacing any record with the same key.
    pub fn put<T: Serialize>(&self, table: Table, key: &str, value: &T) -> Result<()> {
        self.write(|tx| tx.put(table, key, value))
    }

    /// Deletes one record; returns whether it existed.
    pub fn delete(&self, table: Table, key: &str) -> Result<bool> {
        self.write(|tx| tx.delete(table, key))
    }

    /// Runs `f` in one write transaction: every change it makes is committed together, or none
    /// is if it returns an error.
    pub fn write<R>(&self, f: impl FnOnce(&WriteTx<'_>) -> Result<R>) -> Result<R> {
        let tx = self.begin_write()?;
        let write = WriteTx {
            tx: &tx,
            tables: RefCell::new(Vec::new()),
        };
        let out = f(&write);
        let tables = write.tables.into_inner();
        let committed = out.and_then(|out| {
            tx.commit().map_err(|e| {
                let e = redb::Error::from(e);
                self.poisoned(&e);
                tx_err("commit", tables)(e)
            })?;
            Ok(out)
        });
        // After the commit (or the abort): a snapshot read from here on sees the change.
        self.generation.fetch_add(1, Ordering::AcqRel);
        committed
    }
}

/// A write transaction handed to the closure of [`Store::write`].
pub struct WriteTx<'a> {
    tx: &'a redb::WriteTransaction,
    /// The tables written so far, for the commit's error message.
    tables: RefCell<Vec<&'static str>>,
}

impl WriteTx<'_> {
    fn wrote(&self, table: Table) {
        let mut tables = self.tables.borrow_mut();
        if !tables.contains(&table.0) {
            tables.push(table.0);
        }
    }

    /// Writes one record, replacing any record with the same key.
    pub fn put<T: Serialize>(&self, table: Table, key: &str, value: &T) -> Result<()> {
        let bytes = serde_json::to_vec(value).map_err(|source| StoreError::Codec {
            table: table.0,
            key: key.to_string(),
            source,
        })?;
        let mut t = self
            .tx
            .open_table(table.definition())
            .map_err(|e| db_err("write", table)(e.into()))?;
        t.insert(key, bytes.as_slice())
            .map_err(|e| db_err("write", table)(e.into()))?;
        self.wrote(table);
        Ok(())
    }

    /// Deletes one record; returns whether it existed.
    pub fn delete(&self, table: Table, key: &str) -> Result<bool> {
        let mut t = self
            .tx
            .open_table(table.definition())
            .map_err(|e| db_err("delete", table)(e.into()))?;
        let existed = t
            .remove(key)
            .map_err(|e| db_err("delete", table)(e.into()))?
            .is_some();
        self.wrote(table);
        Ok(existed)
    }

    /// Reads one record as this transaction sees it.
    pub fn get<T: DeserializeOwned>(&self, table: Table, key: &str) -> Result<Option<T>> {
        let t = self
            .tx
            .open_table(table.definition())
            .map_err(|e| db_err("read", table)(e.into()))?;
        let Some(value) = t.get(key).map_err(|e| db_err("read", table)(e.into()))? else {
            return Ok(None);
        };
        decode(table, key, value.value()).map(Some)
    }
}

fn decode<T: DeserializeOwned>(table: Table, key: &str, bytes: &[u8]) -> Result<T> {
    serde_json::from_slice(bytes).map_err(|source| StoreError::Codec {
        table: table.0,
        key: key.to_string(),
        source,
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[derive(Debug, PartialEq, serde::Serialize, serde::Deserialize)]
    struct Rec {
        name: String,
        n: u32,
    }

    fn rec(name: &str, n: u32) -> Rec {
        Rec {
            name: name.into(),
            n,
        }
    }

    #[test]
    fn put_get_list_delete() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("sub/meta.redb")).unwrap();
        assert_eq!(store.get::<Rec>(SANDBOXES, "a").unwrap(), None);
        assert!(store.list::<Rec>(SANDBOXES).unwrap().is_empty());
        store.put(SANDBOXES, "b", &rec("b", 2)).unwrap();
        store.put(SANDBOXES, "a", &rec("a", 1)).unwrap();
        assert_eq!(store.get(SANDBOXES, "a").unwrap(), Some(rec("a", 1)));
        let keys: Vec<String> = store
            .list::<Rec>(SANDBOXES)
            .unwrap()
            .into_iter()
            .map(|(k, _)| k)
            .collect();
        assert_eq!(keys, ["a", "b"]);
        assert!(store.delete(SANDBOXES, "a").unwrap());
        assert!(!store.delete(SANDBOXES, "a").unwrap());
        assert_eq!(store.get::<Rec>(SANDBOXES, "a").unwrap(), None);
    }

    #[test]
    fn a_shared_list_is_reused_until_a_write_and_then_read_again() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("meta.redb")).unwrap();
        store.put(SANDBOXES, "a", &rec("a", 1)).unwrap();
        let first = store.list_shared::<Rec>(SANDBOXES).unwrap();
        assert_eq!(*first, [("a".to_string(), rec("a", 1))]);
        assert!(Arc::ptr_eq(
            &first,
            &store.list_shared::<Rec>(SANDBOXES).unwrap()
        ));
        // Another table's writes count too: one generation for the whole store.
        store.put(CONTAINERS, "c", &rec("c", 3)).unwrap();
        let after_other = store.list_shared::<Rec>(SANDBOXES).unwrap();
        assert_eq!(*after_other, *first);
        store.put(SANDBOXES, "a", &rec("a", 2)).unwrap();
        store.put(SANDBOXES, "b", &rec("b", 1)).unwrap();
        let keys: Vec<(String, u32)> = store
            .list_shared::<Rec>(SANDBOXES)
            .unwrap()
            .iter()
            .map(|(k, r)| (k.clone(), r.n))
            .collect();
        assert_eq!(keys, [("a".to_string(), 2), ("b".to_string(), 1)]);
        assert!(store.delete(SANDBOXES, "a").unwrap());
        assert_eq!(store.list_shared::<Rec>(SANDBOXES).unwrap().len(), 1);
        // A failed write changes nothing and leaves the next list right.
        let failed: Result<()> = store.write(|tx| {
            tx.put(SANDBOXES, "z", &rec("z", 9))?;
            Err(StoreError::Codec {
                table: "sandboxes",
                key: "z".into(),
                source: serde_json::from_str::<u8>("x").unwrap_err(),
            })
        });
        assert!(failed.is_err());
        assert_eq!(store.list_shared::<Rec>(SANDBOXES).unwrap().len(), 1);
    }

    #[test]
    fn records_survive_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("meta.redb");
        {
            let store = Store::open(&path).unwrap();
            store.put(IMAGES, "x", &rec("x", 7)).unwrap();
        }
        let store = Store::open(&path).unwrap();
        assert_eq!(store.get(IMAGES, "x").unwrap(), Some(rec("x", 7)));
    }

    #[test]
    fn failed_transaction_writes_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("meta.redb")).unwrap();
        let result: Result<()> = store.write(|tx| {
            tx.put(CONTAINERS, "c1", &rec("c1", 1))?;
            // A record that cannot be decoded as Rec forces an error mid-transaction.
            tx.put(CONTAINERS, "bad", &"not a record")?;
            tx.get::<Rec>(CONTAINERS, "bad").map(|_| ())
        });
        assert!(matches!(result, Err(StoreError::Codec { .. })));
        assert_eq!(store.get::<Rec>(CONTAINERS, "c1").unwrap(), None);
    }

    #[test]
    fn undecodable_record_names_table_and_key() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("meta.redb")).unwrap();
        store.put(SETTINGS, "k", &"text").unwrap();
        let err = store.get::<Rec>(SETTINGS, "k").unwrap_err().to_string();
        assert!(err.contains("record k in table settings"), "{err}");
    }
}

#[cfg(test)]
mod out_of_space_tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn enospc_is_recognised_through_wrappers() {
        let full = std::io::Error::from_raw_os_error(28);
        assert!(is_out_of_space(&full));
        let wrapped = std::io::Error::other(format!("write blob: {full}"));
        assert!(is_out_of_space(&wrapped));
        assert!(!is_out_of_space(&std::io::Error::from_raw_os_error(5)));
    }

    #[test]
    fn a_failed_commit_names_the_tables_it_wrote_not_settings() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("meta.redb")).unwrap();
        let written = store
            .write(|tx| {
                tx.put(SANDBOXES, "a", &"a")?;
                tx.put(CONTAINERS, "b", &"b")?;
                tx.delete(SANDBOXES, "a")?;
                Ok(tx.tables.borrow().clone())
            })
            .unwrap();
        assert_eq!(written, vec!["sandboxes", "containers"]);
        let io = || redb::Error::Io(std::io::Error::from_raw_os_error(28));
        let err = tx_err("commit", written)(io());
        let text = err.to_string();
        assert!(
            text.starts_with("commit a write transaction to tables sandboxes, containers: "),
            "{text}"
        );
        assert!(!text.contains("settings"), "{text}");
        assert_eq!(err.kind(), ErrorKind::ResourceExhausted);
        let err = tx_err("begin", Vec::new())(io());
        assert!(
            err.to_string().starts_with("begin a write transaction: "),
            "{err}"
        );
    }
}
