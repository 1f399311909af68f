//! Property tests of everything Strata decodes from outside its own process: namespace
//! and under-store paths, sizes and durations, the site configuration (file and
//! overrides), every request and response converted from the wire, and the errors a
//! peer sends in a gRPC status.
//!
//! Each property states what an accepted value guarantees, checked here against a
//! small model written apart from the decoder; no input may panic. Strategies mix
//! plausible values (so that accepted cases are exercised, which
//! `strategies_produce_accepted_and_refused_values` checks) with hostile ones: 0 and
//! `u64::MAX`, lengths at and just past each limit, `.`/`..`/empty names, NUL and
//! control characters, unknown enum numbers, deep nesting.
//!
//! `PROPTEST_CASES` scales every property; the default keeps the suite quick. A long
//! run: `PROPTEST_CASES=200000 cargo nextest run -p strata-common --test decoders`.

use proptest::collection::vec;
use proptest::prelude::*;
use proptest::strategy::ValueTree;
use proptest::test_runner::{Config, TestRunner};
use std::time::{Duration, Instant};
use strata_common::config::{LoadOptions, SiteConfig, MAX_DURATION};
use strata_common::ids::{
    BlockId, MAX_BLOCKS_PER_FILE, MAX_BLOCK_SIZE, MAX_FILE_ID, MIN_BLOCK_SIZE,
};
use strata_common::path::{validate_name, StrataPath, MAX_NAME_BYTES, MAX_PATH_BYTES};
use strata_common::proto;
use strata_common::types::{
    split_relative, BlockLocation, CreateFile, FileBlocks, FileInfo, FileKind, MountPointInfo,
    ReadBlock, ReadType, UfsFingerprint, UfsLocation, WorkerAddress, WriteFileHeader, WriteType,
    MAX_FINGERPRINT_VERSION_BYTES, MAX_MOUNT_OPTIONS, MAX_MOUNT_OPTION_KEY, MAX_MOUNT_OPTION_VALUE,
};
use strata_common::units::{format_bytes, ByteSize, HumanDuration};
use strata_common::Error;

/// The environment's case count (`PROPTEST_CASES`), no failure files: a failure found
/// here is pinned by a plain regression test beside the decoder instead.
fn config() -> Config {
    Config {
        failure_persistence: None,
        ..Config::default()
    }
}

// ---------------------------------------------------------------------------------
// Shared strategies
// ---------------------------------------------------------------------------------

/// One path component: mostly good names, and every kind of bad one.
fn name() -> impl Strategy<Value = String> {
    prop_oneof![
        6 => "[a-z0-9_-]{1,8}",
        1 => Just(".".to_string()),
        1 => Just("..".to_string()),
        1 => Just(String::new()),
        1 => "\\PC{1,6}",
        1 => "[a\\x00-\\x1f/.\\x7f]{1,4}",
        1 => (MAX_NAME_BYTES - 2..=MAX_NAME_BYTES + 2).prop_map(|n| "n".repeat(n)),
        // Two-byte characters around the byte limit: 252 to 258 bytes.
        1 => (126usize..=129).prop_map(|n| "é".repeat(n)),
        1 => any::<String>(),
    ]
}

/// A path of exactly `len` bytes made of `/` and names of at most 255 bytes; it may
/// end with `/`.
fn path_of_len(len: usize) -> String {
    let mut s = String::with_capacity(len);
    while s.len() < len {
        s.push('/');
        let n = (len - s.len()).min(MAX_NAME_BYTES);
        s.push_str(&"x".repeat(n));
    }
    s
}

/// A raw path as a user or a peer might send it.
fn raw_path() -> impl Strategy<Value = String> {
    prop_oneof![
        6 => (vec(name(), 0..7), any::<bool>(), any::<bool>()).prop_map(|(names, lead, trail)| {
            let mut s = names.join("/");
            if lead {
                s.insert(0, '/');
            }
            if trail {
                s.push('/');
            }
            s
        }),
        1 => (MAX_PATH_BYTES - 3..=MAX_PATH_BYTES + 3).prop_map(path_of_len),
        1 => "[/a.\\x00]{0,10}",
        1 => any::<String>(),
    ]
}

/// A valid path, short names from a tiny alphabet (so that prefixes are common) or
/// long ones (so that the length limit is near).
fn valid_path() -> impl Strategy<Value = StrataPath> {
    prop_oneof![
        3 => vec("[ab]{1,2}", 0..5).prop_map(|names| format!("/{}", names.join("/"))),
        1 => vec("[a-z]{1,3}|[xy]{200,255}", 0..20).prop_map(|names| format!("/{}", names.join("/"))),
        1 => (MAX_PATH_BYTES - 300..=MAX_PATH_BYTES).prop_map(path_of_len),
    ]
    .prop_filter_map("not a valid path", |raw| StrataPath::parse(&raw).ok())
}

/// A u64 field: the edges and the neighbourhood of every limit a decoder checks.
fn u64_field() -> impl Strategy<Value = u64> {
    prop_oneof![
        Just(0),
        Just(1),
        Just(u64::MAX),
        Just(u64::MAX - 1),
        0..10_000u64,
        MIN_BLOCK_SIZE - 1..=MIN_BLOCK_SIZE + 1,
        MAX_BLOCK_SIZE - 1..=MAX_BLOCK_SIZE + 1,
        MAX_FILE_ID - 1..=MAX_FILE_ID + 1,
        MAX_BLOCKS_PER_FILE - 1..=MAX_BLOCKS_PER_FILE + 1,
        any::<u64>(),
    ]
}

/// An enum field: the known numbers, 0 (unset) and anything else.
fn enum_field() -> impl Strategy<Value = i32> {
    prop_oneof![3 => 0..5i32, 1 => any::<i32>()]
}

fn cluster_id_field() -> impl Strategy<Value = String> {
    prop_oneof![
        6 => "[a-f0-9-]{1,36}",
        1 => Just(String::new()),
        1 => (127usize..=129).prop_map(|n| "c".repeat(n)),
        1 => any::<String>(),
    ]
}

/// A relative under-store path: mostly good, sometimes with bad names, leading or
/// trailing `/`, or around the length limit.
fn relative_path() -> impl Strategy<Value = String> {
    prop_oneof![
        6 => vec("[a-z0-9.]{1,6}", 0..4).prop_map(|v| v.join("/")),
        2 => vec(name(), 0..5).prop_map(|v| v.join("/")),
        1 => (MAX_PATH_BYTES - 2..=MAX_PATH_BYTES + 2)
            .prop_map(|len| path_of_len(len + 1)[1..].to_string()),
        1 => any::<String>(),
    ]
}

fn ufs_location() -> impl Strategy<Value = proto::UfsLocation> {
    (
        prop_oneof![
            6 => Just("file:///data/lake".to_string()),
            1 => Just(String::new()),
            1 => any::<String>(),
        ],
        relative_path(),
    )
        .prop_map(|(mount_uri, path)| proto::UfsLocation { mount_uri, path })
}

fn fingerprint(length: impl Strategy<Value = u64>) -> impl Strategy<Value = proto::UfsFingerprint> {
    (
        length,
        prop_oneof![
            6 => "[0-9a-f:]{0,24}",
            1 => (MAX_FINGERPRINT_VERSION_BYTES - 1..=MAX_FINGERPRINT_VERSION_BYTES + 1)
                .prop_map(|n| "v".repeat(n)),
            1 => any::<String>(),
        ],
    )
        .prop_map(|(length, version)| proto::UfsFingerprint { length, version })
}

