//! `strata fs`: the file system shell. Command names follow `alluxio fs`.
//!
//! Every failure prints one line naming the path and the reason, and the command
//! exits non-zero (`test` answers with its exit code alone).

use clap::{Args, Subcommand, ValueEnum};
use std::path::{Path, PathBuf};
use strata_client::{
    CreateOptions, FileInfo, FileSystem, OpenOptions, ReadType, SyncInterval, WriteType,
};
use strata_common::config::SiteConfig;
use strata_common::units::format_bytes;
use tokio::io::{AsyncReadExt, AsyncSeekExt, AsyncWriteExt};

/// Flags of `strata fs`.
#[derive(Debug, Args)]
pub struct FsArgs {
    /// Master address `host:port` (default: `master_addresses` of the configuration).
    #[arg(long, global = true)]
    pub master: Option<String>,
    /// The shell command.
    #[command(subcommand)]
    pub command: FsCommand,
}

impl FsArgs {
    pub(crate) fn overrides(&self) -> Vec<(String, String)> {
        crate::daemons::master_override(self.master.as_deref())
    }
}

/// Write types, as flags.
#[derive(Debug, Clone, Copy, ValueEnum)]
#[value(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum WriteTypeArg {
    /// Worker storage only.
    MustCache,
    /// Worker storage and the under-store.
    CacheThrough,
    /// The under-store only.
    Through,
}

impl From<WriteTypeArg> for WriteType {
    fn from(w: WriteTypeArg) -> Self {
        match w {
            WriteTypeArg::MustCache => WriteType::MustCache,
            WriteTypeArg::CacheThrough => WriteType::CacheThrough,
            WriteTypeArg::Through => WriteType::Through,
        }
    }
}

/// Read types, as flags.
#[derive(Debug, Clone, Copy, ValueEnum)]
#[value(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum ReadTypeArg {
    /// Keep blocks read from the under-store in worker storage.
    Cache,
    /// Do not.
    NoCache,
}

impl From<ReadTypeArg> for ReadType {
    fn from(r: ReadTypeArg) -> Self {
        match r {
            ReadTypeArg::Cache => ReadType::Cache,
            ReadTypeArg::NoCache => ReadType::NoCache,
        }
    }
}

/// What `test` checks.
#[derive(Debug, Clone, Copy, Args)]
#[group(required = true, multiple = false)]
pub struct TestFlags {
    /// Is a directory.
    #[arg(short = 'd')]
    pub dir: bool,
    /// Exists.
    #[arg(short = 'e')]
    pub exists: bool,
    /// Is a file.
    #[arg(short = 'f')]
    pub file: bool,
    /// Is a non-empty directory or a non-empty file.
    #[arg(short = 's')]
    pub non_empty: bool,
    /// Is a zero-length file.
    #[arg(short = 'z')]
    pub zero: bool,
}

