//! The S3 under-store (`s3://bucket/prefix`), for AWS S3 and S3-compatible
//! servers.
//!
//! Layout: a path `a/b` below the mount is the object `prefix/a/b`. Folders are
//! key prefixes; `mkdirs` also writes a zero-byte marker (`prefix/a/`) at every
//! level, so that a folder Strata made exists while empty. A folder with no
//! marker (what other S3 tools write) exists as long as an object lies below it.
//! A file and a folder of the same name cannot both be seen: the file wins.
//! Listings ask for URL-encoded keys, so names holding characters XML cannot
//! carry still list.
//!
//! Writes are staged, as on every backend: from `create` on, a writer holds
//! `<folder>/.<key hex>.strata-tmp` (an empty placeholder first, put with
//! `If-None-Match: *`, so a second writer of the key is refused), then uploads
//! to it (one PUT for a small file, a multipart upload of `part_size` parts for
//! a large one, aborted on failure), and [`UnderStore::publish`] copies the
//! staged object to its path server-side (conditional on the staged object's
//! ETag) and deletes the staged one. Until then nothing is visible at the path;
//! staged objects alone never make a folder exist. S3 may give a copy a new ETag
//! (it does with SSE-KMS), so a writer's [`UfsWriter::finish`] reports the
//! length and an empty version; the version recorded is the published object's.
//!
//! Reads are ranged GETs with `If-Match` on the recorded ETag, and the answer
//! must name exactly the range asked of an object of the recorded length: an
//! object replaced since it was recorded, or a server that ignores `Range`, is
//! refused with [`Error::UfsChanged`], never served.
//!
//! Not atomic: a folder is renamed by copying every object below it, then
//! deleting the sources; a failure midway leaves the sources whole and part of
//! the copies at the new name. A folder holding a file being written is not
//! renamed (`NotPermitted`) until the write ends: the writer's staged key would
//! be moved from under it. A file renamed on a bucket where copies change the
//! ETag keeps its recorded version in the namespace, so its uncached blocks
//! fail with `UfsChanged` until the folder is listed again (known limit).
//!
//! Errors: by S3's code where the answer has one, else by HTTP status (401/403
//! not permitted, 404 not found, 412/416 changed, 429 and 5xx temporary).
//! Timeouts: 10 s to connect, 60 s per read of an answer. The SDK's retries are
//! off: the wrapper every backend gets (`observed`) retries temporary errors.
//!
//! Options (from the mount): `s3.endpoint`, `s3.region` (default `us-east-1`),
//! `s3.path_style` (`true` for most S3-compatible servers), `s3.profile` (a named
//! profile of the shared AWS config files), `s3.part_size`. Credentials come from
//! the standard AWS chain (environment, profile, web identity, container and
//! instance roles), never from the mount itself.

use crate::{
    Capabilities, UfsFingerprint, UfsListing, UfsPage, UfsPath, UfsReader, UfsStatus, UfsWriter,
    UnderStore,
};
use async_trait::async_trait;
use aws_sdk_s3::config::http::HttpResponse;
use aws_sdk_s3::error::{DisplayErrorContext, ProvideErrorMetadata, SdkError};
use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_s3::types::{
    CompletedMultipartUpload, CompletedPart, Delete, EncodingType, ObjectIdentifier,
};
use aws_sdk_s3::Client;
use bytes::{Bytes, BytesMut};
use std::collections::BTreeMap;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;
use strata_common::{Error, Result};
use tokio::io::{AsyncBufRead, AsyncRead, ReadBuf};

/// S3's smallest part (all but the last part of a multipart upload).
pub const MIN_PART_SIZE: u64 = 5 << 20;
/// S3's largest part.
pub const MAX_PART_SIZE: u64 = 5 << 30;
/// S3's most parts in one multipart upload.
const MAX_PARTS: u64 = 10_000;
/// Default part size of a multipart upload; files up to this size are one PUT.
pub const DEFAULT_PART_SIZE: u64 = 16 << 20;
/// Largest object one server-side copy request may copy; bigger ones are copied
/// in parts.
pub const MAX_SINGLE_COPY: u64 = 5 << 30;
/// Keys one batch delete request may name.
const DELETE_BATCH: usize = 1000;
/// Most keys one listing page returns.
const LIST_PAGE: i32 = 1000;

/// Marks a staged object; such objects are never listed as entries.
const STAGED_SUFFIX: &str = ".strata-tmp";

/// The options of an S3 mount.
#[derive(Debug, Clone)]
pub struct S3Options {
    /// Endpoint URL of an S3-compatible server (`http://127.0.0.1:9000`); AWS's
    /// own when `None`.
    pub endpoint: Option<String>,
    /// Region to sign requests for.
    pub region: String,
    /// Path-style addressing (`endpoint/bucket/key`) rather than virtual hosts.
    pub path_style: bool,
    /// A named profile of the shared AWS config and credentials files.
    pub profile: Option<String>,
    /// Part size of multipart uploads and copies.
    pub part_size: u64,
    /// Objects larger than this are copied in parts (tests lower it).
    pub max_single_copy: u64,
    /// Credentials given by the program itself (never parsed from mount
    /// options); the standard AWS chain when `None`.
    pub credentials: Option<aws_sdk_s3::config::Credentials>,
}

impl Default for S3Options {
    fn default() -> Self {
        S3Options {
            endpoint: None,
            region: "us-east-1".into(),
            path_style: false,
            profile: None,
            part_size: DEFAULT_PART_SIZE,
            max_single_copy: MAX_SINGLE_COPY,
            credentials: None,
        }
    }
}