fn worker_address() -> impl Strategy<Value = proto::WorkerAddress> {
    (
        u64_field(),
        "[a-z]{0,8}",
        prop_oneof![4 => Just("10.0.0.7:29999".to_string()), 1 => Just(String::new()), 1 => any::<String>()],
    )
        .prop_map(|(worker_id, host, rpc_address)| proto::WorkerAddress {
            worker_id,
            host,
            rpc_address,
        })
}

fn file_info() -> impl Strategy<Value = proto::FileInfo> {
    (
        (u64_field(), raw_path(), any::<String>(), enum_field()),
        (u64_field(), u64_field(), any::<bool>(), any::<bool>()),
        (
            any::<i64>(),
            any::<bool>(),
            prop_oneof![0..=101u32, any::<u32>()],
        ),
    )
        .prop_map(
            |(
                (id, path, name, kind),
                (length, block_size, complete, persisted),
                (mtime_ms, mount_point, cached_percent),
            )| proto::FileInfo {
                id,
                path,
                name,
                kind,
                length,
                block_size,
                complete,
                persisted,
                mtime_ms,
                mount_point,
                cached_percent,
            },
        )
}

/// Checks that `decode(encode(v)) == v` for a value a decoder accepted.
fn round_trips<P, T>(v: &T) -> Result<(), TestCaseError>
where
    T: Clone + PartialEq + std::fmt::Debug + Into<P> + TryFrom<P, Error = Error>,
{
    let again = T::try_from(v.clone().into());
    prop_assert_eq!(
        again.as_ref(),
        Ok(v),
        "re-encoding an accepted value changed it"
    );
    Ok(())
}

// ---------------------------------------------------------------------------------
// Paths
// ---------------------------------------------------------------------------------

/// What `validate_name` promises, spelled out.
fn model_name_ok(name: &str) -> bool {
    !name.is_empty()
        && name != "."
        && name != ".."
        && !name.contains('/')
        && !name.contains('\0')
        && name.len() <= MAX_NAME_BYTES
}

/// What `StrataPath::parse` promises: the normal form, or refusal.
fn model_parse(raw: &str) -> Option<String> {
    if raw == "/" {
        return Some(raw.to_string());
    }
    let body = raw.strip_prefix('/')?;
    let body = body.strip_suffix('/').unwrap_or(body);
    (body.len() < MAX_PATH_BYTES && body.split('/').all(model_name_ok)).then(|| format!("/{body}"))
}

proptest! {
    #![proptest_config(config())]

    /// A path is accepted exactly when it is absolute, within the length limit (one
    /// trailing `/` aside) and made of valid names; what is accepted is normalised and
    /// parses back to itself.
    #[test]
    fn paths_parse_to_their_normal_form_or_not_at_all(raw in raw_path()) {
        let parsed = StrataPath::parse(&raw);
        prop_assert_eq!(parsed.as_ref().ok().map(|p| p.as_str().to_string()), model_parse(&raw));
        match parsed {
            Ok(p) => {
                let s = p.as_str();
                prop_assert!(s.len() <= MAX_PATH_BYTES);
                prop_assert_eq!(StrataPath::parse(s).ok(), Some(p.clone()));
                prop_assert_eq!(p.depth(), p.components().count());
                prop_assert!(p.components().all(model_name_ok));
                prop_assert_eq!(p.is_root(), p.depth() == 0);
                if !p.is_root() {
                    prop_assert_eq!(StrataPath::parse(&format!("{s}/")).ok(), Some(p.clone()));
                    prop_assert_eq!(p.name(), p.components().last());
                }
            }
            Err(e) => prop_assert!(matches!(e, Error::InvalidPath { .. }), "{:?}", e),
        }
    }

    #[test]
    fn names_are_valid_exactly_by_the_documented_rules(n in name()) {
        prop_assert_eq!(validate_name(&n).is_ok(), model_name_ok(&n));
    }

    /// `join` gives the path `parse` would give for the longer string, and `parent`,
    /// `name`, `relative_to` and `starts_with` undo it.
    #[test]
    fn join_adds_one_component_that_parent_and_relative_to_undo(
        p in valid_path(),
        n in name(),
    ) {
        let joined = p.join(&n);
        let spelled = if p.is_root() { format!("/{n}") } else { format!("{p}/{n}") };
        let expected = model_name_ok(&n) && spelled.len() <= MAX_PATH_BYTES;
        prop_assert_eq!(joined.is_ok(), expected, "{:?}", joined);
        match joined {
            Ok(j) => {
                prop_assert_eq!(j.as_str(), spelled.as_str());
                prop_assert_eq!(StrataPath::parse(j.as_str()).ok(), Some(j.clone()));
                prop_assert_eq!(j.parent(), Some(p.clone()));
                prop_assert_eq!(j.name(), Some(n.as_str()));
                prop_assert_eq!(j.relative_to(&p), Some(n.clone()));
                prop_assert_eq!(j.depth(), p.depth() + 1);
                prop_assert!(j.starts_with(&p));
                prop_assert!(!p.starts_with(&j));
            }
            Err(e) => prop_assert!(matches!(e, Error::InvalidPath { .. }), "{:?}", e),
        }
    }

    /// `starts_with` and `relative_to` follow whole components (`/ab` is not under
    /// `/a`), and joining the relative part back onto the prefix gives the path.
    #[test]
    fn relative_to_follows_components(a in valid_path(), b in valid_path()) {
        let (ca, cb): (Vec<&str>, Vec<&str>) = (a.components().collect(), b.components().collect());
        let under = cb.starts_with(&ca);
        prop_assert_eq!(b.starts_with(&a), under);
        let rel = b.relative_to(&a);
        prop_assert_eq!(rel.is_some(), under);
        if let Some(rel) = rel {
            prop_assert_eq!(rel.is_empty(), a == b);
            let mut back = a.clone();
            for c in split_relative(&rel).unwrap() {
                back = back.join(&c).unwrap();
            }
            prop_assert_eq!(back, b);
        }
    }

    /// `parent` climbs one component at a time, each a prefix, to the root.
    #[test]
    fn parent_climbs_to_the_root(p in valid_path()) {
        let mut cur = p.clone();
        for d in (0..p.depth()).rev() {
            let up = cur.parent().unwrap();
            prop_assert_eq!(up.depth(), d);
            prop_assert!(cur.starts_with(&up) && p.starts_with(&up));
            cur = up;
        }
        prop_assert!(cur.is_root());
        prop_assert_eq!(cur.parent(), None);
    }

    /// An under-store path is accepted exactly when every name is valid and it is no
    /// longer than a namespace path; every namespace path maps to one.
    #[test]
    fn under_store_paths_are_valid_names_within_the_limit(rel in relative_path(), p in valid_path()) {
        let model = (rel.is_empty() || (rel.len() < MAX_PATH_BYTES && rel.split('/').all(model_name_ok)))
            .then(|| if rel.is_empty() { Vec::new() } else { rel.split('/').map(String::from).collect() });
        let split = split_relative(&rel);
        prop_assert_eq!(split.as_ref().ok(), model.as_ref());
        if let Ok(parts) = split {
            prop_assert_eq!(parts.join("/"), rel.clone());
            let loc = UfsLocation::new("file:///x", &rel).unwrap();
            prop_assert_eq!(loc.relative(), rel);
        }
        let below_root = p.relative_to(&StrataPath::root()).unwrap();
        prop_assert_eq!(split_relative(&below_root).unwrap(), p.components().collect::<Vec<_>>());
    }
}