/// The shell commands.
#[derive(Debug, Subcommand)]
pub enum FsCommand {
    /// List a directory (or show a file).
    #[command(disable_help_flag = true)]
    Ls {
        /// Print help (`-h` means human-readable sizes here).
        #[arg(long, action = clap::ArgAction::Help)]
        help: Option<bool>,
        /// List subdirectories too.
        #[arg(short = 'R')]
        recursive: bool,
        /// Human-readable sizes.
        #[arg(short = 'h')]
        human: bool,
        /// Compare with the under-store when Strata's view is older than this:
        /// -1 never, 0 always, or a duration (30s, 5m); default: the mount's
        /// sync_interval option, else the master's ufs_sync_interval.
        #[arg(long, value_name = "INTERVAL", allow_hyphen_values = true)]
        sync_interval: Option<SyncInterval>,
        /// The path.
        path: String,
    },
    /// Create directories, with missing parents.
    Mkdir {
        /// The paths.
        #[arg(required = true)]
        paths: Vec<String>,
    },
    /// Print a file.
    Cat {
        /// The file.
        path: String,
    },
    /// Copy a local file or folder into Strata.
    #[command(name = "copyFromLocal")]
    CopyFromLocal {
        /// Write type (default: `client.write_type`).
        #[arg(long)]
        write_type: Option<WriteTypeArg>,
        /// Local source.
        src: PathBuf,
        /// Strata destination.
        dst: String,
    },
    /// Copy a Strata file or folder to the local filesystem.
    #[command(name = "copyToLocal")]
    CopyToLocal {
        /// Strata source.
        src: String,
        /// Local destination.
        dst: PathBuf,
    },
    /// Copy within Strata.
    Cp {
        /// Copy folders recursively.
        #[arg(short = 'R')]
        recursive: bool,
        /// Source.
        src: String,
        /// Destination.
        dst: String,
    },
    /// Remove a file, or a folder with -R (in the under-store too).
    Rm {
        /// Remove folders and everything in them.
        #[arg(short = 'R')]
        recursive: bool,
        /// The paths.
        #[arg(required = true)]
        paths: Vec<String>,
    },
    /// Move or rename; into DST if it is an existing folder.
    Mv {
        /// Source.
        src: String,
        /// Destination.
        dst: String,
    },
    /// Show everything known of a path.
    Stat {
        /// Compare with the under-store when Strata's view is older than this:
        /// -1 never, 0 always, or a duration (30s, 5m); default: the mount's
        /// sync_interval option, else the master's ufs_sync_interval.
        #[arg(long, value_name = "INTERVAL", allow_hyphen_values = true)]
        sync_interval: Option<SyncInterval>,
        /// The path.
        path: String,
    },
    /// Size of files, and how much of it is cached.
    #[command(disable_help_flag = true)]
    Du {
        /// Print help (`-h` means human-readable sizes here).
        #[arg(long, action = clap::ArgAction::Help)]
        help: Option<bool>,
        /// One total line per argument.
        #[arg(short = 's')]
        summarize: bool,
        /// Human-readable sizes.
        #[arg(short = 'h')]
        human: bool,
        /// The path.
        path: String,
    },
    /// Count files, folders and bytes below a path.
    Count {
        /// The path.
        path: String,
    },
    /// Create an empty file.
    Touch {
        /// The path.
        path: String,
    },
    /// Print the first bytes of a file.
    Head {
        /// Bytes to print.
        #[arg(short = 'c', default_value = "1024")]
        bytes: u64,
        /// The file.
        path: String,
    },
    /// Print the last bytes of a file.
    Tail {
        /// Bytes to print.
        #[arg(short = 'c', default_value = "1024")]
        bytes: u64,
        /// The file.
        path: String,
    },
    /// Answer a question about a path with the exit code (0 yes, 1 no).
    Test {
        #[command(flatten)]
        flags: TestFlags,
        /// The path.
        path: String,
    },
    /// Mount an under-store; with no arguments, list the mounts.
    Mount {
        /// Refuse writes through this mount.
        #[arg(long)]
        readonly: bool,
        /// A backend option, `KEY=VALUE` (repeatable): `s3.endpoint`, `s3.region`,
        /// `s3.path_style`, `s3.profile`, `s3.part_size`. Credentials are never
        /// options: each daemon takes them from its AWS environment.
        #[arg(long = "option", value_name = "KEY=VALUE")]
        options: Vec<String>,
        /// Strata path (must not exist).
        path: Option<String>,
        /// Under-store: `file:///folder`, `/folder` or `s3://bucket/prefix`.
        uri: Option<String>,
    },
    /// Remove a mount (the under-store keeps its files).
    Unmount {
        /// The mount point.
        path: String,
    },
    /// Read a file or folder into worker storage.
    Load {
        /// Compare with the under-store when Strata's view is older than this:
        /// -1 never, 0 always, or a duration (30s, 5m); default: the mount's
        /// sync_interval option, else the master's ufs_sync_interval.
        #[arg(long, value_name = "INTERVAL", allow_hyphen_values = true)]
        sync_interval: Option<SyncInterval>,
        /// The path.
        path: String,
    },
    /// Drop cached copies of a file or folder (persisted files only).
    Free {
        /// The path.
        path: String,
    },
    /// Show where each block of a file is cached.
    Location {
        /// The file.
        path: String,
    },
}

