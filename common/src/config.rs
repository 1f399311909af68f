//! Site configuration: `conf/strata-site.toml`, then `STRATA_*` environment
//! variables, then command-line flags, each layer overriding the one before.
//!
//! Every key has a documented default (the shipped `conf/strata-site.toml` spells
//! them all out, and a test checks that file equals the built-in defaults). Unknown
//! keys and bad values fail at start with the key's dotted name in the message.
//!
//! Environment names: `STRATA_` followed by the key path in upper case, sections
//! separated by a double underscore: `data_dir` is `STRATA_DATA_DIR`,
//! `worker.mem_quota` is `STRATA_WORKER__MEM_QUOTA`.
//!
//! Loading never panics, whatever the file, the environment or the flags hold; a
//! configuration that loads keeps every promise of `validate`: sizes and durations
//! within their ranges (no duration past [`MAX_DURATION`]), and every master address
//! a `host:port` a client can connect to.

use crate::types::{ReadType, WriteType};
use crate::units::{ByteSize, HumanDuration, SyncInterval};
use serde::Deserialize;
use std::collections::BTreeMap;
use std::ffi::OsString;
use std::path::{Path, PathBuf};

/// Environment variables that start with `STRATA_` but are not configuration keys.
pub const NON_KEY_ENV: [&str; 2] = ["STRATA_CONF", "STRATA_LOG"];

/// Default master RPC port.
pub const DEFAULT_MASTER_PORT: u16 = 19998;
/// The port masters reach each other's journal on.
pub const DEFAULT_RAFT_PORT: u16 = 19200;
/// Most masters in one group.
pub const MAX_MASTERS: usize = 7;
/// Default worker RPC port.
pub const DEFAULT_WORKER_PORT: u16 = 29999;

/// Longest duration any setting takes: past any sensible timeout or interval, and
/// short enough that a timer or keepalive deadline (a clock reading plus the
/// duration) cannot overflow.
pub const MAX_DURATION: std::time::Duration = std::time::Duration::from_secs(365 * 24 * 3600);

/// Most dot-separated parts of a key. Real keys have two at most; the bound keeps a
/// flag or variable such as `a.a.a.…` from nesting tables until the stack overflows.
const MAX_KEY_PARTS: usize = 8;

/// A configuration problem, naming the key (or file, or variable) at fault.
#[derive(Debug, thiserror::Error)]
#[error("configuration {key}: {reason}")]
pub struct ConfigError {
    /// Dotted key, environment variable or file the problem is in.
    pub key: String,
    /// What is wrong.
    pub reason: String,
}

fn cfg_err(key: impl Into<String>, reason: impl Into<String>) -> ConfigError {
    ConfigError {
        key: key.into(),
        reason: reason.into(),
    }
}

/// The whole configuration of one Strata process.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SiteConfig {
    /// Root of everything a daemon keeps on disk (metastore, worker fallback tier,
    /// the local under-store of `strata local`).
    pub data_dir: PathBuf,
    /// `host:port` of every master.
    #[serde(deserialize_with = "string_list")]
    pub master_addresses: Vec<String>,
    /// Master settings.
    pub master: MasterConfig,
    /// Worker settings.
    pub worker: WorkerConfig,
    /// Client settings (the library, the CLI, FUSE).
    pub client: ClientConfig,
}