// ---------------------------------------------------------------------------------
// Sizes and durations
// ---------------------------------------------------------------------------------

fn size_unit(unit: &str) -> Option<u128> {
    Some(match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kb" => 1_000,
        "kib" => 1 << 10,
        "m" | "mb" => 1_000_000,
        "mib" => 1 << 20,
        "g" | "gb" => 1_000_000_000,
        "gib" => 1 << 30,
        "t" | "tb" => 1_000_000_000_000,
        "tib" => 1 << 40,
        _ => return None,
    })
}

/// The exact number of bytes `text` means, rounded half up, in 128-bit arithmetic:
/// `Some(None)` when it is well formed but past `u64::MAX`. Needs at most 25 digits
/// before the point and 20 after.
fn model_size(text: &str) -> Option<Option<u64>> {
    let t = text.trim();
    let split = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let mult = size_unit(unit)?;
    let (int, frac) = num.split_once('.').unwrap_or((num, ""));
    if (int.is_empty() && frac.is_empty()) || frac.contains('.') {
        return None;
    }
    assert!(
        int.len() <= 25 && frac.len() <= 20,
        "model needs a shorter number"
    );
    let int: u128 = if int.is_empty() {
        0
    } else {
        int.parse().unwrap()
    };
    let scale = 10u128.pow(frac.len() as u32);
    let frac: u128 = if frac.is_empty() {
        0
    } else {
        frac.parse().unwrap()
    };
    let value = int * mult + (2 * frac * mult + scale) / (2 * scale);
    Some(u64::try_from(value).ok())
}

fn size_text() -> impl Strategy<Value = String> {
    let unit = prop_oneof![
        Just(""),
        Just("B"),
        Just("k"),
        Just("KB"),
        Just("KiB"),
        Just("kib"),
        Just("MB"),
        Just("MiB"),
        Just("G"),
        Just("GiB"),
        Just("TB"),
        Just("TiB"),
        Just("PiB"),
        Just("e400"),
        Just("XB"),
        Just("ib"),
    ];
    let number = prop_oneof![
        4 => "[0-9]{1,6}",
        2 => "[0-9]{0,6}\\.[0-9]{0,6}",
        1 => "[0-9]{15,25}(\\.[0-9]{1,20})?",
        1 => Just("18446744073709551615".to_string()),
        1 => Just("18446744073709551615.5".to_string()),
        1 => Just("16777216".to_string()),
        1 => Just("16777215.999999999999".to_string()),
        1 => "[0-9.]{1,4}",
    ];
    (
        number,
        prop_oneof![Just(""), Just(" ")],
        unit,
        prop_oneof![Just(""), Just(" ")],
    )
        .prop_map(|(n, sep, u, pad)| format!("{pad}{n}{sep}{u}{pad}"))
}

fn duration_text() -> impl Strategy<Value = String> {
    let unit = prop_oneof![
        Just("ms"),
        Just("s"),
        Just("m"),
        Just("min"),
        Just("h"),
        Just("d"),
        Just(""),
        Just("S"),
        Just("us"),
    ];
    let number = prop_oneof![
        4 => "[0-9]{1,6}",
        1 => "[0-9]{15,25}",
        1 => Just("18446744073709551615".to_string()),
        1 => Just("5124095576030431".to_string()), // u64::MAX / 3600, hours that fit
        1 => Just("5124095576030432".to_string()), // one hour more
        1 => Just("307445734561825860".to_string()), // u64::MAX / 60 minutes that fit
        1 => Just("307445734561825861".to_string()),
        1 => "[0-9.+-]{1,4}",
    ];
    (number, prop_oneof![Just(""), Just(" ")], unit).prop_map(|(n, sep, u)| format!("{n}{sep}{u}"))
}

/// The duration `text` means, or `None` when it means none; `Some(None)` when well
/// formed but longer than a `Duration` holds in whole seconds.
fn model_duration(text: &str) -> Option<Option<Duration>> {
    let t = text.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    if num.is_empty() {
        return None;
    }
    let digits = num.trim_start_matches('0');
    if digits.len() > 20 {
        return None; // past u64
    }
    let n: u128 = if digits.is_empty() {
        0
    } else {
        digits.parse().unwrap()
    };
    let (per_unit, millis) = match unit.trim() {
        "ms" => (1, true),
        "s" => (1, false),
        "m" | "min" => (60, false),
        "h" => (3600, false),
        _ => return None,
    };
    // A number past u64 is no duration at all: the same refusal either way.
    let n = u64::try_from(n).ok()?;
    Some(if millis {
        Some(Duration::from_millis(n))
    } else {
        u64::try_from(u128::from(n) * per_unit)
            .ok()
            .map(Duration::from_secs)
    })
}

proptest! {
    #![proptest_config(config())]

    /// A size means the exact number of bytes written (rounded half up), and one past
    /// `u64::MAX` is an error, never a wrapped or saturated value.
    #[test]
    fn sizes_parse_exactly_or_not_at_all(text in size_text()) {
        let parsed = text.parse::<ByteSize>().ok().map(ByteSize::bytes);
        let model = model_size(&text).flatten();
        prop_assert_eq!(parsed, model, "{:?}", text);
    }

    #[test]
    fn sizes_from_any_text_never_panic(text in any::<String>()) {
        let _ = text.parse::<ByteSize>();
        let _ = text.parse::<HumanDuration>();
    }

    /// Every size prints as text that parses back to it; the rounded human form
    /// (`1.50KiB`) is within half a percent of it.
    #[test]
    fn sizes_print_as_text_that_parses_back(
        n in prop_oneof![
            any::<u64>(),
            Just(u64::MAX),
            (0..1u64 << 24, 0..5u32).prop_map(|(k, e)| k << (10 * e)),
        ],
    ) {
        let text = ByteSize(n).to_string();
        prop_assert_eq!(text.parse::<ByteSize>(), Ok(ByteSize(n)), "{:?}", text);
        let human = format_bytes(n);
        match human.parse::<ByteSize>() {
            Ok(back) => prop_assert!(back.0.abs_diff(n) as f64 <= n as f64 * 0.005 + 1.0, "{:?}", human),
            // Rounded up past u64::MAX: "16777216TiB".
            Err(_) => prop_assert!(n > u64::MAX / 1000 * 995, "{:?}", human),
        }
    }

    /// A duration means exactly what it says, one too long to hold is an error, and
    /// every accepted duration prints as text that parses back to it.
    #[test]
    fn durations_parse_exactly_or_not_at_all(text in duration_text()) {
        let parsed = text.parse::<HumanDuration>();
        let model = model_duration(&text).flatten();
        prop_assert_eq!(parsed.as_ref().ok().map(|d| d.0), model, "{:?}", text);
        if let Ok(d) = parsed {
            prop_assert_eq!(d.to_string().parse::<HumanDuration>(), Ok(d));
        }
    }
}

// ---------------------------------------------------------------------------------
// Configuration
// ---------------------------------------------------------------------------------