/// Formats ms since the epoch as `YYYY-MM-DD HH:MM:SS` UTC.
fn format_time(ms: i64) -> String {
    let secs = ms.div_euclid(1000);
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    // Civil-from-days (proleptic Gregorian), days since 1970-01-01.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02} {:02}:{:02}:{:02}",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

fn size(n: u64, human: bool) -> String {
    if human {
        format_bytes(n)
    } else {
        n.to_string()
    }
}

fn ls_line(f: &FileInfo, human: bool) -> String {
    let kind = if f.mount_point {
        "m"
    } else if f.is_dir() {
        "d"
    } else {
        "-"
    };
    let persist = if f.persisted {
        "PERSISTED"
    } else {
        "NOT_PERSISTED"
    };
    let cached = if f.is_dir() {
        String::from("    ")
    } else {
        format!("{:>3}%", f.cached_percent)
    };
    format!(
        "{kind} {:>12}  {persist:<13}  {}  {cached}  {}",
        size(f.length, human),
        format_time(f.mtime_ms),
        f.path
    )
}

/// Every file below `path` (or `path` itself), depth first, in name order.
async fn walk(fs: &FileSystem, path: &str) -> strata_client::Result<Vec<FileInfo>> {
    let root = fs.get_status(path).await?;
    let mut out = Vec::new();
    let mut stack = vec![root];
    while let Some(cur) = stack.pop() {
        if cur.is_dir() {
            let mut kids = fs.list(cur.path.as_str()).await?;
            kids.reverse();
            stack.extend(kids);
        }
        out.push(cur);
    }
    Ok(out)
}

async fn copy_reader_to_strata(
    fs: &FileSystem,
    src: &Path,
    dst: &str,
    write_type: Option<WriteType>,
) -> anyhow::Result<u64> {
    let mut file = tokio::fs::File::open(src)
        .await
        .map_err(|e| anyhow::anyhow!("{}: {e}", src.display()))?;
    let mut w = fs
        .create(
            dst,
            CreateOptions {
                write_type,
                recursive: true,
                ..Default::default()
            },
        )
        .await?;
    let mut buf = vec![0u8; fs.config().chunk_size.0 as usize];
    loop {
        let n = match file.read(&mut buf).await {
            Ok(n) => n,
            Err(e) => {
                drop(w);
                let _ = fs.delete(dst, false).await;
                anyhow::bail!("{}: {e}", src.display());
            }
        };
        if n == 0 {
            break;
        }
        w.write(&buf[..n]).await?;
    }
    Ok(w.close().await?.length)
}

async fn copy_strata_file(fs: &FileSystem, src: &str, dst: &str) -> anyhow::Result<u64> {
    let mut r = fs.open(src, OpenOptions::default()).await?;
    let mut w = fs
        .create(
            dst,
            CreateOptions {
                recursive: true,
                ..Default::default()
            },
        )
        .await?;
    let mut buf = vec![0u8; fs.config().chunk_size.0 as usize];
    loop {
        let n = r
            .read(&mut buf)
            .await
            .map_err(|e| anyhow::anyhow!("{src}: {e}"))?;
        if n == 0 {
            break;
        }
        w.write(&buf[..n]).await?;
    }
    Ok(w.close().await?.length)
}

fn join(dir: &str, name: &str) -> String {
    if dir.ends_with('/') {
        format!("{dir}{name}")
    } else {
        format!("{dir}/{name}")
    }
}

/// Runs one shell command; returns the exit code.
pub async fn run(cfg: SiteConfig, cmd: &FsCommand) -> anyhow::Result<i32> {
    let fs = FileSystem::connect(&cfg).await?;
    let mut out = tokio::io::stdout();
    match cmd {
        FsCommand::Ls {
            recursive,
            human,
            sync_interval,
            path,
            ..
        } => {
            let fs = with_sync(&fs, *sync_interval);
            if *recursive {
                let mut all = walk(&fs, path).await?;
                if all.first().is_some_and(|f| f.is_dir()) {
                    all.remove(0);
                }
                for f in all {
                    println!("{}", ls_line(&f, *human));
                }
            } else {
                // Printed a page at a time: a folder of millions of entries lists
                // in flat memory, and the first lines show at once.
                use futures::StreamExt;
                use std::io::Write;
                let mut entries = std::pin::pin!(fs.list_stream(path));
                let stdout = std::io::stdout();
                let mut lines = std::io::BufWriter::new(stdout.lock());
                while let Some(f) = entries.next().await {
                    writeln!(lines, "{}", ls_line(&f?, *human))?;
                }
                lines.flush()?;
            }
        }
        FsCommand::Mkdir { paths } => {
            for p in paths {
                fs.mkdir(p, true).await?;
                println!("Successfully created directory {p}");
            }
        }
        FsCommand::Cat { path } => {
            let mut r = fs.open(path, OpenOptions::default()).await?;
            let mut buf = vec![0u8; 1 << 20];
            loop {
                let n = r
                    .read(&mut buf)
                    .await
                    .map_err(|e| anyhow::anyhow!("{path}: {e}"))?;
                if n == 0 {
                    break;
                }
                out.write_all(&buf[..n]).await?;
            }
            out.flush().await?;
        }
        FsCommand::CopyFromLocal {
            write_type,
            src,
            dst,
        } => {
            let wt = write_type.map(WriteType::from);
            let meta =
                std::fs::metadata(src).map_err(|e| anyhow::anyhow!("{}: {e}", src.display()))?;
            if meta.is_dir() {
                let mut stack = vec![(src.clone(), dst.clone())];
                while let Some((local, remote)) = stack.pop() {
                    fs.mkdir(&remote, true).await?;
                    let mut entries: Vec<_> =
                        std::fs::read_dir(&local)?.collect::<Result<_, _>>()?;
                    entries.sort_by_key(|e| e.file_name());
                    for e in entries {
                        let name = e.file_name().to_string_lossy().into_owned();
                        let target = join(&remote, &name);
                        if e.file_type()?.is_dir() {
                            stack.push((e.path(), target));
                        } else {
                            let n = copy_reader_to_strata(&fs, &e.path(), &target, wt).await?;
                            println!("Copied {} to {target} ({n} bytes)", e.path().display());
                        }
                    }
                }
            } else {
                let target = match fs.get_status(dst).await {
                    Ok(info) if info.is_dir() => join(
                        dst,
                        &src.file_name()
                            .map(|n| n.to_string_lossy().into_owned())
                            .unwrap_or_default(),
                    ),
                    _ => dst.clone(),
                };
                let n = copy_reader_to_strata(&fs, src, &target, wt).await?;
                println!("Copied {} to {target} ({n} bytes)", src.display());
            }
        }
        FsCommand::CopyToLocal { src, dst } => {
            let files = walk(&fs, src).await?;
            let root = fs.get_status(src).await?;
            for f in files {
                let rel = f.path.relative_to(&root.path).unwrap_or_default();
                let mut target = if root.is_dir() {
                    dst.join(&rel)
                } else if dst.is_dir() {
                    dst.join(root.name())
                } else {
                    dst.clone()
                };
                if root.is_dir() && rel.is_empty() {
                    target = dst.clone();
                }
                if f.is_dir() {
                    tokio::fs::create_dir_all(&target).await?;
                    continue;
                }
                if let Some(parent) = target.parent() {
                    tokio::fs::create_dir_all(parent).await?;
                }
                let mut r = fs.open(f.path.as_str(), OpenOptions::default()).await?;
                let tmp = target.with_extension("strata-part");
                let mut file = tokio::fs::File::create(&tmp)
                    .await
                    .map_err(|e| anyhow::anyhow!("{}: {e}", tmp.display()))?;
                let n = tokio::io::copy(&mut r, &mut file)
                    .await
                    .map_err(|e| anyhow::anyhow!("{}: {e}", f.path))?;
                file.sync_all().await?;
                tokio::fs::rename(&tmp, &target).await?;
                println!("Copied {} to {} ({n} bytes)", f.path, target.display());
            }
        }
        FsCommand::Cp {
            recursive,
            src,
            dst,
        } => {
            let root = fs.get_status(src).await?;
            if root.is_dir() && !recursive {
                anyhow::bail!("{src}: is a directory (use -R)");
            }
            for f in walk(&fs, src).await? {
                let rel = f.path.relative_to(&root.path).unwrap_or_default();
                let target = if rel.is_empty() {
                    dst.clone()
                } else {
                    join(dst, &rel)
                };
                if f.is_dir() {
                    fs.mkdir(&target, true).await?;
                } else {
                    let n = copy_strata_file(&fs, f.path.as_str(), &target).await?;
                    println!("Copied {} to {target} ({n} bytes)", f.path);
                }
            }
        }
        FsCommand::Rm { recursive, paths } => {
            for p in paths {
                fs.delete(p, *recursive).await?;
                println!("{p} has been removed");
            }
        }
        FsCommand::Mv { src, dst } => {
            let target = match fs.get_status(dst).await {
                Ok(info) if info.is_dir() => {
                    let name = strata_client::StrataPath::parse(src)?;
                    join(dst, name.name().unwrap_or_default())
                }
                _ => dst.clone(),
            };
            fs.rename(src, &target).await?;
            println!("Renamed {src} to {target}");
        }
        FsCommand::Stat {
            sync_interval,
            path,
        } => {
            let fs = with_sync(&fs, *sync_interval);
            let f = fs.get_status(path).await?;
            println!(
                "{}: {}",
                f.path,
                if f.is_dir() { "directory" } else { "file" }
            );
            println!("  id:            {}", f.id);
            println!("  length:        {}", f.length);
            if !f.is_dir() {
                println!("  block size:    {}", f.block_size);
                println!("  complete:      {}", f.complete);
                println!("  cached:        {}%", f.cached_percent);
            }
            println!("  persisted:     {}", f.persisted);
            println!("  mount point:   {}", f.mount_point);
            println!("  modified:      {} UTC", format_time(f.mtime_ms));
        }
        FsCommand::Du {
            summarize,
            human,
            path,
            ..
        } => {
            let files = walk(&fs, path).await?;
            let (mut total, mut cached) = (0u64, 0u64);
            println!("{:>14} {:>20}  Path", "File Size", "In Strata");
            for f in files.iter().filter(|f| !f.is_dir()) {
                let c = f.length * u64::from(f.cached_percent) / 100;
                total += f.length;
                cached += c;
                if !summarize {
                    println!(
                        "{:>14} {:>20}  {}",
                        size(f.length, *human),
                        format!("{} ({}%)", size(c, *human), f.cached_percent),
                        f.path
                    );
                }
            }
            if *summarize {
                // An empty tree counts as fully cached.
                let pct = (cached * 100).checked_div(total).unwrap_or(100);
                println!(
                    "{:>14} {:>20}  {path}",
                    size(total, *human),
                    format!("{} ({pct}%)", size(cached, *human))
                );
            }
        }
        FsCommand::Count { path } => {
            let files = walk(&fs, path).await?;
            let dirs = files.iter().filter(|f| f.is_dir()).count();
            let n = files.len() - dirs;
            let bytes: u64 = files.iter().map(|f| f.length).sum();
            println!(
                "{:>12} {:>12} {:>14}",
                "File Count", "Folder Count", "Folder Size"
            );
            println!("{n:>12} {dirs:>12} {bytes:>14}");
        }
        FsCommand::Touch { path } => {
            let w = fs.create(path, CreateOptions::default()).await?;
            w.close().await?;
            println!("{path} has been created");
        }
        FsCommand::Head { bytes, path } => {
            let r = fs.open(path, OpenOptions::default()).await?;
            let data = r.read_at(0, (*bytes).min(r.len()) as usize).await?;
            out.write_all(&data).await?;
            out.flush().await?;
        }
        FsCommand::Tail { bytes, path } => {
            let mut r = fs.open(path, OpenOptions::default()).await?;
            let start = r.len().saturating_sub(*bytes);
            r.seek(std::io::SeekFrom::Start(start)).await?;
            let mut data = Vec::new();
            r.read_to_end(&mut data)
                .await
                .map_err(|e| anyhow::anyhow!("{path}: {e}"))?;
            out.write_all(&data).await?;
            out.flush().await?;
        }
        FsCommand::Test { flags, path } => {
            let info = match fs.get_status(path).await {
                Ok(i) => Some(i),
                Err(
                    strata_client::Error::NotFound { .. }
                    | strata_client::Error::NotADirectory { .. },
                ) => None,
                Err(e) => return Err(e.into()),
            };
            let yes = match info {
                None => false,
                Some(_) if flags.exists => true,
                Some(i) if flags.dir => i.is_dir(),
                Some(i) if flags.file => !i.is_dir(),
                Some(i) if flags.zero => !i.is_dir() && i.length == 0,
                Some(i) => {
                    if i.is_dir() {
                        !fs.list_page(path, "", 1).await?.entries.is_empty()
                    } else {
                        i.length > 0
                    }
                }
            };
            return Ok(if yes { 0 } else { 1 });
        }
        FsCommand::Mount {
            readonly,
            options,
            path,
            uri,
        } => match (path, uri) {
            (Some(p), Some(u)) => {
                let mut parsed = strata_client::MountOptions::new();
                for o in options {
                    let Some((k, v)) = o.split_once('=') else {
                        anyhow::bail!("--option {o:?}: expected KEY=VALUE");
                    };
                    if parsed.insert(k.to_string(), v.to_string()).is_some() {
                        anyhow::bail!("--option {k} is given twice");
                    }
                }
                fs.mount_with_options(p, u, *readonly, &parsed).await?;
                println!("Mounted {u} at {p}");
            }
            (None, None) => {
                if !options.is_empty() {
                    anyhow::bail!("--option needs PATH and URI");
                }
                for m in fs.mount_table().await? {
                    let ro = if m.read_only { " (readonly)" } else { "" };
                    let opts: Vec<String> = m
                        .options
                        .iter()
                        .map(|(k, v)| format!("{k}={}", shown_option(k, v)))
                        .collect();
                    let opts = if opts.is_empty() {
                        String::new()
                    } else {
                        format!("  [{}]", opts.join(", "))
                    };
                    println!("{}  on  {}{ro}{opts}", m.uri, m.path);
                }
            }
            _ => anyhow::bail!("mount takes both PATH and URI, or neither to list the mounts"),
        },
        FsCommand::Unmount { path } => {
            fs.unmount(path).await?;
            println!("Unmounted {path}");
        }
        FsCommand::Load {
            sync_interval,
            path,
        } => {
            let fs = with_sync(&fs, *sync_interval);
            let mut sink = vec![0u8; 1 << 20];
            for f in walk(&fs, path).await?.into_iter().filter(|f| !f.is_dir()) {
                if f.cached_percent == 100 {
                    println!("{} is already fully loaded", f.path);
                    continue;
                }
                let mut r = fs
                    .open(
                        f.path.as_str(),
                        OpenOptions {
                            read_type: Some(ReadType::Cache),
                        },
                    )
                    .await?;
                while r
                    .read(&mut sink)
                    .await
                    .map_err(|e| anyhow::anyhow!("{}: {e}", f.path))?
                    > 0
                {}
                println!("{} loaded", f.path);
            }
        }
        FsCommand::Free { path } => {
            let n = fs.free(path).await?;
            println!("{path} was successfully freed from Strata space ({n} cached blocks dropped)");
        }
        FsCommand::Location { path } => {
            let fb = fs.file_blocks(path).await?;
            println!(
                "{} with file id {} has the following locations",
                fb.info.path, fb.info.id
            );
            for b in fb.blocks {
                let ws: Vec<String> = b.workers.iter().map(|w| w.rpc_address.clone()).collect();
                let on = if ws.is_empty() {
                    "not cached".to_string()
                } else {
                    ws.join(", ")
                };
                println!(
                    "  block {} offset {} length {}: {on}",
                    b.block_id, b.offset, b.length
                );
            }
            if let Some(u) = fb.ufs {
                println!(
                    "  under-store: {}/{}",
                    u.mount_uri.trim_end_matches('/'),
                    u.relative()
                );
            }
        }
    }
    Ok(0)
}

/// An option's value as `fs mount` lists it: masked when its name says it is a
/// secret. No backend takes secrets as options today; this keeps one that a
/// future backend might from ever being printed.
fn shown_option<'a>(key: &str, value: &'a str) -> &'a str {
    let k = key.to_ascii_lowercase();
    if ["secret", "password", "token", "credential", "access_key"]
        .iter()
        .any(|w| k.contains(w))
    {
        "****"
    } else {
        value
    }
}

/// `fs`, asking for `interval` when one was given.
fn with_sync(fs: &FileSystem, interval: Option<SyncInterval>) -> FileSystem {
    match interval {
        Some(i) => fs.with_sync_interval(i),
        None => fs.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_format_as_utc() {
        assert_eq!(format_time(0), "1970-01-01 00:00:00");
        assert_eq!(format_time(951_782_400_000), "2000-02-29 00:00:00");
        assert_eq!(format_time(1_700_000_000_123), "2023-11-14 22:13:20");
    }
}