/// Master settings.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MasterConfig {
    /// Address the master's gRPC server binds.
    pub bind_host: String,
    /// The master's gRPC port.
    pub rpc_port: u16,
    /// This master's id in the Raft group (1 or more).
    pub id: u64,
    /// The port masters reach each other's journal on.
    pub raft_port: u16,
    /// Every master of the group, this one included, as `"id@host:port"` with the
    /// Raft port; empty for a lone master. All masters share `rpc_port`: a master
    /// that does not lead names the leader's `host:rpc_port` to clients.
    pub peers: Vec<String>,
    /// RocksDB metastore folder; empty means `<data_dir>/master/metastore`.
    pub metastore_dir: String,
    /// RocksDB folder of the Raft log; empty means `<data_dir>/master/journal`.
    pub journal_dir: String,
    /// Inodes and directory entries kept in the in-memory cache in front of RocksDB.
    pub inode_cache_entries: u64,
    /// A worker silent for this long is dropped, with its block locations.
    pub worker_timeout: HumanDuration,
    /// Under-store URI mounted at `/` when the namespace is formatted; empty leaves
    /// `/` unbacked (files outside mounts can then only be written `MUST_CACHE`).
    pub root_ufs: String,
    /// How stale the view of a path under a mount may grow before a lookup or
    /// listing compares it with the under-store; a mount's `sync_interval` option
    /// and a request's own interval override it.
    pub ufs_sync_interval: SyncInterval,
    /// Smallest block size a new file may have.
    pub min_block_size: ByteSize,
    /// Largest block size a new file may have.
    pub max_block_size: ByteSize,
    /// How long a file being written stays without its writer renewing its lease;
    /// past it the file (its blocks, its staged under-store copy) is deleted.
    pub write_lease: HumanDuration,
    /// A snapshot of the state machine is taken each time this many entries were
    /// applied since the log's start, and the log compacted behind it.
    pub snapshot_interval_entries: u64,
    /// Entries kept in the log behind a snapshot, for a master a little behind.
    pub log_retained_entries: u64,
}

/// Worker settings.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct WorkerConfig {
    /// Address the worker's gRPC server binds.
    pub bind_host: String,
    /// The worker's gRPC port.
    pub rpc_port: u16,
    /// Host name the worker reports to clients; empty means the machine's hostname.
    pub hostname: String,
    /// Folder on tmpfs that holds the MEM tier. If absent, or with less free space
    /// than the quota, the tier falls back to `<data_dir>/worker/mem` with a log line.
    pub mem_dir: PathBuf,
    /// Bytes the MEM tier may hold; least recently used blocks are evicted past it.
    pub mem_quota: ByteSize,
    /// How often the worker reports to the master.
    pub heartbeat_interval: HumanDuration,
}

/// Client settings.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ClientConfig {
    /// Block size of new files.
    pub block_size: ByteSize,
    /// Default write type.
    pub write_type: WriteType,
    /// Default read type.
    pub read_type: ReadType,
    /// Size of one data message on the wire.
    pub chunk_size: ByteSize,
    /// Deadline of one metadata RPC.
    pub rpc_timeout: HumanDuration,
    /// Longest wait to connect to a master or a worker.
    pub connect_timeout: HumanDuration,
    /// Interval of keepalive pings on idle connections; a peer silent for another
    /// interval after a ping is taken as gone.
    pub keepalive_interval: HumanDuration,
    /// Longest wait for a worker to start a block stream or send its next chunk;
    /// past it the read moves to another worker.
    pub data_timeout: HumanDuration,
}

impl Default for SiteConfig {
    fn default() -> Self {
        SiteConfig {
            data_dir: PathBuf::from("./strata-data"),
            master_addresses: vec![format!("127.0.0.1:{DEFAULT_MASTER_PORT}")],
            master: MasterConfig::default(),
            worker: WorkerConfig::default(),
            client: ClientConfig::default(),
        }
    }
}

impl Default for MasterConfig {
    fn default() -> Self {
        MasterConfig {
            bind_host: "127.0.0.1".to_string(),
            rpc_port: DEFAULT_MASTER_PORT,
            id: 1,
            raft_port: DEFAULT_RAFT_PORT,
            peers: Vec::new(),
            metastore_dir: String::new(),
            journal_dir: String::new(),
            inode_cache_entries: 100_000,
            worker_timeout: HumanDuration(std::time::Duration::from_secs(30)),
            root_ufs: String::new(),
            ufs_sync_interval: SyncInterval::Always,
            min_block_size: ByteSize(4 << 10),
            max_block_size: ByteSize(4 << 30),
            write_lease: HumanDuration(std::time::Duration::from_secs(300)),
            snapshot_interval_entries: 200_000,
            log_retained_entries: 10_000,
        }
    }
}