/// What a loaded configuration promises (see `SiteConfig::validate`), re-checked.
fn check_config(cfg: &SiteConfig) -> Result<(), TestCaseError> {
    prop_assert!(!cfg.master_addresses.is_empty());
    for addr in &cfg.master_addresses {
        let (host, port) = addr.rsplit_once(':').unwrap();
        prop_assert!(!host.is_empty(), "{:?}", addr);
        prop_assert!(port.bytes().all(|b| b.is_ascii_digit()), "{:?}", addr);
        prop_assert!(matches!(port.parse::<u16>(), Ok(1..)), "{:?}", addr);
        // A client dials `http://{addr}`: that must name exactly this host and port.
        let uri = format!("http://{addr}").parse::<tonic::codegen::http::Uri>();
        let authority = uri.as_ref().ok().and_then(|u| u.authority());
        prop_assert_eq!(authority.map(|a| a.as_str()), Some(addr.as_str()));
        prop_assert_eq!(authority.and_then(|a| a.port_u16()), port.parse().ok());
        prop_assert_eq!(uri.as_ref().ok().map(|u| u.path()), Some("/"));
    }
    let (c, m, w) = (&cfg.client, &cfg.master, &cfg.worker);
    prop_assert!((4096..=4 << 30).contains(&c.block_size.0));
    prop_assert!(MIN_BLOCK_SIZE <= m.min_block_size.0);
    prop_assert!(m.min_block_size.0 <= m.max_block_size.0);
    prop_assert!(m.max_block_size.0 <= MAX_BLOCK_SIZE);
    prop_assert!((4096..=8 << 20).contains(&c.chunk_size.0));
    for d in [
        c.rpc_timeout,
        c.connect_timeout,
        c.keepalive_interval,
        c.data_timeout,
    ] {
        prop_assert!(d.0 >= Duration::from_millis(10));
    }
    prop_assert!(w.mem_quota.0 > 0);
    prop_assert!(!w.heartbeat_interval.0.is_zero());
    prop_assert!(m.worker_timeout.0 > w.heartbeat_interval.0);
    prop_assert!(m.write_lease.0 >= Duration::from_millis(100));
    prop_assert!(m.write_lease.0 <= Duration::from_secs(7 * 24 * 3600));
    prop_assert!(m.inode_cache_entries > 0);
    // Every duration can be added to a clock reading (timers, keepalive deadlines).
    for d in [
        c.rpc_timeout,
        c.connect_timeout,
        c.keepalive_interval,
        c.data_timeout,
        w.heartbeat_interval,
        m.worker_timeout,
        m.write_lease,
    ] {
        prop_assert!(d.0 <= MAX_DURATION);
        prop_assert!(Instant::now().checked_add(d.0 * 2).is_some());
    }
    Ok(())
}

const SECTIONS: [&str; 3] = ["master", "worker", "client"];
const TOP_KEYS: [&str; 2] = ["data_dir", "master_addresses"];
const MASTER_KEYS: [&str; 9] = [
    "bind_host",
    "rpc_port",
    "metastore_dir",
    "inode_cache_entries",
    "worker_timeout",
    "root_ufs",
    "min_block_size",
    "max_block_size",
    "write_lease",
];
const WORKER_KEYS: [&str; 6] = [
    "bind_host",
    "rpc_port",
    "hostname",
    "mem_dir",
    "mem_quota",
    "heartbeat_interval",
];
const CLIENT_KEYS: [&str; 8] = [
    "block_size",
    "write_type",
    "read_type",
    "chunk_size",
    "rpc_timeout",
    "connect_timeout",
    "keepalive_interval",
    "data_timeout",
];

/// A dotted key: mostly real ones, some junk, some far too deep.
fn config_key() -> impl Strategy<Value = String> {
    let section_key = |s: &'static str, keys: &'static [&'static str]| {
        proptest::sample::select(keys).prop_map(move |k| format!("{s}.{k}"))
    };
    prop_oneof![
        2 => proptest::sample::select(&TOP_KEYS[..]).prop_map(String::from),
        3 => section_key("master", &MASTER_KEYS),
        2 => section_key("worker", &WORKER_KEYS),
        3 => section_key("client", &CLIENT_KEYS),
        1 => proptest::sample::select(&SECTIONS[..]).prop_map(String::from),
        1 => "[a-z_.]{0,12}",
        1 => Just("worker.rpc_port.x".to_string()),
        1 => (1usize..20_000).prop_map(|n| vec!["a"; n].join(".")),
    ]
}

/// A real key with a value of its kind, as a flag would set it.
fn plausible_override() -> impl Strategy<Value = (String, String)> {
    use proptest::sample::select;
    const DURATIONS: [&str; 7] = [
        "client.rpc_timeout",
        "client.connect_timeout",
        "client.keepalive_interval",
        "client.data_timeout",
        "master.write_lease",
        "master.worker_timeout",
        "worker.heartbeat_interval",
    ];
    const SIZES: [&str; 5] = [
        "client.block_size",
        "client.chunk_size",
        "master.min_block_size",
        "master.max_block_size",
        "worker.mem_quota",
    ];
    const TEXTS: [&str; 6] = [
        "data_dir",
        "worker.mem_dir",
        "worker.hostname",
        "worker.bind_host",
        "master.metastore_dir",
        "master.root_ufs",
    ];
    prop_oneof![
        (select(&DURATIONS[..]), "[1-9][0-9]{1,3}(ms|s)|[1-9](m|h)"),
        (
            select(&SIZES[..]),
            "(4|16|64|512)(KiB|MiB)|[1-4]GiB|[0-9]{4,7}"
        ),
        (
            select(&["master.rpc_port", "worker.rpc_port"][..]),
            "[0-9]{1,5}"
        ),
        (
            select(&["client.write_type"][..]),
            "MUST_CACHE|CACHE_THROUGH|through"
        ),
        (select(&["client.read_type"][..]), "CACHE|no-cache"),
        (
            select(&["master_addresses"][..]),
            "(127\\.0\\.0\\.1|localhost|my_host|\\[::1\\]|\\[fe80::1\\]):[0-9]{1,5}(,h:1)?"
        ),
        (select(&TEXTS[..]), "[a-z/.]{0,10}"),
        (select(&["master.inode_cache_entries"][..]), "[0-9]{1,7}"),
    ]
    .prop_map(|(k, v)| (k.to_string(), v))
}

/// Overrides: mostly real keys with values of their kind, some anything at all.
fn overrides() -> impl Strategy<Value = Vec<(String, String)>> {
    vec(
        prop_oneof![3 => plausible_override(), 1 => (config_key(), config_value())],
        0..6,
    )
}

/// A value as a flag or an environment variable spells it: TOML when it parses as
/// TOML, else a string.
fn config_value() -> impl Strategy<Value = String> {
    prop_oneof![
        3 => "[0-9]{1,4}(ms|s|m|h)",
        1 => "[0-9]{1,20}(m|h)",
        3 => "[0-9]{1,4}(KiB|MiB|GiB|B)",
        2 => "[0-9]{1,6}",
        1 => Just("\"18446744073709551615h\"".to_string()),
        1 => Just("99999999999999999999TiB".to_string()),
        1 => Just("99999999999999999999".to_string()),
        1 => Just("-1".to_string()),
        1 => Just("1e400".to_string()),
        1 => Just("nan".to_string()),
        1 => Just("true".to_string()),
        1 => Just("[\"a:1\", \"b:2\"]".to_string()),
        1 => Just("{a = 1}".to_string()),
        1 => "(127.0.0.1|host|a/b|u@h|h h|\\[::1\\]|\\[\\]|)(:[0-9+-]{0,6})?(,host:1)?",
        1 => "(CACHE|NO_CACHE|MUST_CACHE|THROUGH|cache-through)",
        1 => Just(format!("{}1{}", "[".repeat(200), "]".repeat(200))),
        1 => any::<String>(),
    ]
}