impl S3Options {
    /// Options from a mount's `s3.*` settings; unknown keys and bad values are
    /// refused with the key named.
    pub fn parse(options: &BTreeMap<String, String>) -> Result<Self> {
        let mut o = S3Options::default();
        for (k, v) in options {
            let bad = |why: &str| Error::invalid_argument(format!("option {k}"), why.to_string());
            match k.as_str() {
                "s3.endpoint" => {
                    if !(v.starts_with("http://") || v.starts_with("https://")) || v.len() > 1024 {
                        return Err(bad("an http:// or https:// URL"));
                    }
                    o.endpoint = Some(v.clone());
                }
                "s3.region" => {
                    if v.is_empty()
                        || v.len() > 64
                        || !v.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
                    {
                        return Err(bad("a region name such as us-east-1"));
                    }
                    o.region = v.clone();
                }
                "s3.path_style" => {
                    o.path_style = v.parse().map_err(|_| bad("true or false"))?;
                }
                "s3.profile" => {
                    if v.is_empty() || v.len() > 128 {
                        return Err(bad("a profile name"));
                    }
                    o.profile = Some(v.clone());
                }
                "s3.part_size" => {
                    let n = v
                        .parse::<strata_common::units::ByteSize>()
                        .map_err(|_| bad("a size such as 16MiB"))?
                        .0;
                    if !(MIN_PART_SIZE..=MAX_PART_SIZE).contains(&n) {
                        return Err(bad("from 5 MiB to 5 GiB"));
                    }
                    o.part_size = n;
                }
                _ => {
                    return Err(Error::invalid_argument(
                        format!("option {k}"),
                        "unknown for an S3 mount (known: s3.endpoint, s3.region, \
                         s3.path_style, s3.profile, s3.part_size)",
                    ))
                }
            }
        }
        Ok(o)
    }
}

/// The name a writer of `key` stages its object under, in the target's folder.
fn staged_name(key: u64) -> String {
    format!(".{key:x}{STAGED_SUFFIX}")
}

/// The key of a staged object's name, only when spelled exactly as
/// [`staged_name`] spells it; `None` for any other name.
fn staged_key(name: &str) -> Option<u64> {
    let hex = name.strip_prefix('.')?.strip_suffix(STAGED_SUFFIX)?;
    let key = u64::from_str_radix(hex, 16).ok()?;
    (staged_name(key) == name).then_some(key)
}

/// Whether a name looks like a staged copy's (any `.<x>.strata-tmp`): such names
/// are never listed as entries, as on every backend.
fn looks_staged(name: &str) -> bool {
    name.starts_with('.') && name.ends_with(STAGED_SUFFIX) && name.len() > 1 + STAGED_SUFFIX.len()
}

/// Undoes the percent-encoding of keys in listings asked with `encoding-type=url`
/// (which lets keys holding characters XML cannot carry be listed at all).
fn decode_key(s: &str) -> Result<String> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' {
            let hex = s
                .get(i + 1..i + 3)
                .and_then(|h| u8::from_str_radix(h, 16).ok())
                .ok_or_else(|| Error::internal(format!("S3 listed a badly encoded key {s:?}")))?;
            out.push(hex);
            i += 3;
        } else if b[i] == b'+' {
            out.push(b' ');
            i += 1;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8(out)
        .map_err(|_| Error::internal(format!("S3 listed a key that is not UTF-8: {s:?}")))
}

/// A bucket (and a prefix in it) on an S3 server.
#[derive(Debug, Clone)]
pub struct S3Store {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    uri: String,
    bucket: String,
    /// Key prefix of the mount root, without slashes at either end ("" for the
    /// bucket's root).
    prefix: String,
    options: S3Options,
    client: tokio::sync::OnceCell<Client>,
}

impl S3Store {
    /// Opens `s3://bucket/prefix`. Nothing is asked of the server until the first
    /// call ([`UnderStore::check`] asks for the bucket).
    pub fn open(uri: &str, options: S3Options) -> Result<Self> {
        let rest = uri
            .strip_prefix("s3://")
            .ok_or_else(|| Error::invalid_argument("uri", format!("{uri:?} is not s3://")))?;
        let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
        let inner = prefix.strip_suffix('/').unwrap_or(prefix);
        if inner.starts_with('/') || inner.contains("//") {
            return Err(Error::invalid_argument(
                "uri",
                format!("{uri}: the key prefix has an empty component"),
            ));
        }
        if !valid_bucket(bucket) {
            return Err(Error::invalid_argument(
                "uri",
                format!("{bucket:?} is not a bucket name (3 to 63 of a-z, 0-9, '.', '-')"),
            ));
        }
        let prefix = prefix.trim_matches('/');
        if !prefix.is_empty() {
            UfsPath::parse(prefix).map_err(|e| {
                Error::invalid_argument("uri", format!("{uri}: the key prefix is not a path: {e}"))
            })?;
        }
        Ok(S3Store {
            inner: Arc::new(Inner {
                uri: uri.to_string(),
                bucket: bucket.to_string(),
                prefix: prefix.to_string(),
                options,
                client: tokio::sync::OnceCell::new(),
            }),
        })
    }
}

fn valid_bucket(b: &str) -> bool {
    (3..=63).contains(&b.len())
        && b.chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '.' || c == '-')
        && !b.starts_with(['.', '-'])
        && !b.ends_with(['.', '-'])
}

impl Inner {
    async fn client(&self) -> Result<&Client> {
        self.client
            .get_or_try_init(|| async {
                use aws_smithy_http_client::tls;
                let http = aws_smithy_http_client::Builder::new()
                    .tls_provider(tls::Provider::Rustls(
                        tls::rustls_provider::CryptoMode::Ring,
                    ))
                    .build_https();
                let timeouts = aws_config::timeout::TimeoutConfig::builder()
                    .connect_timeout(Duration::from_secs(10))
                    .read_timeout(Duration::from_secs(60))
                    .build();
                let mut loader = aws_config::defaults(aws_config::BehaviorVersion::latest())
                    .http_client(http)
                    // Retries are the wrapper's (`observed`), the same for every
                    // backend; the SDK's own would multiply them.
                    .retry_config(aws_config::retry::RetryConfig::disabled())
                    .timeout_config(timeouts)
                    .region(aws_config::Region::new(self.options.region.clone()));
                if let Some(p) = &self.options.profile {
                    loader = loader.profile_name(p);
                }
                if let Some(c) = &self.options.credentials {
                    loader = loader.credentials_provider(c.clone());
                }
                let shared = loader.load().await;
                let mut conf = aws_sdk_s3::config::Builder::from(&shared)
                    .force_path_style(self.options.path_style)
                    // Checksums only where S3 requires them: S3-compatible servers
                    // differ in which of the newer checksum headers they accept.
                    .request_checksum_calculation(
                        aws_sdk_s3::config::RequestChecksumCalculation::WhenRequired,
                    )
                    .response_checksum_validation(
                        aws_sdk_s3::config::ResponseChecksumValidation::WhenRequired,
                    );
                if let Some(e) = &self.options.endpoint {
                    conf = conf.endpoint_url(e);
                }
                Ok::<_, Error>(Client::from_conf(conf.build()))
            })
            .await
    }

