//! Validated namespace paths.
//!
//! A [`StrataPath`] is absolute, `/`-separated, with no empty component, no NUL, no
//! `.` or `..`, each name at most [`MAX_NAME_BYTES`] bytes. One trailing `/` is
//! accepted and dropped (`ls /dir/`), and the whole path, that `/` aside, is at most
//! [`MAX_PATH_BYTES`]; every path made here (`join`, `parent`) parses back to itself.
//! Because `..` can never be spelled, no namespace path can climb out of the directory
//! it names, and so never out of a mount.

use crate::error::{Error, Result};
use std::fmt;

/// Longest name of one component, as on common Linux filesystems.
pub const MAX_NAME_BYTES: usize = 255;
/// Longest whole path.
pub const MAX_PATH_BYTES: usize = 4096;

/// An absolute, normalised namespace path.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct StrataPath(String);

impl StrataPath {
    /// The root, `/`.
    pub fn root() -> Self {
        StrataPath("/".to_string())
    }

    /// Parses and validates a user-supplied path.
    pub fn parse(raw: &str) -> Result<Self> {
        let bad = |reason: &str| Error::InvalidPath {
            path: raw.to_string(),
            reason: reason.to_string(),
        };
        if raw.is_empty() {
            return Err(bad("empty path"));
        }
        if !raw.starts_with('/') {
            return Err(bad("path must be absolute (start with '/')"));
        }
        if raw.contains('\0') {
            return Err(bad("path contains a NUL byte"));
        }
        if raw == "/" {
            return Ok(Self::root());
        }
        let body = raw.strip_suffix('/').unwrap_or(raw);
        if body.len() > MAX_PATH_BYTES {
            return Err(bad("path is too long"));
        }
        for name in body[1..].split('/') {
            validate_name(name).map_err(|reason| bad(&reason))?;
        }
        Ok(StrataPath(body.to_string()))
    }

    /// The path as a string.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Whether this is `/`.
    pub fn is_root(&self) -> bool {
        self.0 == "/"
    }

    /// The components, root excluded: `/a/b` gives `["a", "b"]`.
    pub fn components(&self) -> impl Iterator<Item = &str> {
        self.0.split('/').filter(|c| !c.is_empty())
    }

    /// Number of components; 0 for the root.
    pub fn depth(&self) -> usize {
        self.components().count()
    }

    /// The last component, `None` for the root.
    pub fn name(&self) -> Option<&str> {
        if self.is_root() {
            None
        } else {
            self.0.rsplit('/').next()
        }
    }

    /// The parent, `None` for the root.
    pub fn parent(&self) -> Option<StrataPath> {
        if self.is_root() {
            return None;
        }
        let cut = self.0.rfind('/').unwrap_or(0);
        Some(if cut == 0 {
            Self::root()
        } else {
            StrataPath(self.0[..cut].to_string())
        })
    }

    /// This path with one more component; the name is validated, and so is the
    /// length of the result.
    pub fn join(&self, name: &str) -> Result<StrataPath> {
        let joined = if self.is_root() {
            format!("/{name}")
        } else {
            format!("{}/{}", self.0, name)
        };
        let bad = |reason: String| Error::InvalidPath {
            path: joined.clone(),
            reason,
        };
        validate_name(name).map_err(bad)?;
        if joined.len() > MAX_PATH_BYTES {
            return Err(bad(format!("path is longer than {MAX_PATH_BYTES} bytes")));
        }
        Ok(StrataPath(joined))
    }

    /// Whether `self` is `other` or lies below it.
    pub fn starts_with(&self, other: &StrataPath) -> bool {
        other.is_root()
            || self.0 == other.0
            || (self.0.starts_with(&other.0) && self.0.as_bytes().get(other.0.len()) == Some(&b'/'))
    }

    /// The components of `self` below `prefix`, joined with `/` (empty when equal);
    /// `None` when `self` is not under `prefix`.
    pub fn relative_to(&self, prefix: &StrataPath) -> Option<String> {
        if !self.starts_with(prefix) {
            return None;
        }
        Some(if prefix.is_root() {
            self.0[1..].to_string()
        } else {
            self.0[prefix.0.len()..].trim_start_matches('/').to_string()
        })
    }
}