/// A TOML value of any type, for a structured document.
fn toml_value() -> impl Strategy<Value = toml::Value> {
    prop_oneof![
        4 => config_value().prop_map(toml::Value::String),
        2 => any::<i64>().prop_map(toml::Value::Integer),
        2 => (0..70_000i64).prop_map(toml::Value::Integer),
        1 => any::<f64>().prop_map(toml::Value::Float),
        1 => any::<bool>().prop_map(toml::Value::Boolean),
        1 => vec("[a-z0-9:.]{0,12}", 0..3)
            .prop_map(|v| toml::Value::Array(v.into_iter().map(toml::Value::String).collect())),
        1 => Just(toml::Value::Table(toml::Table::new())),
    ]
}

/// A site file: sections and keys (mostly real) with values of every type, printed
/// as TOML; or any text at all.
fn toml_document() -> impl Strategy<Value = String> {
    let entry = (
        config_key().prop_filter("shallow", |k| k.len() < 64),
        toml_value(),
    );
    prop_oneof![
        6 => vec(entry, 0..6).prop_map(|entries| {
            let mut table = toml::Table::new();
            for (key, value) in entries {
                let mut cur = &mut table;
                let mut parts: Vec<&str> = key.split('.').collect();
                let last = parts.pop().unwrap();
                for p in parts {
                    let e = cur.entry(p).or_insert_with(|| toml::Value::Table(toml::Table::new()));
                    match e {
                        toml::Value::Table(t) => cur = t,
                        _ => return String::from("# conflicting keys\n"),
                    }
                }
                cur.insert(last.to_string(), value);
            }
            toml::to_string(&table).unwrap_or_default()
        }),
        1 => "[\\[\\]{}=a-z.\"0-9\\n ]{0,40}",
        1 => any::<String>(),
    ]
}

/// Loads `doc` as the site file (never `$STRATA_CONF`), then `overrides`; no
/// environment.
fn load_with(
    doc: &str,
    overrides: Vec<(String, String)>,
) -> Result<SiteConfig, strata_common::config::ConfigError> {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("strata-site.toml");
    std::fs::write(&file, doc).unwrap();
    SiteConfig::load(&LoadOptions {
        file: Some(file),
        use_env: false,
        overrides,
    })
}

proptest! {
    #![proptest_config(config())]

    /// Any site file loads or fails with a config error; what loads keeps every
    /// promise of `validate`.
    #[test]
    fn any_site_file_loads_valid_or_fails_cleanly(doc in toml_document()) {
        if let Ok(cfg) = SiteConfig::from_toml_str(&doc) {
            check_config(&cfg)?;
        }
    }

    /// Any overrides on any site file load or fail with a config error naming a key;
    /// what loads keeps every promise of `validate`.
    #[test]
    fn any_overrides_load_valid_or_fail_cleanly(
        doc in toml_document(),
        overrides in overrides(),
    ) {
        match load_with(&doc, overrides) {
            Ok(cfg) => check_config(&cfg)?,
            Err(e) => prop_assert!(!e.key.is_empty(), "{}", e),
        }
    }
}

// ---------------------------------------------------------------------------------
// Wire requests and responses
// ---------------------------------------------------------------------------------

fn check_location(loc: &UfsLocation) -> Result<(), TestCaseError> {
    prop_assert!(!loc.mount_uri.is_empty());
    prop_assert!(loc.components.iter().all(|c| model_name_ok(c)));
    prop_assert!(loc.relative().len() < MAX_PATH_BYTES);
    Ok(())
}

fn check_cluster_id(id: &str) -> Result<(), TestCaseError> {
    prop_assert!((1..=128).contains(&id.len()), "{:?}", id);
    Ok(())
}

/// A consistent block list for a file, before any corruption.
fn blocks_of(id: u64, length: u64, block_size: u64) -> Vec<proto::BlockLocation> {
    let n = length.div_ceil(block_size.max(1));
    (0..n)
        .map(|i| proto::BlockLocation {
            block_id: (id << 24) | i,
            offset: i * block_size,
            length: (length - i * block_size).min(block_size),
            workers: vec![proto::WorkerAddress {
                worker_id: 1,
                host: "h".into(),
                rpc_address: "h:1".into(),
            }],
        })
        .collect()
}

/// One way a block list answer can be wrong.
#[derive(Debug, Clone)]
enum Corruption {
    None,
    DropBlock(usize),
    DuplicateBlock(usize),
    SetOffset(usize, u64),
    SetLength(usize, u64),
    SetBlockId(usize, u64),
    SetFileLength(u64),
    SetBlockSize(u64),
    SetKind(i32),
    SetFileId(u64),
    SetFingerprintLength(u64),
    DropUfs,
    ExtraBlock(proto::BlockLocation),
}

fn corruption() -> impl Strategy<Value = Corruption> {
    prop_oneof![
        12 => Just(Corruption::None),
        1 => any::<usize>().prop_map(Corruption::DropBlock),
        1 => any::<usize>().prop_map(Corruption::DuplicateBlock),
        1 => (any::<usize>(), u64_field()).prop_map(|(i, v)| Corruption::SetOffset(i, v)),
        1 => (any::<usize>(), u64_field()).prop_map(|(i, v)| Corruption::SetLength(i, v)),
        1 => (any::<usize>(), u64_field()).prop_map(|(i, v)| Corruption::SetBlockId(i, v)),
        1 => u64_field().prop_map(Corruption::SetFileLength),
        1 => u64_field().prop_map(Corruption::SetBlockSize),
        1 => enum_field().prop_map(Corruption::SetKind),
        1 => u64_field().prop_map(Corruption::SetFileId),
        1 => u64_field().prop_map(Corruption::SetFingerprintLength),
        1 => Just(Corruption::DropUfs),
        1 => (u64_field(), u64_field(), u64_field(), vec(worker_address(), 0..2)).prop_map(
            |(block_id, offset, length, workers)| Corruption::ExtraBlock(proto::BlockLocation {
                block_id, offset, length, workers,
            })
        ),
    ]
}