impl Default for WorkerConfig {
    fn default() -> Self {
        WorkerConfig {
            bind_host: "127.0.0.1".to_string(),
            rpc_port: DEFAULT_WORKER_PORT,
            hostname: String::new(),
            mem_dir: PathBuf::from("/dev/shm"),
            mem_quota: ByteSize(1 << 30),
            heartbeat_interval: HumanDuration(std::time::Duration::from_secs(1)),
        }
    }
}

impl Default for ClientConfig {
    fn default() -> Self {
        ClientConfig {
            block_size: ByteSize(64 << 20),
            write_type: WriteType::CacheThrough,
            read_type: ReadType::Cache,
            chunk_size: ByteSize(1 << 20),
            rpc_timeout: HumanDuration(std::time::Duration::from_secs(30)),
            connect_timeout: HumanDuration(std::time::Duration::from_secs(5)),
            keepalive_interval: HumanDuration(std::time::Duration::from_secs(10)),
            data_timeout: HumanDuration(std::time::Duration::from_secs(30)),
        }
    }
}

/// Where a configuration comes from.
#[derive(Debug, Default, Clone)]
pub struct LoadOptions {
    /// The site file; `None` uses `$STRATA_CONF` if set, else the built-in defaults.
    pub file: Option<PathBuf>,
    /// Apply `STRATA_*` environment variables.
    pub use_env: bool,
    /// Flag overrides, `("worker.rpc_port", "0")`, applied last.
    pub overrides: Vec<(String, String)>,
}

impl SiteConfig {
    /// Loads the file, then the environment, then the overrides, and validates.
    pub fn load(opts: &LoadOptions) -> Result<SiteConfig, ConfigError> {
        let file = opts
            .file
            .clone()
            .or_else(|| std::env::var_os("STRATA_CONF").map(PathBuf::from));
        let mut table = match &file {
            Some(path) => read_table(path)?,
            None => toml::Table::new(),
        };
        if opts.use_env {
            for (var, value) in env_settings(std::env::vars_os())? {
                let key = env_var_to_key(&var);
                set_key(&mut table, &key, &value).map_err(|e| cfg_err(&var, e.reason))?;
            }
        }
        for (key, value) in &opts.overrides {
            set_key(&mut table, key, value)?;
        }
        Self::from_table(table)
    }

    /// Parses one TOML document (no environment, no overrides) and validates it.
    pub fn from_toml_str(text: &str) -> Result<SiteConfig, ConfigError> {
        let table: toml::Table = text
            .parse()
            .map_err(|e: toml::de::Error| cfg_err("file", e.to_string()))?;
        Self::from_table(table)
    }

    fn from_table(table: toml::Table) -> Result<SiteConfig, ConfigError> {
        let cfg: SiteConfig =
            serde_path_to_error::deserialize(toml::Value::Table(table)).map_err(|e| {
                let key = e.path().to_string();
                let key = match key.as_str() {
                    "." => "file".to_string(),
                    // A key spelled `""` in the file.
                    "" => "\"\"".to_string(),
                    _ => key,
                };
                cfg_err(key, e.inner().to_string())
            })?;
        cfg.validate()?;
        Ok(cfg)
    }