    /// The object key of `path` (the mount root's is the prefix itself).
    fn key(&self, path: &UfsPath) -> String {
        let rel = path.components().join("/");
        match (self.prefix.is_empty(), rel.is_empty()) {
            (true, _) => rel,
            (false, true) => self.prefix.clone(),
            (false, false) => format!("{}/{rel}", self.prefix),
        }
    }

    /// The key prefix of the entries of folder `path` ("" or ending in '/').
    fn dir_prefix(&self, path: &UfsPath) -> String {
        let k = self.key(path);
        if k.is_empty() {
            k
        } else {
            k + "/"
        }
    }

    fn display(&self, path: &UfsPath) -> String {
        format!("{}{}", self.uri.trim_end_matches('/'), path)
    }

    /// A Strata error for a failed S3 request about `key`: by S3's error code
    /// where the response has one, else by HTTP status (a HEAD's error has no
    /// body): 401/403 not permitted, 404 not found, 412/416 changed, 429 and 5xx
    /// temporary.
    fn error<E>(&self, key: &str, err: SdkError<E, HttpResponse>) -> Error
    where
        E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
    {
        let path = format!("s3://{}/{key}", self.bucket);
        let reason = DisplayErrorContext(&err).to_string();
        let temporary = |path, reason| Error::UnderStore {
            path,
            reason,
            temporary: true,
        };
        let se = match &err {
            SdkError::TimeoutError(_)
            | SdkError::DispatchFailure(_)
            | SdkError::ResponseError(_) => return temporary(path, reason),
            SdkError::ServiceError(se) => se,
            _ => {
                return Error::UnderStore {
                    path,
                    reason,
                    temporary: false,
                }
            }
        };
        let changed = || Error::UfsChanged {
            path: path.clone(),
            reason: "the object is not the recorded one".into(),
        };
        match se.err().code().unwrap_or("") {
            "NoSuchKey" | "NotFound" | "NoSuchUpload" => return Error::NotFound { path },
            "NoSuchBucket" => {
                return Error::NotFound {
                    path: format!("bucket {}", self.bucket),
                }
            }
            "AccessDenied"
            | "InvalidAccessKeyId"
            | "SignatureDoesNotMatch"
            | "ExpiredToken"
            | "InvalidToken"
            | "AllAccessDisabled" => return Error::NotPermitted { path, reason },
            "PreconditionFailed" | "InvalidRange" => return changed(),
            "SlowDown"
            | "InternalError"
            | "ServiceUnavailable"
            | "RequestTimeout"
            | "Throttling"
            | "ThrottlingException"
            | "RequestTimeTooSkewed" => return temporary(path, reason),
            _ => {}
        }
        match se.raw().status().as_u16() {
            401 | 403 => Error::NotPermitted { path, reason },
            404 => Error::NotFound { path },
            412 | 416 => changed(),
            429 | 500..=599 => temporary(path, reason),
            _ => Error::UnderStore {
                path,
                reason,
                temporary: false,
            },
        }
    }

    /// The file object at `key`, if there is one.
    async fn head(&self, key: &str, name: &str) -> Result<Option<UfsStatus>> {
        if key.is_empty() {
            return Ok(None);
        }
        let c = self.client().await?;
        match c.head_object().bucket(&self.bucket).key(key).send().await {
            Ok(o) => Ok(Some(UfsStatus {
                name: name.to_string(),
                is_dir: false,
                length: o
                    .content_length()
                    .and_then(|n| u64::try_from(n).ok())
                    .ok_or_else(|| Error::UnderStore {
                        path: format!("s3://{}/{key}", self.bucket),
                        reason: "the server gave no length for the object".into(),
                        temporary: false,
                    })?,
                mtime_ms: o
                    .last_modified()
                    .and_then(|t| t.to_millis().ok())
                    .unwrap_or(0),
                version: etag(o.e_tag()),
            })),
            Err(e) if e.raw_response().map(|r| r.status().as_u16()) == Some(404) => Ok(None),
            Err(e) => Err(self.error(key, e)),
        }
    }

    /// Whether a folder lies at the key prefix `dir`: a marker, an entry, or a
    /// folder below. Staged copies alone do not make a folder (a writer whose
    /// folder was deleted must not bring it back).
    async fn any_below(&self, dir: &str) -> Result<bool> {
        let c = self.client().await?;
        let page = c
            .list_objects_v2()
            .bucket(&self.bucket)
            .prefix(dir)
            .delimiter("/")
            .encoding_type(EncodingType::Url)
            .max_keys(100)
            .send()
            .await
            .map_err(|e| self.error(dir, e))?;
        if !page.common_prefixes().is_empty() || page.is_truncated() == Some(true) {
            return Ok(true);
        }
        for o in page.contents() {
            let key = decode_key(o.key().unwrap_or(""))?;
            if !key.strip_prefix(dir).is_some_and(looks_staged) {
                return Ok(true);
            }
        }
        Ok(false)
    }

    /// Every key below the key prefix `dir` (staged objects and markers too), with
    /// its size and ETag.
    async fn keys_below(&self, dir: &str) -> Result<Vec<(String, u64, String)>> {
        let c = self.client().await?;
        let mut out = Vec::new();
        let mut token: Option<String> = None;
        loop {
            let page = c
                .list_objects_v2()
                .bucket(&self.bucket)
                .prefix(dir)
                .encoding_type(EncodingType::Url)
                .max_keys(LIST_PAGE)
                .set_continuation_token(token.clone())
                .send()
                .await
                .map_err(|e| self.error(dir, e))?;
            for o in page.contents() {
                if let Some(k) = o.key() {
                    out.push((
                        decode_key(k)?,
                        o.size().unwrap_or(0).max(0) as u64,
                        etag(o.e_tag()),
                    ));
                }
            }
            match self.next_page(dir, &page, token.as_deref())? {
                Some(t) => token = Some(t),
                None => return Ok(out),
            }
        }
    }