/// A `GetFileBlocksResponse`: a consistent one for a file of a few blocks, then maybe
/// one corruption; or one made of hostile fields throughout.
fn file_blocks_response() -> impl Strategy<Value = proto::GetFileBlocksResponse> {
    let consistent = (
        prop_oneof![2..1000u64, MAX_FILE_ID - 1..=MAX_FILE_ID + 1, Just(0)],
        prop_oneof![
            Just(1u64),
            Just(4096),
            Just(1 << 20),
            MAX_BLOCK_SIZE..=MAX_BLOCK_SIZE + 1,
            Just(u64::MAX)
        ],
        0..6u64,
        prop_oneof![Just(0u64), Just(1), any::<u64>()],
        any::<bool>(),
        corruption(),
        cluster_id_field(),
    )
        .prop_filter_map(
            "length past u64",
            |(id, bs, full, rest, with_ufs, bad, cluster_id)| {
                let length = full.checked_mul(bs)?.checked_add(rest % bs)?;
                let mut r = proto::GetFileBlocksResponse {
                    info: Some(proto::FileInfo {
                        id,
                        path: "/dir/file".into(),
                        name: "file".into(),
                        kind: proto::FileKind::File as i32,
                        length,
                        block_size: bs,
                        complete: true,
                        persisted: with_ufs,
                        ..Default::default()
                    }),
                    blocks: blocks_of(id, length, bs),
                    ufs: with_ufs.then(|| proto::UfsLocation {
                        mount_uri: "file:///lake".into(),
                        path: "dir/file".into(),
                    }),
                    ufs_fingerprint: with_ufs.then(|| proto::UfsFingerprint {
                        length,
                        version: "1:2".into(),
                    }),
                    cluster_id,
                };
                let n = r.blocks.len().max(1);
                let info = r.info.as_mut().unwrap();
                match bad {
                    Corruption::None => {}
                    Corruption::DropBlock(i) => {
                        if !r.blocks.is_empty() {
                            r.blocks.remove(i % n);
                        }
                    }
                    Corruption::DuplicateBlock(i) => {
                        if let Some(b) = r.blocks.get(i % n).cloned() {
                            r.blocks.insert(i % n, b);
                        }
                    }
                    Corruption::SetOffset(i, v) => {
                        if let Some(b) = r.blocks.get_mut(i % n) {
                            b.offset = v;
                        }
                    }
                    Corruption::SetLength(i, v) => {
                        if let Some(b) = r.blocks.get_mut(i % n) {
                            b.length = v;
                        }
                    }
                    Corruption::SetBlockId(i, v) => {
                        if let Some(b) = r.blocks.get_mut(i % n) {
                            b.block_id = v;
                        }
                    }
                    Corruption::SetFileLength(v) => info.length = v,
                    Corruption::SetBlockSize(v) => info.block_size = v,
                    Corruption::SetKind(v) => info.kind = v,
                    Corruption::SetFileId(v) => info.id = v,
                    Corruption::SetFingerprintLength(v) => {
                        r.ufs_fingerprint = Some(proto::UfsFingerprint {
                            length: v,
                            version: String::new(),
                        })
                    }
                    Corruption::DropUfs => r.ufs = None,
                    Corruption::ExtraBlock(b) => r.blocks.push(b),
                }
                Some(r)
            },
        );
    let hostile = (
        proptest::option::of(file_info()),
        vec(
            (
                u64_field(),
                u64_field(),
                u64_field(),
                vec(worker_address(), 0..3),
            )
                .prop_map(|(block_id, offset, length, workers)| proto::BlockLocation {
                    block_id,
                    offset,
                    length,
                    workers,
                }),
            0..4,
        ),
        proptest::option::of(ufs_location()),
        proptest::option::of(fingerprint(u64_field())),
        cluster_id_field(),
    )
        .prop_map(|(info, blocks, ufs, ufs_fingerprint, cluster_id)| {
            proto::GetFileBlocksResponse {
                info,
                blocks,
                ufs,
                ufs_fingerprint,
                cluster_id,
            }
        });
    prop_oneof![4 => consistent, 1 => hostile]
}

/// A `ReadBlockRequest`: one that fits its block and file, perhaps with one field
/// replaced by a hostile value, or one of hostile fields throughout.
fn read_block_request() -> impl Strategy<Value = proto::ReadBlockRequest> {
    let plausible = (
        (
            any::<u64>(),
            1..=MAX_BLOCK_SIZE,
            0..(1u64 << 50),
            0..1000u64,
        ),
        (
            any::<u64>(),
            any::<u64>(),
            prop_oneof![Just(1), Just(2)],
            any::<bool>(),
        ),
        cluster_id_field(),
        proptest::option::of((0..7usize, u64_field())),
    )
        .prop_map(
            |(
                (block_id, block_length, block_start, slack),
                (a, b, read_type, with_source),
                cluster_id,
                twist,
            )| {
                let offset = a % block_length;
                let length = 1 + b % (block_length - offset);
                let mut r = proto::ReadBlockRequest {
                    block_id,
                    offset,
                    length,
                    read_type,
                    source: with_source.then(|| proto::UfsBlockSource {
                        location: Some(proto::UfsLocation {
                            mount_uri: "file:///lake".into(),
                            path: "a/b".into(),
                        }),
                        block_start,
                        block_length,
                        fingerprint: Some(proto::UfsFingerprint {
                            length: block_start + block_length + slack,
                            version: "v".into(),
                        }),
                    }),
                    cluster_id,
                };
                if let Some((field, v)) = twist {
                    let s = r.source.as_mut();
                    match field {
                        0 => r.offset = v,
                        1 => r.length = v,
                        2 => r.read_type = v as i32,
                        3 => s.into_iter().for_each(|s| s.block_start = v),
                        4 => s.into_iter().for_each(|s| s.block_length = v),
                        5 => s
                            .into_iter()
                            .for_each(|s| s.fingerprint.as_mut().unwrap().length = v),
                        _ => s.into_iter().for_each(|s| s.location = None),
                    }
                }
                r
            },
        );
    let hostile = (
        (u64_field(), u64_field(), u64_field(), enum_field()),
        proptest::option::of((
            proptest::option::of(ufs_location()),
            u64_field(),
            u64_field(),
            proptest::option::of(fingerprint(u64_field())),
        )),
        cluster_id_field(),
    )
        .prop_map(
            |((block_id, offset, length, read_type), source, cluster_id)| proto::ReadBlockRequest {
                block_id,
                offset,
                length,
                read_type,
                source: source.map(|(location, block_start, block_length, fingerprint)| {
                    proto::UfsBlockSource {
                        location,
                        block_start,
                        block_length,
                        fingerprint,
                    }
                }),
                cluster_id,
            },
        );
    prop_oneof![3 => plausible, 1 => hostile]
}

fn write_file_header() -> impl Strategy<Value = proto::WriteFileHeader> {
    (
        prop_oneof![3 => 2..1_000_000u64, 1 => u64_field()],
        prop_oneof![3 => MIN_BLOCK_SIZE..=MAX_BLOCK_SIZE, 1 => u64_field()],
        enum_field(),
        proptest::option::of(prop_oneof![
            3 => Just(proto::UfsLocation { mount_uri: "file:///lake".into(), path: "a/b".into() }),
            1 => ufs_location(),
        ]),
        any::<bool>(),
        cluster_id_field(),
    )
        .prop_map(|(file_id, block_size, write_type, ufs, sync, cluster_id)| {
            proto::WriteFileHeader {
                file_id,
                block_size,
                write_type,
                ufs,
                sync,
                cluster_id,
            }
        })
}

fn request_id() -> impl Strategy<Value = Option<proto::RequestId>> {
    proptest::option::of(
        (
            prop_oneof![3 => vec(any::<u8>(), 16), 1 => vec(any::<u8>(), 0..40)],
            u64_field(),
            u64_field(),
        )
            .prop_map(|(client, seq, answered_below)| proto::RequestId {
                client: client.into(),
                seq,
                answered_below,
            }),
    )
}

fn create_file_request() -> impl Strategy<Value = proto::CreateFileRequest> {
    (
        raw_path(),
        prop_oneof![3 => MIN_BLOCK_SIZE..=MAX_BLOCK_SIZE, 1 => u64_field()],
        any::<bool>(),
        enum_field(),
        request_id(),
    )
        .prop_map(|(path, block_size, recursive, write_type, request)| {
            proto::CreateFileRequest {
                path,
                block_size,
                recursive,
                write_type,
                request,
            }
        })
}