    fn validate(&self) -> Result<(), ConfigError> {
        if self.master_addresses.is_empty() {
            return Err(cfg_err(
                "master_addresses",
                "at least one master address is needed",
            ));
        }
        for addr in &self.master_addresses {
            if !is_host_port(addr) {
                return Err(cfg_err(
                    "master_addresses",
                    format!("{addr:?} is not host:port (a host name or IP address, a port from 1 to 65535)"),
                ));
            }
        }
        let bs = self.client.block_size.0;
        if !(4096..=(1 << 32)).contains(&bs) {
            return Err(cfg_err(
                "client.block_size",
                "must be between 4KiB and 4GiB",
            ));
        }
        let (min, max) = (self.master.min_block_size.0, self.master.max_block_size.0);
        let limits = crate::ids::MIN_BLOCK_SIZE..=crate::ids::MAX_BLOCK_SIZE;
        if !limits.contains(&min) {
            return Err(cfg_err(
                "master.min_block_size",
                "must be between 4KiB and 64GiB",
            ));
        }
        if !limits.contains(&max) || max < min {
            return Err(cfg_err(
                "master.max_block_size",
                "must be between master.min_block_size and 64GiB",
            ));
        }
        let cs = self.client.chunk_size.0;
        if !(4096..=(8 << 20)).contains(&cs) {
            return Err(cfg_err(
                "client.chunk_size",
                "must be between 4KiB and 8MiB",
            ));
        }
        for (key, d) in [
            ("client.rpc_timeout", self.client.rpc_timeout.0),
            ("client.connect_timeout", self.client.connect_timeout.0),
            (
                "client.keepalive_interval",
                self.client.keepalive_interval.0,
            ),
            ("client.data_timeout", self.client.data_timeout.0),
        ] {
            if d < std::time::Duration::from_millis(10) {
                return Err(cfg_err(key, "must be at least 10ms"));
            }
        }
        if self.worker.mem_quota.0 == 0 {
            return Err(cfg_err("worker.mem_quota", "must be more than 0"));
        }
        if self.worker.heartbeat_interval.0.is_zero() {
            return Err(cfg_err("worker.heartbeat_interval", "must be more than 0"));
        }
        if self.master.worker_timeout.0 <= self.worker.heartbeat_interval.0 {
            return Err(cfg_err(
                "master.worker_timeout",
                "must be longer than worker.heartbeat_interval",
            ));
        }
        let lease = self.master.write_lease.0;
        if lease < std::time::Duration::from_millis(100)
            || lease > std::time::Duration::from_secs(7 * 24 * 3600)
        {
            return Err(cfg_err(
                "master.write_lease",
                "must be between 100ms and 7 days",
            ));
        }
        if self.master.id == 0 {
            return Err(cfg_err("master.id", "must be 1 or more"));
        }
        if !(100..=1_000_000_000).contains(&self.master.snapshot_interval_entries) {
            return Err(cfg_err(
                "master.snapshot_interval_entries",
                "must be between 100 and 1000000000",
            ));
        }
        if self.master.log_retained_entries >= self.master.snapshot_interval_entries {
            return Err(cfg_err(
                "master.log_retained_entries",
                "must be below master.snapshot_interval_entries",
            ));
        }
        let members = self.raft_members()?;
        let Some(own) = members.get(&self.master.id) else {
            return Err(cfg_err(
                "master.peers",
                format!("does not name this master (master.id = {})", self.master.id),
            ));
        };
        if members.len() > 1 {
            if !own.ends_with(&format!(":{}", self.master.raft_port)) {
                return Err(cfg_err(
                    "master.peers",
                    format!(
                        "names this master at {own}, but master.raft_port is {}",
                        self.master.raft_port
                    ),
                ));
            }
            if self.master.rpc_port == 0 {
                return Err(cfg_err(
                    "master.rpc_port",
                    "a master of a group needs a fixed port (clients are sent to it)",
                ));
            }
        }
        if self.master.inode_cache_entries == 0 {
            return Err(cfg_err("master.inode_cache_entries", "must be more than 0"));
        }
        for (key, d) in [
            ("master.worker_timeout", self.master.worker_timeout.0),
            (
                "worker.heartbeat_interval",
                self.worker.heartbeat_interval.0,
            ),
            ("client.rpc_timeout", self.client.rpc_timeout.0),
            ("client.connect_timeout", self.client.connect_timeout.0),
            (
                "client.keepalive_interval",
                self.client.keepalive_interval.0,
            ),
            ("client.data_timeout", self.client.data_timeout.0),
        ] {
            // Past it, `Instant + d` can overflow; a client's HTTP/2 keepalive timer
            // adds its interval to an `Instant` so, and panics on overflow.
            if d > MAX_DURATION {
                return Err(cfg_err(key, "must be at most 365 days"));
            }
        }
        Ok(())
    }