/// Checks one path component; the error is the reason.
pub fn validate_name(name: &str) -> std::result::Result<(), String> {
    if name.is_empty() {
        return Err("path has an empty component".to_string());
    }
    if name == "." || name == ".." {
        return Err(format!("path component '{name}' is not allowed"));
    }
    if name.contains('/') {
        return Err("a name cannot contain '/'".to_string());
    }
    if name.contains('\0') {
        return Err("path contains a NUL byte".to_string());
    }
    if name.len() > MAX_NAME_BYTES {
        return Err(format!("component is longer than {MAX_NAME_BYTES} bytes"));
    }
    Ok(())
}

impl fmt::Display for StrataPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for StrataPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_normal_paths() {
        let p = StrataPath::parse("/a/b/c").unwrap();
        assert_eq!(p.components().collect::<Vec<_>>(), ["a", "b", "c"]);
        assert_eq!(p.parent().unwrap().as_str(), "/a/b");
        assert_eq!(p.name(), Some("c"));
        assert_eq!(StrataPath::parse("/a/").unwrap().as_str(), "/a");
        assert_eq!(
            StrataPath::parse("/x").unwrap().parent().unwrap(),
            StrataPath::root()
        );
        assert!(StrataPath::root().parent().is_none());
    }

    #[test]
    fn rejects_bad_paths() {
        for bad in [
            "", "a/b", "/a//b", "//", "/a/./b", "/a/../b", "/..", "/a\0b",
        ] {
            let err = StrataPath::parse(bad).unwrap_err();
            assert!(
                matches!(err, Error::InvalidPath { .. }),
                "{bad:?} gave {err:?}"
            );
        }
        let long = format!("/{}", "x".repeat(MAX_NAME_BYTES + 1));
        assert!(StrataPath::parse(&long).is_err());
    }

    #[test]
    fn prefix_relations() {
        let a = StrataPath::parse("/a").unwrap();
        let ab = StrataPath::parse("/a/b").unwrap();
        let abc = StrataPath::parse("/abc").unwrap();
        assert!(ab.starts_with(&a));
        assert!(!abc.starts_with(&a));
        assert!(a.starts_with(&StrataPath::root()));
        assert_eq!(ab.relative_to(&a).unwrap(), "b");
        assert_eq!(a.relative_to(&a).unwrap(), "");
        assert_eq!(ab.relative_to(&StrataPath::root()).unwrap(), "a/b");
        assert!(abc.relative_to(&a).is_none());
        assert_eq!(a.join("c").unwrap().as_str(), "/a/c");
        assert!(a.join("..").is_err());
    }

    /// A path of exactly `len` bytes of 255-byte names.
    fn path_of_len(len: usize) -> String {
        let mut s = String::new();
        while s.len() < len {
            s.push('/');
            s.push_str(&"x".repeat((len - s.len()).min(MAX_NAME_BYTES)));
        }
        s
    }

    #[test]
    fn join_refuses_a_path_longer_than_parse_accepts() {
        let full = StrataPath::parse(&path_of_len(MAX_PATH_BYTES - 2)).unwrap();
        // Was accepted: a path `parse` refuses, so a listing that showed it could not
        // be read back by a client.
        let err = full.join("yz").unwrap_err();
        assert!(matches!(err, Error::InvalidPath { .. }), "{err:?}");
        let joined = full.join("y").unwrap();
        assert_eq!(joined.as_str().len(), MAX_PATH_BYTES);
        assert_eq!(StrataPath::parse(joined.as_str()).unwrap(), joined);
    }

    #[test]
    fn a_path_at_the_limit_may_end_with_a_slash() {
        let raw = path_of_len(MAX_PATH_BYTES);
        let p = StrataPath::parse(&raw).unwrap();
        assert_eq!(StrataPath::parse(&format!("{raw}/")).unwrap(), p);
        assert!(StrataPath::parse(&path_of_len(MAX_PATH_BYTES + 2)).is_err());
    }
}