/// What an accepted block list guarantees a reader, checked block by block.
fn check_file_blocks(fb: &FileBlocks) -> Result<(), TestCaseError> {
    let info = &fb.info;
    prop_assert_eq!(info.kind, FileKind::File);
    prop_assert!(info.cached_percent <= 100);
    check_cluster_id(&fb.cluster_id)?;
    prop_assert!(fb.blocks.len() as u64 <= MAX_BLOCKS_PER_FILE);
    let mut end = 0u64;
    for (i, b) in fb.blocks.iter().enumerate() {
        prop_assert_eq!(b.offset, end, "blocks do not tile the file");
        prop_assert!(b.length >= 1 && b.length <= info.block_size);
        if i + 1 < fb.blocks.len() {
            prop_assert_eq!(b.length, info.block_size);
        }
        prop_assert_eq!(b.block_id.file(), info.id);
        prop_assert_eq!(b.block_id.index(), i as u64);
        prop_assert_eq!(BlockId::new(info.id, i as u64), Ok(b.block_id));
        prop_assert!(b.workers.iter().all(|w| !w.rpc_address.is_empty()));
        end = b.offset.checked_add(b.length).unwrap();
    }
    prop_assert_eq!(end, info.length, "blocks do not cover the file");
    if let Some(ufs) = &fb.ufs {
        check_location(ufs)?;
        prop_assert_eq!(fb.ufs_fingerprint.length, info.length);
    } else {
        prop_assert_eq!(&fb.ufs_fingerprint, &UfsFingerprint::default());
    }
    prop_assert!(fb.ufs_fingerprint.version.len() <= MAX_FINGERPRINT_VERSION_BYTES);
    Ok(())
}

fn check_read_block(r: &ReadBlock) -> Result<(), TestCaseError> {
    prop_assert!(r.length > 0);
    let end = r.offset.checked_add(r.length);
    prop_assert!(
        end.is_some(),
        "range past u64::MAX: {}+{}",
        r.offset,
        r.length
    );
    if let Some(s) = &r.source {
        check_location(&s.location)?;
        prop_assert!((1..=MAX_BLOCK_SIZE).contains(&s.block_length));
        let block_end = s.block_start.checked_add(s.block_length);
        prop_assert!(block_end.is_some_and(|e| e <= s.fingerprint.length));
        prop_assert!(end.unwrap() <= s.block_length);
        prop_assert!(s.fingerprint.version.len() <= MAX_FINGERPRINT_VERSION_BYTES);
    }
    check_cluster_id(&r.cluster_id)
}

fn check_write_header(h: &WriteFileHeader) -> Result<(), TestCaseError> {
    prop_assert!((MIN_BLOCK_SIZE..=MAX_BLOCK_SIZE).contains(&h.block_size));
    prop_assert_eq!(
        h.ufs.is_some(),
        h.write_type.persists(),
        "ufs present exactly when persisted"
    );
    if let Some(u) = &h.ufs {
        check_location(u)?;
    }
    // The file's blocks can be named: block ids hold 40 bits of file id; 0 is no file.
    prop_assert!(
        (1..=MAX_FILE_ID).contains(&h.file_id.0),
        "file id {}",
        h.file_id
    );
    prop_assert!(BlockId::new(h.file_id, 0).is_ok());
    check_cluster_id(&h.cluster_id)
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn file_blocks_accepted_tile_their_file(p in file_blocks_response()) {
        if let Ok(fb) = FileBlocks::try_from(p) {
            check_file_blocks(&fb)?;
            round_trips::<proto::GetFileBlocksResponse, _>(&fb)?;
        }
    }

    #[test]
    fn read_block_requests_accepted_stay_inside_block_and_file(p in read_block_request()) {
        if let Ok(r) = ReadBlock::try_from(p) {
            check_read_block(&r)?;
            round_trips::<proto::ReadBlockRequest, _>(&r)?;
        }
    }

    #[test]
    fn write_headers_accepted_name_a_file_a_size_and_a_place(p in write_file_header()) {
        if let Ok(h) = WriteFileHeader::try_from(p) {
            check_write_header(&h)?;
            round_trips::<proto::WriteFileHeader, _>(&h)?;
        }
    }

    #[test]
    fn create_file_requests_accepted_have_a_path_a_size_and_a_mode(p in create_file_request()) {
        let raw = p.path.clone();
        if let Ok(c) = CreateFile::try_from(p) {
            prop_assert_eq!(Some(c.path.as_str().to_string()), model_parse(&raw));
            prop_assert!((MIN_BLOCK_SIZE..=MAX_BLOCK_SIZE).contains(&c.block_size));
            if let Some(r) = c.request {
                prop_assert!(r.seq >= 1 && r.answered_below <= r.seq);
                round_trips::<proto::RequestId, _>(&r)?;
            }
        }
    }

    #[test]
    fn file_infos_accepted_are_valid_and_round_trip(p in file_info()) {
        let raw = p.path.clone();
        if let Ok(f) = FileInfo::try_from(p) {
            prop_assert_eq!(Some(f.path.as_str().to_string()), model_parse(&raw));
            prop_assert!(f.cached_percent <= 100);
            round_trips::<proto::FileInfo, _>(&f)?;
        }
    }

    #[test]
    fn small_messages_accepted_are_valid_and_round_trip(
        w in worker_address(),
        loc in ufs_location(),
        fp in fingerprint(u64_field()),
        b in (u64_field(), u64_field(), u64_field(), vec(worker_address(), 0..3)),
        m in (raw_path(), prop_oneof![3 => Just("file:///x".to_string()), 1 => any::<String>()], any::<bool>(), u64_field()),
        options in proptest::collection::btree_map(
            prop_oneof![3 => "[a-z0-9._-]{1,64}", 1 => any::<String>()],
            prop_oneof![3 => "[ -~]{0,64}", 1 => "x{1020,1030}"],
            0..40,
        ),
    ) {
        if let Ok(w) = WorkerAddress::try_from(w) {
            prop_assert!(!w.rpc_address.is_empty());
            round_trips::<proto::WorkerAddress, _>(&w)?;
        }
        if let Ok(loc) = UfsLocation::try_from(loc) {
            check_location(&loc)?;
            round_trips::<proto::UfsLocation, _>(&loc)?;
        }
        if let Ok(fp) = UfsFingerprint::try_from(fp) {
            prop_assert!(fp.version.len() <= MAX_FINGERPRINT_VERSION_BYTES);
            round_trips::<proto::UfsFingerprint, _>(&fp)?;
        }
        let (block_id, offset, length, workers) = b;
        if let Ok(b) = BlockLocation::try_from(proto::BlockLocation { block_id, offset, length, workers }) {
            round_trips::<proto::BlockLocation, _>(&b)?;
        }
        let (path, uri, read_only, mount_id) = m;
        if let Ok(m) = MountPointInfo::try_from(proto::MountPointInfo { path, uri, read_only, mount_id, options }) {
            prop_assert!(!m.uri.is_empty());
            prop_assert!(m.options.len() <= MAX_MOUNT_OPTIONS);
            let bounded = m.options.iter().all(|(k, v)| {
                (1..=MAX_MOUNT_OPTION_KEY).contains(&k.len()) && v.len() <= MAX_MOUNT_OPTION_VALUE
            });
            prop_assert!(bounded);
            round_trips::<proto::MountPointInfo, _>(&m)?;
        }
    }

    /// Modes decode from their wire numbers and their names, and encode back.
    #[test]
    fn modes_decode_only_known_values(n in enum_field(), text in "[A-Za-z_-]{0,14}") {
        match WriteType::try_from(n) {
            Ok(w) => {
                prop_assert!((1..=3).contains(&n));
                prop_assert_eq!(proto::WriteType::from(w) as i32, n);
                prop_assert_eq!(w.to_string().parse::<WriteType>(), Ok(w));
            }
            Err(e) => prop_assert!(matches!(e, Error::InvalidArgument { .. }), "{:?}", e),
        }
        match ReadType::try_from(n) {
            Ok(r) => {
                prop_assert!((1..=2).contains(&n));
                prop_assert_eq!(proto::ReadType::from(r) as i32, n);
                prop_assert_eq!(r.to_string().parse::<ReadType>(), Ok(r));
            }
            Err(e) => prop_assert!(matches!(e, Error::InvalidArgument { .. }), "{:?}", e),
        }
        if let Ok(w) = text.parse::<WriteType>() {
            prop_assert_eq!(w.to_string(), text.to_ascii_uppercase().replace('-', "_"));
        }
    }
}