    /// Every master of the Raft group by id, with its Raft address: from
    /// `master.peers`, or this master alone.
    pub fn raft_members(&self) -> Result<BTreeMap<u64, String>, ConfigError> {
        let mut out = BTreeMap::new();
        if self.master.peers.is_empty() {
            out.insert(
                self.master.id,
                format!("{}:{}", self.master.bind_host, self.master.raft_port),
            );
            return Ok(out);
        }
        if self.master.peers.len() > MAX_MASTERS {
            return Err(cfg_err(
                "master.peers",
                format!("at most {MAX_MASTERS} masters"),
            ));
        }
        for p in &self.master.peers {
            let bad = || {
                cfg_err(
                    "master.peers",
                    format!("{p:?} is not \"id@host:port\" (an id of 1 or more, the Raft port)"),
                )
            };
            let (id, addr) = p.split_once('@').ok_or_else(bad)?;
            let id: u64 = id.parse().map_err(|_| bad())?;
            if id == 0 || !is_host_port(addr) {
                return Err(bad());
            }
            if out.values().any(|a| a == addr) {
                return Err(cfg_err(
                    "master.peers",
                    format!("{addr} is named for two masters"),
                ));
            }
            if out.insert(id, addr.to_string()).is_some() {
                return Err(cfg_err(
                    "master.peers",
                    format!("master {id} is named twice"),
                ));
            }
        }
        Ok(out)
    }

    /// The client address (`host:rpc_port`) of master `id` of the group.
    pub fn master_rpc_address(&self, id: u64) -> Option<String> {
        let members = self.raft_members().ok()?;
        let raft = members.get(&id)?;
        let (host, _) = raft.rsplit_once(':')?;
        Some(format!("{host}:{}", self.master.rpc_port))
    }

    /// The Raft log folder, resolved against `data_dir`.
    pub fn journal_dir(&self) -> PathBuf {
        if self.master.journal_dir.is_empty() {
            self.data_dir.join("master").join("journal")
        } else {
            PathBuf::from(&self.master.journal_dir)
        }
    }

    /// The metastore folder, resolved against `data_dir`.
    pub fn metastore_dir(&self) -> PathBuf {
        if self.master.metastore_dir.is_empty() {
            self.data_dir.join("master").join("metastore")
        } else {
            PathBuf::from(&self.master.metastore_dir)
        }
    }
}

fn read_table(path: &Path) -> Result<toml::Table, ConfigError> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| cfg_err(path.display().to_string(), format!("cannot read: {e}")))?;
    text.parse()
        .map_err(|e: toml::de::Error| cfg_err(path.display().to_string(), e.to_string()))
}

/// The `STRATA_*` settings among `vars`, sorted. A name or value that is not UTF-8
/// is an error naming the variable; variables of other programs may hold any bytes.
fn env_settings(
    vars: impl IntoIterator<Item = (OsString, OsString)>,
) -> Result<Vec<(String, String)>, ConfigError> {
    let mut settings = Vec::new();
    for (name, value) in vars {
        if !name.as_encoded_bytes().starts_with(b"STRATA_") {
            continue;
        }
        let name = name
            .into_string()
            .map_err(|name| cfg_err(name.to_string_lossy(), "name is not UTF-8"))?;
        if NON_KEY_ENV.contains(&name.as_str()) {
            continue;
        }
        let value = value
            .into_string()
            .map_err(|_| cfg_err(&name, "value is not UTF-8"))?;
        settings.push((name, value));
    }
    settings.sort();
    Ok(settings)
}