    /// The token of the page after `page`; `None` at the end. A page that says
    /// more follow but gives no new token is an error, not the end: a listing cut
    /// short would look like files deleted.
    fn next_page(
        &self,
        dir: &str,
        page: &aws_sdk_s3::operation::list_objects_v2::ListObjectsV2Output,
        previous: Option<&str>,
    ) -> Result<Option<String>> {
        if page.is_truncated() != Some(true) {
            return Ok(None);
        }
        match page.next_continuation_token() {
            Some(t) if Some(t) != previous && !t.is_empty() => Ok(Some(t.to_string())),
            _ => Err(Error::UnderStore {
                path: format!("s3://{}/{dir}", self.bucket),
                reason: "the listing says more entries follow but gives no new page token".into(),
                temporary: true,
            }),
        }
    }

    async fn delete_keys(&self, keys: &[String]) -> Result<()> {
        let c = self.client().await?;
        // A batch delete names its keys in an XML body, which cannot carry
        // control characters: such keys go one request each, named in the URL.
        let (plain, odd): (Vec<&String>, Vec<&String>) = keys.iter().partition(|k| {
            !k.chars()
                .any(|ch| ch.is_control() && !matches!(ch, '\t' | '\n' | '\r'))
        });
        for k in odd {
            c.delete_object()
                .bucket(&self.bucket)
                .key(k.as_str())
                .send()
                .await
                .map_err(|e| self.error(k, e))?;
        }
        for batch in plain.chunks(DELETE_BATCH) {
            let objects = batch
                .iter()
                .map(|k| ObjectIdentifier::builder().key(k.as_str()).build())
                .collect::<std::result::Result<Vec<_>, _>>()
                .map_err(Error::internal)?;
            let delete = Delete::builder()
                .set_objects(Some(objects))
                .quiet(true)
                .build()
                .map_err(Error::internal)?;
            let out = c
                .delete_objects()
                .bucket(&self.bucket)
                .delete(delete)
                .send()
                .await
                .map_err(|e| self.error(batch[0], e))?;
            if let Some(failed) = out.errors().first() {
                return Err(Error::UnderStore {
                    path: format!("s3://{}/{}", self.bucket, failed.key().unwrap_or("")),
                    reason: format!(
                        "delete refused: {} {}",
                        failed.code().unwrap_or(""),
                        failed.message().unwrap_or("")
                    ),
                    temporary: false,
                });
            }
        }
        Ok(())
    }

    /// Copies object `from` (of `length` bytes, ETag `from_etag`) to `to`,
    /// server-side; returns the new object's status. The copy is conditional on
    /// the source's ETag, so an object replaced meanwhile is not copied with
    /// another's length.
    async fn copy(
        &self,
        from: &str,
        from_etag: &str,
        to: &str,
        length: u64,
        name: &str,
    ) -> Result<UfsStatus> {
        let if_match = (!from_etag.is_empty()).then(|| format!("\"{from_etag}\""));
        let c = self.client().await?;
        let source = format!("{}/{}", self.bucket, encode_key(from));
        let (etag_of_copy, mtime) = if length <= self.options.max_single_copy {
            let out = c
                .copy_object()
                .bucket(&self.bucket)
                .key(to)
                .copy_source(&source)
                .set_copy_source_if_match(if_match.clone())
                .send()
                .await
                .map_err(|e| self.error(from, e))?;
            let r = out.copy_object_result();
            (
                etag(r.and_then(|r| r.e_tag())),
                r.and_then(|r| r.last_modified())
                    .and_then(|t| t.to_millis().ok()),
            )
        } else {
            let part = self.part_size_for(length)?;
            let id = self.start_upload(to).await?;
            let copied = async {
                let mut parts = Vec::new();
                let mut offset = 0;
                while offset < length {
                    let end = (offset + part).min(length) - 1;
                    let n = parts.len() as i32 + 1;
                    let r = c
                        .upload_part_copy()
                        .bucket(&self.bucket)
                        .key(to)
                        .upload_id(&id)
                        .part_number(n)
                        .copy_source(&source)
                        .set_copy_source_if_match(if_match.clone())
                        .copy_source_range(format!("bytes={offset}-{end}"))
                        .send()
                        .await
                        .map_err(|e| self.error(from, e))?;
                    let tag = r.copy_part_result().and_then(|p| p.e_tag()).unwrap_or("");
                    parts.push(CompletedPart::builder().part_number(n).e_tag(tag).build());
                    offset = end + 1;
                }
                self.complete(to, &id, parts).await
            }
            .await;
            match copied {
                Ok(done) => done,
                Err(e) => {
                    self.abort(to, &id).await;
                    return Err(e);
                }
            }
        };
        let mtime_ms = match mtime {
            Some(t) => t,
            None => self.head(to, name).await?.map(|s| s.mtime_ms).unwrap_or(0),
        };
        Ok(UfsStatus {
            name: name.to_string(),
            is_dir: false,
            length,
            mtime_ms,
            version: etag_of_copy,
        })
    }

    /// Starts a multipart upload to `key`; its id.
    async fn start_upload(&self, key: &str) -> Result<String> {
        let c = self.client().await?;
        let up = c
            .create_multipart_upload()
            .bucket(&self.bucket)
            .key(key)
            .send()
            .await
            .map_err(|e| self.error(key, e))?;
        up.upload_id()
            .map(str::to_string)
            .ok_or_else(|| Error::internal("S3 started an upload without an id"))
    }

    /// Completes a multipart upload; the object's ETag and time.
    async fn complete(
        &self,
        key: &str,
        id: &str,
        parts: Vec<CompletedPart>,
    ) -> Result<(String, Option<i64>)> {
        let c = self.client().await?;
        let out = c
            .complete_multipart_upload()
            .bucket(&self.bucket)
            .key(key)
            .upload_id(id)
            .multipart_upload(
                CompletedMultipartUpload::builder()
                    .set_parts(Some(parts))
                    .build(),
            )
            .send()
            .await
            .map_err(|e| self.error(key, e))?;
        Ok((etag(out.e_tag()), None))
    }

    /// Aborts a multipart upload, logging a failure (the upload is then left for
    /// [`UnderStore::discard_in`] or the bucket's lifecycle rule).
    async fn abort(&self, key: &str, id: &str) {
        let Ok(c) = self.client().await else { return };
        let res = c
            .abort_multipart_upload()
            .bucket(&self.bucket)
            .key(key)
            .upload_id(id)
            .send()
            .await;
        if let Err(e) = res {
            tracing::warn!(key, error = %DisplayErrorContext(&e), "aborting an S3 upload failed");
        }
    }