// ---------------------------------------------------------------------------------
// Errors in a gRPC status
// ---------------------------------------------------------------------------------

fn error_detail() -> impl Strategy<Value = proto::ErrorDetail> {
    (
        any::<String>(),
        any::<String>(),
        any::<u64>(),
        prop_oneof![4 => 0..20i32, 1 => any::<i32>()],
        any::<bool>(),
    )
        .prop_map(
            |(path, reason, block_id, kind, temporary)| proto::ErrorDetail {
                path,
                reason,
                block_id,
                kind,
                temporary,
            },
        )
}

/// Any error Strata can raise.
fn strata_error() -> impl Strategy<Value = Error> {
    (
        0..18u8,
        any::<String>(),
        any::<String>(),
        any::<u64>(),
        any::<bool>(),
    )
        .prop_map(|(k, path, reason, block_id, temporary)| match k {
            0 => Error::NotFound { path },
            1 => Error::AlreadyExists { path },
            2 => Error::NotADirectory { path },
            3 => Error::IsADirectory { path },
            4 => Error::DirectoryNotEmpty { path },
            5 => Error::InvalidPath { path, reason },
            6 => Error::NotPermitted { path, reason },
            7 => Error::NotAMountPoint { path },
            8 => Error::FileIncomplete { path },
            9 => Error::InvalidArgument {
                field: path,
                reason,
            },
            10 => Error::BlockNotFound { block_id },
            11 => Error::NoSpace { what: path, reason },
            12 => Error::UnderStore {
                path,
                reason,
                temporary,
            },
            13 => Error::StorageIo { what: path, reason },
            14 => Error::UfsChanged { path, reason },
            15 => Error::Unavailable { reason },
            16 => Error::NotLeader { leader: path },
            _ => Error::Internal { reason },
        })
}

proptest! {
    #![proptest_config(config())]

    /// Any status a peer sends becomes an error: details that name a known kind give
    /// that kind, anything else maps by code.
    #[test]
    fn any_status_decodes_to_an_error(
        code in prop_oneof![0..17i32, any::<i32>()],
        message in any::<String>(),
        details in prop_oneof![
            vec(any::<u8>(), 0..64),
            error_detail().prop_map(|d| prost::Message::encode_to_vec(&d)),
        ],
    ) {
        let known = <proto::ErrorDetail as prost::Message>::decode(&details[..])
            .ok()
            .and_then(|d| proto::ErrorKind::try_from(d.kind).ok())
            .filter(|k| *k != proto::ErrorKind::Unspecified);
        let status = tonic::Status::with_details(tonic::Code::from(code), message, details.into());
        let err = Error::from(status.clone());
        if let Some(kind) = known {
            let sent = tonic::Status::from(err.clone());
            let detail = <proto::ErrorDetail as prost::Message>::decode(sent.details()).unwrap();
            prop_assert_eq!(detail.kind, kind as i32, "decoded as another kind: {:?}", err);
        } else {
            let by_code = matches!(
                status.code(),
                tonic::Code::Unavailable | tonic::Code::DeadlineExceeded | tonic::Code::Cancelled
                    | tonic::Code::Aborted | tonic::Code::Unknown
            );
            prop_assert_eq!(err.is_temporary(), by_code);
        }
        // What decoded encodes back to itself.
        prop_assert_eq!(Error::from(tonic::Status::from(err.clone())), err);
    }

    /// A status read from response headers (as the transport does) decodes too.
    #[test]
    fn any_status_headers_decode_to_an_error(
        code in prop_oneof!["[0-9]{1,2}", "[ -~]{0,6}"],
        message in "[ -~]{0,40}",
        details in prop_oneof![
            vec(any::<u8>(), 0..64),
            error_detail().prop_map(|d| prost::Message::encode_to_vec(&d)),
        ],
    ) {
        let mut headers = tonic::metadata::MetadataMap::new();
        headers.insert("grpc-status", code.parse().unwrap());
        headers.insert("grpc-message", message.parse().unwrap());
        headers.insert_bin(
            "grpc-status-details-bin",
            tonic::metadata::MetadataValue::from_bytes(&details),
        );
        if let Some(status) = tonic::Status::from_header_map(&headers.into_headers()) {
            let _ = Error::from(status);
        }
    }

    /// Every error crosses a gRPC status intact.
    #[test]
    fn every_error_survives_a_status(err in strata_error()) {
        prop_assert_eq!(Error::from(tonic::Status::from(err.clone())), err);
    }
}

// ---------------------------------------------------------------------------------
// The strategies themselves
// ---------------------------------------------------------------------------------

/// Share of `n` values of `strategy` that `accepted` takes.
fn accepted_share<S: Strategy>(strategy: S, accepted: impl Fn(S::Value) -> bool) -> f64 {
    let mut runner = TestRunner::deterministic();
    let n = 2000;
    let hits = (0..n)
        .filter(|_| accepted(strategy.new_tree(&mut runner).unwrap().current()))
        .count();
    hits as f64 / n as f64
}

/// Each strategy yields both values the decoder accepts and values it refuses, so
/// the properties above test accepted values, not only refusals.
#[test]
fn strategies_produce_accepted_and_refused_values() {
    let shares = [
        (
            "path",
            accepted_share(raw_path(), |p| StrataPath::parse(&p).is_ok()),
        ),
        (
            "relative path",
            accepted_share(relative_path(), |p| split_relative(&p).is_ok()),
        ),
        (
            "size",
            accepted_share(size_text(), |s| s.parse::<ByteSize>().is_ok()),
        ),
        (
            "duration",
            accepted_share(duration_text(), |s| s.parse::<HumanDuration>().is_ok()),
        ),
        (
            "site file",
            accepted_share(toml_document(), |d| SiteConfig::from_toml_str(&d).is_ok()),
        ),
        (
            "site file and overrides",
            accepted_share((toml_document(), overrides()), |(doc, overrides)| {
                load_with(&doc, overrides).is_ok()
            }),
        ),
        (
            "file blocks",
            accepted_share(file_blocks_response(), |p| FileBlocks::try_from(p).is_ok()),
        ),
        (
            "read block",
            accepted_share(read_block_request(), |p| ReadBlock::try_from(p).is_ok()),
        ),
        (
            "write header",
            accepted_share(write_file_header(), |p| {
                WriteFileHeader::try_from(p).is_ok()
            }),
        ),
        (
            "create file",
            accepted_share(create_file_request(), |p| CreateFile::try_from(p).is_ok()),
        ),
        (
            "file info",
            accepted_share(file_info(), |p| FileInfo::try_from(p).is_ok()),
        ),
    ];
    for (what, share) in shares {
        eprintln!("{what}: {:.0}% accepted", share * 100.0);
        assert!(
            (0.05..=0.95).contains(&share),
            "{what}: {share} of values accepted"
        );
    }
}