/// Whether `addr` is `host:port` as a client dials it (`http://host:port`): a DNS
/// name or IPv4 address, or an IPv6 address in brackets, and a port from 1 to 65535.
fn is_host_port(addr: &str) -> bool {
    let Some((host, port)) = addr.rsplit_once(':') else {
        return false;
    };
    let port_ok = !port.is_empty()
        && port.bytes().all(|b| b.is_ascii_digit())
        && matches!(port.parse::<u16>(), Ok(1..));
    let host_ok = match host.strip_prefix('[').and_then(|h| h.strip_suffix(']')) {
        Some(v6) => {
            !v6.is_empty()
                && v6
                    .bytes()
                    .all(|b| b.is_ascii_hexdigit() || b == b':' || b == b'.')
        }
        None => {
            !host.is_empty()
                && host
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b'_'))
        }
    };
    port_ok && host_ok
}

fn env_var_to_key(var: &str) -> String {
    var["STRATA_".len()..]
        .split("__")
        .map(|s| s.to_ascii_lowercase())
        .collect::<Vec<_>>()
        .join(".")
}

/// Sets `a.b.c = value` in the table. The value is read as a TOML value when it is
/// one (`8080`, `true`, `["a"]`), else as a string (`64MiB`, `/tmp/x`).
fn set_key(table: &mut toml::Table, key: &str, value: &str) -> Result<(), ConfigError> {
    let parsed: toml::Value = format!("v = {value}")
        .parse::<toml::Table>()
        .ok()
        .and_then(|mut t| t.remove("v"))
        .unwrap_or_else(|| toml::Value::String(value.to_string()));
    let mut parts: Vec<&str> = key.split('.').collect();
    if parts.len() > MAX_KEY_PARTS {
        let start: String = key.chars().take(40).collect();
        return Err(cfg_err(
            format!("{start}..."),
            format!("no key has more than {MAX_KEY_PARTS} parts"),
        ));
    }
    let last = parts
        .pop()
        .filter(|s| !s.is_empty())
        // An error names its key; name the empty one visibly.
        .ok_or_else(|| cfg_err(format!("{key:?}"), "empty key"))?;
    let mut cur = table;
    for part in parts {
        let entry = cur
            .entry(part.to_string())
            .or_insert_with(|| toml::Value::Table(toml::Table::new()));
        cur = match entry {
            toml::Value::Table(t) => t,
            _ => return Err(cfg_err(key, format!("{part} is not a section"))),
        };
    }
    cur.insert(last.to_string(), parsed);
    Ok(())
}