    /// The part size for an object of `length` bytes: the configured one, larger
    /// when the object would otherwise need more than S3's 10,000 parts.
    fn part_size_for(&self, length: u64) -> Result<u64> {
        let part = self.options.part_size.max(length.div_ceil(MAX_PARTS));
        if part > MAX_PART_SIZE {
            return Err(Error::invalid_argument(
                "length",
                format!("{length} bytes is more than S3 holds in one object"),
            ));
        }
        Ok(part)
    }

    fn staged(&self, path: &UfsPath, key: u64) -> String {
        format!("{}{}", self.dir_prefix(&path.parent()), staged_name(key))
    }
}

/// An ETag without its quotes.
fn etag(t: Option<&str>) -> String {
    t.unwrap_or("").trim_matches('"').to_string()
}

/// A key as the `x-amz-copy-source` header wants it: percent-encoded, slashes kept.
fn encode_key(key: &str) -> String {
    let mut out = String::with_capacity(key.len());
    for b in key.bytes() {
        if b.is_ascii_alphanumeric() || b"-_.~/".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[async_trait]
impl UnderStore for S3Store {
    fn uri(&self) -> &str {
        &self.inner.uri
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities {
            atomic_rename: false,
            real_directories: false,
            ranged_reads: true,
            append: false,
        }
    }

    async fn check(&self) -> Result<()> {
        let c = self.inner.client().await?;
        c.head_bucket()
            .bucket(&self.inner.bucket)
            .send()
            .await
            .map_err(|e| {
                let not_found = e.raw_response().map(|r| r.status().as_u16()) == Some(404);
                if not_found {
                    Error::NotFound {
                        path: format!("bucket {} ({})", self.inner.bucket, self.inner.uri),
                    }
                } else {
                    self.inner.error("", e)
                }
            })?;
        Ok(())
    }

    async fn status(&self, path: &UfsPath) -> Result<Option<UfsStatus>> {
        let s = &self.inner;
        let name = path.components().last().cloned().unwrap_or_default();
        if path.is_root() {
            return Ok(Some(UfsStatus {
                name,
                is_dir: true,
                length: 0,
                mtime_ms: 0,
                version: String::new(),
            }));
        }
        if looks_staged(&name) {
            return Ok(None);
        }
        if let Some(st) = s.head(&s.key(path), &name).await? {
            return Ok(Some(st));
        }
        if s.any_below(&s.dir_prefix(path)).await? {
            return Ok(Some(UfsStatus {
                name,
                is_dir: true,
                length: 0,
                mtime_ms: 0,
                version: String::new(),
            }));
        }
        Ok(None)
    }

    async fn list(&self, path: &UfsPath) -> Result<UfsListing> {
        // By name; a file beats a folder of the same name (it comes first, its
        // key being the folder's prefix without the slash).
        let mut entries: BTreeMap<String, UfsStatus> = BTreeMap::new();
        let mut staged = Vec::new();
        let mut token: Option<String> = None;
        loop {
            let page = self.list_page(path, token.as_deref()).await?;
            for st in page.entries {
                match entries.entry(st.name.clone()) {
                    std::collections::btree_map::Entry::Occupied(mut e) => {
                        if !st.is_dir {
                            e.insert(st);
                        }
                    }
                    std::collections::btree_map::Entry::Vacant(e) => {
                        e.insert(st);
                    }
                }
            }
            staged.extend(page.staged);
            match page.next {
                Some(t) => token = Some(t),
                None => break,
            }
        }
        staged.sort_unstable();
        Ok(UfsListing {
            entries: entries.into_values().collect(),
            staged,
        })
    }

    async fn list_page(&self, path: &UfsPath, token: Option<&str>) -> Result<UfsPage> {
        let s = &self.inner;
        let dir = s.dir_prefix(path);
        let c = s.client().await?;
        let page = c
            .list_objects_v2()
            .bucket(&s.bucket)
            .prefix(&dir)
            .delimiter("/")
            .encoding_type(EncodingType::Url)
            .max_keys(LIST_PAGE)
            .set_continuation_token(token.map(str::to_string))
            .send()
            .await
            .map_err(|e| s.error(&dir, e))?;
        let mut files = BTreeMap::new();
        let mut dirs = std::collections::BTreeSet::new();
        let mut staged = Vec::new();
        let mut seen_any = path.is_root() || token.is_some();
        for o in page.contents() {
            let key = decode_key(o.key().unwrap_or(""))?;
            let Some(name) = key.strip_prefix(&dir) else {
                continue;
            };
            if looks_staged(name) {
                // Staged copies are not entries, and alone make no folder.
                if let Some(k) = staged_key(name) {
                    staged.push(k);
                }
                continue;
            }
            seen_any = true;
            if name.is_empty() {
                continue; // the folder's own marker
            }
            if !UfsPath::parse(name).is_ok_and(|n| n.components().len() == 1) {
                continue; // not a name Strata can hold (".", "..")
            }
            files.insert(
                name.to_string(),
                UfsStatus {
                    name: name.to_string(),
                    is_dir: false,
                    length: o.size().unwrap_or(0).max(0) as u64,
                    mtime_ms: o
                        .last_modified()
                        .and_then(|t| t.to_millis().ok())
                        .unwrap_or(0),
                    version: etag(o.e_tag()),
                },
            );
        }
        for p in page.common_prefixes() {
            seen_any = true;
            let key = decode_key(p.prefix().unwrap_or(""))?;
            let Some(name) = key.strip_prefix(&dir) else {
                continue;
            };
            let name = name.trim_end_matches('/');
            if !looks_staged(name) && UfsPath::parse(name).is_ok_and(|n| n.components().len() == 1)
            {
                dirs.insert(name.to_string());
            }
        }
        let next = s.next_page(&dir, &page, token)?;
        if !seen_any && next.is_none() {
            // Nothing below: a file there, or nothing at all.
            return Err(match s.head(&s.key(path), "").await? {
                Some(_) => Error::NotADirectory {
                    path: s.display(path),
                },
                None => Error::NotFound {
                    path: s.display(path),
                },
            });
        }
        for d in dirs {
            if files.contains_key(&d) {
                continue; // a file and a folder of one name: the file is seen
            }
            files.insert(
                d.clone(),
                UfsStatus {
                    name: d,
                    is_dir: true,
                    length: 0,
                    mtime_ms: 0,
                    version: String::new(),
                },
            );
        }
        staged.sort_unstable();
        Ok(UfsPage {
            entries: files.into_values().collect(),
            staged,
            next,
        })
    }

    async fn open_range(
        &self,
        path: &UfsPath,
        offset: u64,
        length: u64,
        expect: &UfsFingerprint,
    ) -> Result<UfsReader> {
        let s = &self.inner;
        let key = s.key(path);
        let display = s.display(path);
        if path.is_root() {
            return Err(Error::IsADirectory { path: display });
        }
        let end = crate::range_end(&display, offset, length, expect)?;
        let c = s.client().await?;
        if length == 0 {
            // Nothing to read, but the object must still be the recorded one.
            let st = s.head(&key, "").await?.ok_or(Error::NotFound {
                path: display.clone(),
            })?;
            if let Some(reason) = expect.mismatch(&st.fingerprint()) {
                return Err(Error::UfsChanged {
                    path: display,
                    reason,
                });
            }
            return Ok(Box::pin(tokio::io::empty()));
        }
        let mut req = c
            .get_object()
            .bucket(&s.bucket)
            .key(&key)
            .range(format!("bytes={offset}-{}", end - 1));
        if !expect.version.is_empty() {
            req = req.if_match(format!("\"{}\"", expect.version));
        }
        let out = req.send().await.map_err(|e| {
            if e.raw_response().map(|r| r.status().as_u16()) == Some(412) {
                Error::UfsChanged {
                    path: display.clone(),
                    reason: "the object's ETag is not the recorded one".into(),
                }
            } else {
                s.error(&key, e)
            }
        })?;
        // The server must answer with exactly the range asked, of the recorded
        // object: one that ignores `Range` or `If-Match` is refused, not trusted.
        let want = format!("bytes {offset}-{}/{}", end - 1, expect.length);
        if out.content_range() != Some(want.as_str()) {
            return Err(Error::UfsChanged {
                path: display,
                reason: format!(
                    "asked for {want}, the server answered {:?}",
                    out.content_range()
                ),
            });
        }
        if !expect.version.is_empty() && etag(out.e_tag()) != expect.version {
            return Err(Error::UfsChanged {
                path: display,
                reason: format!(
                    "version {:?} recorded, {:?} served",
                    expect.version,
                    etag(out.e_tag())
                ),
            });
        }
        Ok(Box::pin(Exact {
            inner: Box::pin(out.body.into_async_read()),
            left: length,
            path: display,
        }))
    }

    async fn create(&self, path: &UfsPath, key: u64) -> Result<Box<dyn UfsWriter>> {
        let s = &self.inner;
        if path.is_root() {
            return Err(Error::IsADirectory {
                path: s.display(path),
            });
        }
        let parent = path.parent();
        if !parent.is_root() {
            match self.status(&parent).await? {
                Some(st) if st.is_dir => {}
                Some(_) => {
                    return Err(Error::NotADirectory {
                        path: s.display(&parent),
                    })
                }
                None => {
                    return Err(Error::NotFound {
                        path: s.display(&parent),
                    })
                }
            }
        }
        let staged = s.staged(path, key);
        let taken = || Error::AlreadyExists {
            path: format!("{} (the staged copy of {key})", s.display(path)),
        };
        if s.head(&staged, "").await?.is_some() {
            return Err(taken());
        }
        // An empty placeholder from the start: a second writer of the key is
        // refused (conditionally, where the server supports it), and a folder
        // holding a file being written is known to (see `rename`).
        let c = s.client().await?;
        c.put_object()
            .bucket(&s.bucket)
            .key(&staged)
            .if_none_match("*")
            .body(ByteStream::from_static(b""))
            .send()
            .await
            .map_err(|e| match s.error(&staged, e) {
                Error::UfsChanged { .. } => taken(),
                other => other,
            })?;
        Ok(Box::new(S3Writer {
            store: s.clone(),
            staged,
            name: path.components().last().cloned().unwrap_or_default(),
            buf: BytesMut::new(),
            upload: None,
            length: 0,
            done: false,
            settled: false,
        }))
    }

    async fn publish(&self, path: &UfsPath, key: u64) -> Result<UfsStatus> {
        let s = &self.inner;
        if path.is_root() {
            return Err(Error::IsADirectory {
                path: s.display(path),
            });
        }
        let staged = s.staged(path, key);
        let name = path.components().last().cloned().unwrap_or_default();
        let st = s
            .head(&staged, &name)
            .await?
            .ok_or_else(|| Error::NotFound {
                path: format!("{} (the staged copy of {key})", s.display(path)),
            })?;
        let done = s
            .copy(&staged, &st.version, &s.key(path), st.length, &name)
            .await?;
        // Published: the file is at its path whatever happens to the staged copy
        // now. One left behind is swept by a later listing of the folder.
        if let Err(e) = s.delete_keys(&[staged]).await {
            tracing::warn!(path = %s.display(path), "a published file's staged copy stays: {e}");
        }
        Ok(done)
    }

    async fn discard_in(&self, dir: &UfsPath, key: u64) -> Result<()> {
        let s = &self.inner;
        let staged = format!("{}{}", s.dir_prefix(dir), staged_name(key));
        s.delete_keys(std::slice::from_ref(&staged)).await?;
        // A writer that died mid-upload leaves an unfinished multipart upload.
        let c = s.client().await?;
        let ups = c
            .list_multipart_uploads()
            .bucket(&s.bucket)
            .prefix(&staged)
            .send()
            .await
            .map_err(|e| s.error(&staged, e))?;
        for u in ups.uploads() {
            if let (Some(k), Some(id)) = (u.key(), u.upload_id()) {
                if k == staged {
                    s.abort(k, id).await;
                }
            }
        }
        Ok(())
    }

    async fn mkdirs(&self, path: &UfsPath) -> Result<()> {
        let s = &self.inner;
        if path.is_root() {
            return Ok(());
        }
        // No file may stand where a folder of the path goes.
        let parts = path.components();
        for i in 1..=parts.len() {
            let p = UfsPath::parse(&parts[..i].join("/"))?;
            if s.head(&s.key(&p), "").await?.is_some() {
                return Err(Error::NotADirectory {
                    path: s.display(&p),
                });
            }
        }
        // A marker at every level: a folder Strata made stays a folder when its
        // last file goes.
        let c = s.client().await?;
        for i in 1..=parts.len() {
            let marker = s.dir_prefix(&UfsPath::parse(&parts[..i].join("/"))?);
            c.put_object()
                .bucket(&s.bucket)
                .key(&marker)
                .body(ByteStream::from_static(b""))
                .send()
                .await
                .map_err(|e| s.error(&marker, e))?;
        }
        Ok(())
    }

    async fn delete(&self, path: &UfsPath, recursive: bool) -> Result<()> {
        let s = &self.inner;
        if path.is_root() {
            return Err(Error::NotPermitted {
                path: s.display(path),
                reason: "the mount root cannot be deleted".into(),
            });
        }
        let key = s.key(path);
        if s.head(&key, "").await?.is_some() {
            return s.delete_keys(&[key]).await;
        }
        let dir = s.dir_prefix(path);
        let keys: Vec<String> = s.keys_below(&dir).await?.into_iter().map(|k| k.0).collect();
        let holds_entries = keys.iter().any(|k| k != &dir);
        if holds_entries && !recursive {
            return Err(Error::DirectoryNotEmpty {
                path: s.display(path),
            });
        }
        s.delete_keys(&keys).await
    }

    async fn rename(&self, src: &UfsPath, dst: &UfsPath) -> Result<()> {
        let s = &self.inner;
        if src.is_root() || dst.is_root() {
            return Err(Error::NotPermitted {
                path: s.display(src),
                reason: "the mount root cannot be renamed".into(),
            });
        }
        if self.status(dst).await?.is_some() {
            return Err(Error::AlreadyExists {
                path: s.display(dst),
            });
        }
        let from = s.key(src);
        let name = dst.components().last().cloned().unwrap_or_default();
        if let Some(st) = s.head(&from, &name).await? {
            s.copy(&from, &st.version, &s.key(dst), st.length, &name)
                .await?;
            return s.delete_keys(&[from]).await;
        }
        let (src_dir, dst_dir) = (s.dir_prefix(src), s.dir_prefix(dst));
        if dst_dir.starts_with(&src_dir) {
            return Err(Error::invalid_argument(
                "rename",
                format!("{} cannot move below itself", s.display(src)),
            ));
        }
        let keys = s.keys_below(&src_dir).await?;
        if keys.is_empty() {
            return Err(Error::NotFound {
                path: s.display(src),
            });
        }
        // A writer's staged copy has a fixed key: moving it from under the writer
        // would lose what it writes. Refused until the write ends.
        if let Some((k, _, _)) = keys
            .iter()
            .find(|(k, _, _)| k.rsplit('/').next().is_some_and(looks_staged))
        {
            return Err(Error::NotPermitted {
                path: s.display(src),
                reason: format!(
                    "a file below is being written ({k}); an S3 folder is renamed by \
                     copying, so it can move once the write ends"
                ),
            });
        }
        // Copy everything, then delete the sources: a failure midway leaves the
        // sources whole and part of the copies at the new name.
        for (k, len, tag) in &keys {
            let to = format!("{dst_dir}{}", &k[src_dir.len()..]);
            let leaf = to.rsplit('/').next().unwrap_or("").to_string();
            s.copy(k, tag, &to, *len, &leaf).await?;
        }
        let keys: Vec<String> = keys.into_iter().map(|k| k.0).collect();
        s.delete_keys(&keys).await
    }
}

/// Reads exactly `left` bytes from a response body: an early end is an error,
/// never a short file.
struct Exact {
    inner: Pin<Box<dyn AsyncBufRead + Send>>,
    left: u64,
    path: String,
}

impl AsyncRead for Exact {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        if self.left == 0 || buf.remaining() == 0 {
            return Poll::Ready(Ok(()));
        }
        let want = buf.remaining().min(self.left as usize);
        let mut limited = buf.take(want);
        let before = limited.filled().len();
        match self.inner.as_mut().poll_read(cx, &mut limited) {
            Poll::Ready(Ok(())) => {
                let n = limited.filled().len() - before;
                if n == 0 {
                    return Poll::Ready(Err(std::io::Error::new(
                        std::io::ErrorKind::UnexpectedEof,
                        Error::UnderStore {
                            path: self.path.clone(),
                            reason: format!("the response ended {} bytes early", self.left),
                            temporary: true,
                        },
                    )));
                }
                // SAFETY: `n` bytes were initialised by the inner read into `limited`,
                // which borrows the front of `buf`'s unfilled part.
                unsafe { buf.assume_init(n) };
                buf.advance(n);
                self.left -= n as u64;
                Poll::Ready(Ok(()))
            }
            other => other,
        }
    }
}

/// A writer staging one object: small files are one PUT at `finish`, larger ones
/// a multipart upload of full parts as they fill. From `create` until it is
/// finished, aborted or dropped, an empty placeholder holds the staged key.
struct S3Writer {
    store: Arc<Inner>,
    staged: String,
    name: String,
    buf: BytesMut,
    upload: Option<(String, Vec<CompletedPart>)>,
    length: u64,
    /// No more writes: finished, or failed.
    done: bool,
    /// Nothing left to clean up: finished (the staged object stays for publish)
    /// or aborted.
    settled: bool,
}

impl S3Writer {
    async fn upload_part(&mut self, data: Bytes) -> Result<()> {
        let s = self.store.clone();
        let c = s.client().await?;
        if self.upload.is_none() {
            let id = s.start_upload(&self.staged).await?;
            self.upload = Some((id, Vec::new()));
        }
        let Some((id, parts)) = &mut self.upload else {
            unreachable!("started above")
        };
        let n = parts.len() as u64 + 1;
        if n > MAX_PARTS {
            return Err(Error::invalid_argument(
                "length",
                format!(
                    "more than {MAX_PARTS} parts of {} bytes; mount with a larger s3.part_size",
                    s.options.part_size
                ),
            ));
        }
        let r = c
            .upload_part()
            .bucket(&s.bucket)
            .key(&self.staged)
            .upload_id(id.as_str())
            .part_number(n as i32)
            .body(ByteStream::from(data))
            .send()
            .await
            .map_err(|e| s.error(&self.staged, e))?;
        parts.push(
            CompletedPart::builder()
                .part_number(n as i32)
                .e_tag(r.e_tag().unwrap_or(""))
                .build(),
        );
        Ok(())
    }

    /// Aborts the upload, if one runs, and removes the staged object.
    async fn clean_up(&mut self) {
        self.settled = true;
        clean_up(&self.store, &self.staged, self.upload.take()).await;
    }
}

async fn clean_up(store: &Inner, staged: &str, upload: Option<(String, Vec<CompletedPart>)>) {
    if let Some((id, _)) = upload {
        store.abort(staged, &id).await;
    }
    if let Err(e) = store.delete_keys(&[staged.to_string()]).await {
        tracing::warn!(
            staged,
            "a writer's staged copy stays (a listing sweeps it): {e}"
        );
    }
}

#[async_trait]
impl UfsWriter for S3Writer {
    async fn write(&mut self, data: Bytes) -> Result<()> {
        if self.done {
            return Err(Error::internal(
                "the S3 writer failed or finished; it takes no more bytes",
            ));
        }
        self.length += data.len() as u64;
        self.buf.extend_from_slice(&data);
        let part = self.store.options.part_size as usize;
        while self.buf.len() >= part {
            let chunk = self.buf.split_to(part).freeze();
            if let Err(e) = self.upload_part(chunk).await {
                self.done = true;
                self.clean_up().await;
                return Err(e);
            }
        }
        Ok(())
    }

    async fn finish(mut self: Box<Self>) -> Result<UfsStatus> {
        if self.done {
            return Err(Error::internal("the S3 writer already failed or finished"));
        }
        self.done = true;
        let s = self.store.clone();
        let rest = std::mem::take(&mut self.buf).freeze();
        let result = if self.upload.is_none() {
            match s.client().await {
                Ok(c) => c
                    .put_object()
                    .bucket(&s.bucket)
                    .key(&self.staged)
                    .body(ByteStream::from(rest))
                    .send()
                    .await
                    .map(|_| ())
                    .map_err(|e| s.error(&self.staged, e)),
                Err(e) => Err(e),
            }
        } else {
            let uploaded = if rest.is_empty() {
                Ok(())
            } else {
                self.upload_part(rest).await
            };
            match uploaded {
                Ok(()) => {
                    let (id, parts) = self.upload.clone().unwrap_or_default();
                    s.complete(&self.staged, &id, parts).await.map(|_| ())
                }
                Err(e) => Err(e),
            }
        };
        if let Err(e) = result {
            self.clean_up().await;
            return Err(e);
        }
        self.upload = None;
        self.settled = true;
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_millis() as i64)
            .unwrap_or(0);
        Ok(UfsStatus {
            name: self.name.clone(),
            is_dir: false,
            length: self.length,
            mtime_ms: now,
            // S3 gives the published copy its own ETag (see the module's note).
            version: String::new(),
        })
    }

    async fn abort(mut self: Box<Self>) -> Result<()> {
        self.done = true;
        self.clean_up().await;
        Ok(())
    }
}

