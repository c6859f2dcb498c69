//! The key/value store for service configuration: keys are paths
//! (`app/payments/timeout`), values are raw bytes of at most
//! [`MAX_VALUE_BYTES`], each entry versioned by the index of the change
//! that wrote it.
//!
//! Entries travel the registry's object path (see [`AclObject::Kv`]): the
//! same write lock and index sequence as everything else, journaled by
//! every store like policies and tokens, rolled back the same way when a
//! commit fails, and restored at start-up. [`KvChange`]s are decided by
//! [`Registry::decide_kv`](super::Registry) (compare-and-set included).
//!
//! [`AclObject::Kv`]: super::acl::AclObject::Kv

use std::fmt;
use std::sync::Arc;

/// Largest value accepted (413 beyond).
pub const MAX_VALUE_BYTES: usize = 512 * 1024;

/// Longest key, in bytes.
pub const MAX_KEY_LEN: usize = 512;

/// A key: segments of ASCII letters, digits, `-`, `_`, `.` separated by
/// single `/`, none empty, none `.` or `..`, at most [`MAX_KEY_LEN`] bytes.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct KvKey(Arc<str>);

impl KvKey {
    pub fn new(text: &str) -> Result<Self, String> {
        if text.is_empty() {
            return Err("a key must not be empty".into());
        }
        if text.len() > MAX_KEY_LEN {
            return Err(format!("a key is at most {MAX_KEY_LEN} bytes long"));
        }
        for seg in text.split('/') {
            if seg.is_empty() {
                return Err(format!(
                    "key {text:?} has an empty segment (no leading, trailing or double '/')"
                ));
            }
            if seg == "." || seg == ".." {
                return Err(format!("key {text:?} has a segment {seg:?}"));
            }
            if let Some(c) = seg
                .chars()
                .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.')))
            {
                return Err(format!(
                    "key {text:?} holds {c:?}: segments are ASCII letters, digits, '-', '_' and '.'"
                ));
            }
        }
        Ok(Self(text.into()))
    }

    /// A prefix for `?recurse` listings: like a key, but may be empty (every
    /// key) or end with `/`.
    pub fn check_prefix(text: &str) -> Result<(), String> {
        let trimmed = text.strip_suffix('/').unwrap_or(text);
        if trimmed.is_empty() {
            return Ok(());
        }
        Self::new(trimmed).map(|_| ())
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for KvKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// One stored entry.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KvEntry {
    pub key: KvKey,
    pub value: Arc<[u8]>,
    /// Index of the change that first created the key (kept across updates).
    pub create_index: u64,
    /// Index of the change that wrote this value (set by the registry):
    /// what `?cas=` compares with.
    pub index: u64,
}

/// A change to the key/value store.
#[derive(Clone, Debug)]
pub enum KvChange {
    /// Writes a value. With `cas`: only while the key's index is `cas`
    /// (0: only while the key does not exist); refused otherwise.
    Put {
        key: KvKey,
        value: Arc<[u8]>,
        cas: Option<u64>,
    },
    /// Removes a key (refused when it does not exist); `cas` as for `Put`.
    Delete { key: KvKey, cas: Option<u64> },
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_paths_of_plain_segments() {
        for ok in ["a", "app/payments/timeout", "x.y-z_1/v2"] {
            assert!(KvKey::new(ok).is_ok(), "{ok}");
        }
        for bad in [
            "", "/a", "a/", "a//b", "a/../b", "a/./b", "a b", "a%2Fb", "é",
        ] {
            assert!(KvKey::new(bad).is_err(), "{bad}");
        }
        assert!(KvKey::new(&"a".repeat(513)).is_err());
        assert!(KvKey::check_prefix("").is_ok());
        assert!(KvKey::check_prefix("app/").is_ok());
        assert!(KvKey::check_prefix("app//").is_err());
    }
}