fn string_list<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Vec<String>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Raw {
        List(Vec<String>),
        Csv(String),
    }
    Ok(match Raw::deserialize(d)? {
        Raw::List(v) => v,
        Raw::Csv(s) => s
            .split(',')
            .map(|p| p.trim().to_string())
            .filter(|p| !p.is_empty())
            .collect(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_document_is_all_defaults() {
        assert_eq!(
            SiteConfig::from_toml_str("").unwrap(),
            SiteConfig::default()
        );
    }

    #[test]
    fn parses_units_and_modes() {
        let cfg = SiteConfig::from_toml_str(
            "[worker]\nmem_quota = \"2GiB\"\nheartbeat_interval = \"250ms\"\n\
             [client]\nwrite_type = \"THROUGH\"\nblock_size = \"1MiB\"\n",
        )
        .unwrap();
        assert_eq!(cfg.worker.mem_quota.0, 2 << 30);
        assert_eq!(cfg.worker.heartbeat_interval.0.as_millis(), 250);
        assert_eq!(cfg.client.write_type, WriteType::Through);
        assert_eq!(cfg.client.block_size.0, 1 << 20);
    }

    #[test]
    fn unknown_key_and_bad_value_name_the_key() {
        let err = SiteConfig::from_toml_str("[worker]\nmem_qouta = \"1GiB\"\n").unwrap_err();
        assert!(err.to_string().contains("mem_qouta"), "{err}");
        let err = SiteConfig::from_toml_str("[worker]\nmem_quota = \"lots\"\n").unwrap_err();
        assert_eq!(err.key, "worker.mem_quota");
        let err = SiteConfig::from_toml_str("[client]\nwrite_type = \"SOMETIMES\"\n").unwrap_err();
        assert_eq!(err.key, "client.write_type");
        let err = SiteConfig::from_toml_str("[client]\nblock_size = \"1KiB\"\n").unwrap_err();
        assert_eq!(err.key, "client.block_size");
    }

    #[test]
    fn peers_are_checked_and_name_this_master() {
        let three = "[master]\nid = 2\npeers = [\"1@a:19200\", \"2@b:19200\", \"3@c:19200\"]\nrpc_port = 7\n";
        let wrong_port = three.replace("2@b:19200", "2@b:19300");
        let cfg = SiteConfig::from_toml_str(three).unwrap();
        let members = cfg.raft_members().unwrap();
        assert_eq!(members.keys().copied().collect::<Vec<_>>(), vec![1, 2, 3]);
        assert_eq!(members[&3], "c:19200");
        assert_eq!(cfg.master_rpc_address(3).as_deref(), Some("c:7"));
        assert_eq!(cfg.master_rpc_address(4), None);
        // Alone: this master, on its own Raft port.
        let alone = SiteConfig::default().raft_members().unwrap();
        assert_eq!(alone.len(), 1);
        assert!(alone.contains_key(&1));
        for (bad, why) in [
            ("[master]\nid = 4\npeers = [\"1@a:1\", \"2@b:1\"]\n", "does not name this master"),
            ("[master]\npeers = [\"1@a:1\", \"1@b:1\"]\n", "named twice"),
            ("[master]\npeers = [\"a:1\"]\n", "is not"),
            ("[master]\npeers = [\"0@a:1\"]\n", "is not"),
            ("[master]\npeers = [\"x@a:1\"]\n", "is not"),
            ("[master]\npeers = [\"1@a\"]\n", "is not"),
            ("[master]\npeers = [\"1@a:99999\"]\n", "is not"),
            ("[master]\nid = 0\n", "1 or more"),
            ("[master]\npeers = [\"1@a:1\", \"2@a:1\"]\n", "named for two masters"),
            (wrong_port.as_str(), "master.raft_port is 19200"),
            (
                "[master]\nrpc_port = 0\nraft_port = 1\npeers = [\"1@a:1\", \"2@b:1\"]\n",
                "fixed port",
            ),
            (
                "[master]\npeers = [\"1@a:1\",\"2@b:1\",\"3@c:1\",\"4@d:1\",\"5@e:1\",\"6@f:1\",\"7@g:1\",\"8@h:1\"]\n",
                "at most 7",
            ),
        ] {
            let err = SiteConfig::from_toml_str(bad).unwrap_err();
            assert!(err.key.starts_with("master."), "{bad}: {err}");
            assert!(err.to_string().contains(why), "{bad}: {err}");
        }
    }

    #[test]
    fn overrides_apply_last() {
        let cfg = SiteConfig::load(&LoadOptions {
            file: None,
            use_env: false,
            overrides: vec![
                ("worker.rpc_port".into(), "0".into()),
                ("data_dir".into(), "/tmp/x y".into()),
                ("master_addresses".into(), "127.0.0.1:1,127.0.0.1:2".into()),
            ],
        })
        .unwrap();
        assert_eq!(cfg.worker.rpc_port, 0);
        assert_eq!(cfg.data_dir, PathBuf::from("/tmp/x y"));
        assert_eq!(cfg.master_addresses.len(), 2);
        let err = SiteConfig::load(&LoadOptions {
            overrides: vec![("worker.nope".into(), "1".into())],
            ..Default::default()
        })
        .unwrap_err();
        assert!(err.to_string().contains("nope"), "{err}");
    }

    #[test]
    fn a_deeply_dotted_key_is_an_error_not_a_stack_overflow() {
        // A flag `-D a.a.a.…=1` (or the variable `STRATA_A__A__…`) nested one table
        // per part; dropping 100,000 of them overflowed the stack and aborted.
        let key = vec!["a"; 100_000].join(".");
        let err = SiteConfig::load(&LoadOptions {
            overrides: vec![(key, "1".into())],
            ..Default::default()
        })
        .unwrap_err();
        assert!(err.reason.contains("parts"), "{err}");
    }

    #[test]
    fn an_empty_key_is_named_in_its_error() {
        for key in ["", "worker."] {
            let err = SiteConfig::load(&LoadOptions {
                overrides: vec![(key.into(), "1".into())],
                ..Default::default()
            })
            .unwrap_err();
            assert_eq!(err.key, format!("{key:?}"));
        }
        let err = SiteConfig::from_toml_str("\"\" = 1").unwrap_err();
        assert_eq!(err.key, "\"\"");
    }

    #[test]
    fn a_variable_that_is_not_utf8_is_an_error_not_a_panic() {
        use std::os::unix::ffi::OsStringExt;
        let bytes = |b: &[u8]| OsString::from_vec(b.to_vec());
        let err = env_settings([(bytes(b"STRATA_DATA_DIR"), bytes(b"/x\xff"))]).unwrap_err();
        assert_eq!(err.key, "STRATA_DATA_DIR");
        // Another program's variable is none of our business, whatever its bytes.
        let ok = env_settings([
            (bytes(b"OTHER\xff"), bytes(b"\xfe")),
            (bytes(b"STRATA_LOG"), bytes(b"info")),
            (bytes(b"STRATA_WORKER__MEM_QUOTA"), bytes(b"1GiB")),
        ])
        .unwrap();
        assert_eq!(ok, [("STRATA_WORKER__MEM_QUOTA".into(), "1GiB".into())]);
    }

    #[test]
    fn loading_the_environment_survives_a_variable_that_is_not_utf8() {
        use std::os::unix::ffi::OsStrExt;
        // `std::env::vars` panics on any such variable, ours or not. No other test
        // of this crate reads the whole environment, and the variable goes after.
        let name = "STRATA_TEST_NOT_UTF8_NOT_A_KEY";
        std::env::set_var(name, std::ffi::OsStr::from_bytes(b"\xff"));
        let result = SiteConfig::load(&LoadOptions {
            use_env: true,
            ..Default::default()
        });
        std::env::remove_var(name);
        assert_eq!(result.unwrap_err().key, name);
    }

    #[test]
    fn a_duration_too_long_for_a_clock_is_refused() {
        // Accepted before; a client's keepalive timer then adds it to an `Instant`,
        // which panics on overflow.
        for key in [
            "client.keepalive_interval",
            "client.rpc_timeout",
            "client.connect_timeout",
            "client.data_timeout",
            "master.worker_timeout",
        ] {
            let err = SiteConfig::load(&LoadOptions {
                overrides: vec![(key.into(), "5124095576030431h".into())],
                ..Default::default()
            })
            .unwrap_err();
            assert_eq!(err.key, key);
        }
        assert!(std::time::Instant::now()
            .checked_add(MAX_DURATION * 2)
            .is_some());
    }

    #[test]
    fn master_addresses_need_a_host_and_a_port_from_1_to_65535() {
        let load = |addr: &str| {
            SiteConfig::load(&LoadOptions {
                overrides: vec![("master_addresses".into(), format!("[{addr:?}]"))],
                ..Default::default()
            })
        };
        // All accepted before: no host, port 0, a sign, a path, a user.
        for bad in [
            ":19998", "host:0", "host:+5", "a/b:1", "u@h:1", "[]:1", "h:65536", "h",
        ] {
            let err = load(bad).unwrap_err();
            assert_eq!(err.key, "master_addresses", "{bad}");
        }
        for good in [
            "127.0.0.1:19998",
            "strata-master-0.svc:1",
            "[::1]:65535",
            "my_host:80",
        ] {
            assert!(load(good).is_ok(), "{good}");
        }
    }

    #[test]
    fn env_names_map_to_keys() {
        assert_eq!(
            env_var_to_key("STRATA_WORKER__MEM_QUOTA"),
            "worker.mem_quota"
        );
        assert_eq!(env_var_to_key("STRATA_DATA_DIR"), "data_dir");
    }
}