impl Drop for S3Writer {
    fn drop(&mut self) {
        // Dropped before finishing: clean up in the background (a listing of the
        // folder sweeps whatever this misses).
        if self.settled {
            return;
        }
        if let Ok(rt) = tokio::runtime::Handle::try_current() {
            let (store, staged, upload) =
                (self.store.clone(), self.staged.clone(), self.upload.take());
            rt.spawn(async move { clean_up(&store, &staged, upload).await });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn opts(pairs: &[(&str, &str)]) -> Result<S3Options> {
        S3Options::parse(
            &pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        )
    }

    #[test]
    fn options_are_checked_key_by_key() {
        let o = opts(&[
            ("s3.endpoint", "http://127.0.0.1:9000"),
            ("s3.path_style", "true"),
            ("s3.region", "eu-west-1"),
            ("s3.part_size", "8MiB"),
        ])
        .unwrap();
        assert_eq!(o.endpoint.as_deref(), Some("http://127.0.0.1:9000"));
        assert!(o.path_style);
        assert_eq!(o.part_size, 8 << 20);
        for bad in [
            ("s3.endpoint", "ftp://x"),
            ("s3.path_style", "yes"),
            ("s3.region", "a b"),
            ("s3.part_size", "1MiB"),
            ("s3.part_size", "6GiB"),
            ("s3.secret", "x"),
        ] {
            let e = opts(&[bad]).unwrap_err();
            assert!(e.to_string().contains(bad.0), "{e}");
        }
    }

    #[test]
    fn uris_name_a_bucket_and_a_prefix() {
        let s = S3Store::open("s3://my-bucket/a/b/", S3Options::default()).unwrap();
        assert_eq!(s.inner.prefix, "a/b");
        assert_eq!(s.inner.key(&UfsPath::parse("c/d").unwrap()), "a/b/c/d");
        assert_eq!(s.inner.dir_prefix(&UfsPath::root()), "a/b/");
        let s = S3Store::open("s3://my-bucket", S3Options::default()).unwrap();
        assert_eq!(s.inner.dir_prefix(&UfsPath::root()), "");
        for bad in [
            "s3://B",
            "s3://ab",
            "s3://bucket/a/../b",
            "s3://-bucket",
            "s3://bucket//pre",
            "s3://bucket/a//b",
        ] {
            assert!(S3Store::open(bad, S3Options::default()).is_err(), "{bad}");
        }
    }

    #[test]
    fn copy_sources_are_percent_encoded() {
        assert_eq!(encode_key("a b/c+d/é"), "a%20b/c%2Bd/%C3%A9");
        assert_eq!(staged_key(&staged_name(0xabc)), Some(0xabc));
        assert_eq!(staged_key("file"), None);
        // Only the exact spelling is a staged copy's; look-alikes are hidden only.
        for odd in [
            ".FF.strata-tmp",
            ".0ff.strata-tmp",
            ".+1.strata-tmp",
            ".x.strata-tmp",
        ] {
            assert_eq!(staged_key(odd), None, "{odd}");
            assert!(looks_staged(odd), "{odd}");
        }
        assert_eq!(decode_key("a%20b%01/c+d").unwrap(), "a b\u{1}/c d");
        assert!(decode_key("%zz").is_err());
    }
}
