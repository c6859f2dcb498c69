//! Domain names of the registry: service names, datacenters, instance ids and
//! version selectors. Every one is validated when it is built, so the rest of
//! Maxine never sees a name that would make a DNS query ambiguous.

use std::fmt;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

// Length limits. Every name Maxine advertises must be a legal DNS name
// (RFC 1035 2.3.4): each label at most 63 octets, the whole name at most 255
// octets on the wire (every label plus its length octet, plus the root's 0).

/// The longest DNS label (RFC 1035 2.3.4).
pub const MAX_LABEL_LEN: usize = 63;
/// The longest service name: one less than a label, because the SRV form of
/// the name, `_<service>._tcp` (RFC 2782), puts a `_` in front of it.
pub const MAX_SERVICE_NAME_LEN: usize = MAX_LABEL_LEN - 1;
/// The longest datacenter name: one label (`<service>.<dc>.<zone>`).
pub const MAX_DATACENTER_LEN: usize = MAX_LABEL_LEN;
/// The longest instance id: one label (`<id>.<service>.<dc>.<zone>`).
pub const MAX_INSTANCE_ID_LEN: usize = MAX_LABEL_LEN;
/// The longest DNS name on the wire, length octets and root included (RFC 1035 2.3.4).
pub const MAX_NAME_OCTETS: usize = 255;
/// Wire octets of the longest instance name without its zone,
/// `<id>.<service>.<dc>`: each label plus its length octet. The longest name
/// Maxine serves; the zone (`domain`) must leave room for it, see
/// [`max_zone_len`].
pub const MAX_INSTANCE_PREFIX_OCTETS: usize =
    (1 + MAX_INSTANCE_ID_LEN) + (1 + MAX_SERVICE_NAME_LEN) + (1 + MAX_DATACENTER_LEN);

/// The longest zone (as text, `a.b` without the trailing dot) under which
/// every instance name fits in [`MAX_NAME_OCTETS`]: a zone of n characters
/// takes n + 1 octets on the wire, plus 1 for the root.
pub const fn max_zone_len() -> usize {
    MAX_NAME_OCTETS - MAX_INSTANCE_PREFIX_OCTETS - 2
}

/// Why a name was rejected. The text is shown to API users as is.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NameError {
    #[error("{what} must not be empty")]
    Empty { what: &'static str },
    #[error("{what} {name:?} is longer than {max} characters, the limit of {why}")]
    TooLong {
        what: &'static str,
        name: String,
        max: usize,
        why: &'static str,
    },
    #[error(
        "{what} {name:?} is not a DNS label: use lowercase letters, digits and '-', \
         starting and ending with a letter or digit"
    )]
    NotALabel { what: &'static str, name: String },
    #[error(
        "{what} {name:?} looks like a version selector (v<major>[-<minor>[-<patch>]]), \
         which would make DNS names such as {name}.<service>.<zone> ambiguous"
    )]
    LooksLikeVersion { what: &'static str, name: String },
}

/// Checks the letter-digit-hyphen rule of RFC 1123 for one label, in lowercase.
/// `max` is the longest the name may be, `why` where that bound comes from.
fn check_label(
    what: &'static str,
    max: usize,
    why: &'static str,
    raw: &str,
) -> Result<(), NameError> {
    if raw.is_empty() {
        return Err(NameError::Empty { what });
    }
    if raw.len() > max {
        return Err(NameError::TooLong {
            what,
            name: raw.to_string(),
            max,
            why,
        });
    }
    let bytes = raw.as_bytes();
    let ok_char = |c: u8| c.is_ascii_lowercase() || c.is_ascii_digit() || c == b'-';
    if !bytes.iter().all(|&c| ok_char(c)) || bytes[0] == b'-' || bytes[bytes.len() - 1] == b'-' {
        return Err(NameError::NotALabel {
            what,
            name: raw.to_string(),
        });
    }
    if VersionSelector::parse(raw).is_some() {
        return Err(NameError::LooksLikeVersion {
            what,
            name: raw.to_string(),
        });
    }
    Ok(())
}

macro_rules! label_newtype {
    ($(#[$doc:meta])* $name:ident, $what:literal, $max:expr, $why:literal, $repr:ty) => {
        $(#[$doc])*
        // Equality is the string's, tested by pointer first (clones of one
        // name are the common case), so hashing the string stays consistent.
        #[allow(clippy::derived_hash_with_manual_eq)]
        #[derive(Clone, Hash, PartialOrd, Ord, Serialize, Deserialize)]
        #[serde(try_from = "String", into = "String")]
        pub struct $name($repr);

        impl $name {
            /// The longest name, in characters (ASCII: also octets).
            pub const MAX_LEN: usize = $max;
        }

        impl PartialEq for $name {
            fn eq(&self, other: &Self) -> bool {
                self.ptr_eq(other) || *self.0 == *other.0
            }
        }

        impl Eq for $name {}

        impl $name {
            /// Validates `raw` (case-insensitively: it is stored in lowercase).
            pub fn new(raw: &str) -> Result<Self, NameError> {
                let lower = raw.to_ascii_lowercase();
                check_label($what, $max, $why, &lower)?;
                Ok(Self(<$repr>::from(lower.into_boxed_str())))
            }

            pub fn as_str(&self) -> &str {
                &self.0
            }

            /// Whether both are clones of one value: a pointer comparison
            /// that implies equality (equal names may still be apart).
            pub fn ptr_eq(&self, other: &Self) -> bool {
                Arc::ptr_eq(&self.0, &other.0)
            }
        }

        impl TryFrom<String> for $name {
            type Error = NameError;
            fn try_from(raw: String) -> Result<Self, NameError> {
                Self::new(&raw)
            }
        }

        impl From<$name> for String {
            fn from(n: $name) -> String {
                n.0.to_string()
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{:?}", self.as_str())
            }
        }
    };
}

// Service and datacenter names are shared by every instance that holds them,
// so a thin pointer (8 bytes, where `Arc<str>` takes 16; one more allocation
// per name) keeps each instance smaller. Instance ids are one per instance:
// there the extra allocation would cost more than the pointer saves.
label_newtype!(
    /// A service name: one DNS label, lowercase, never shaped like a version selector.
    /// Cloning copies a pointer.
    ServiceName,
    "service name",
    MAX_SERVICE_NAME_LEN,
    "a DNS label less the '_' of its SRV name _<service>._tcp",
    Arc<Box<str>>
);
label_newtype!(
    /// A datacenter name: one DNS label, like a service name. Cloning copies
    /// a pointer.
    Datacenter,
    "datacenter",
    MAX_DATACENTER_LEN,
    "a DNS label",
    Arc<Box<str>>
);
label_newtype!(
    /// An instance id, unique within its service: one DNS label, so that
    /// `<id>.<service>.<dc>.<zone>` names the instance. Cloning copies a pointer.
    InstanceId,
    "instance id",
    MAX_INSTANCE_ID_LEN,
    "a DNS label",
    Arc<str>
);

label_newtype!(
    /// The name of a health check, unique within its instance: one DNS
    /// label (it names the check in routes and listings). Cloning copies a
    /// pointer.
    CheckName,
    "check name",
    MAX_LABEL_LEN,
    "a DNS label",
    Arc<str>
);

/// Turns a free-form name (as the Maxine SDKs send them, e.g. `Payment_Service`)
/// into a DNS label of at most `max` characters (`ServiceName::MAX_LEN` or
/// `InstanceId::MAX_LEN`): lowercase, every run of other characters becomes
/// one '-', leading and trailing '-' dropped, cut to `max`, and then an `s-`
/// prefix when the result would look like a version selector (cut again to
/// `max` if the prefix made it longer). The selector test comes after the
/// cut, so a cut can never leave a selector-shaped name. `None` when nothing
/// is left.
pub fn normalize_label(raw: &str, max: usize) -> Option<String> {
    let mut out = String::with_capacity(raw.len());
    let mut pending_dash = false;
    for c in raw.chars() {
        let c = c.to_ascii_lowercase();
        if c.is_ascii_lowercase() || c.is_ascii_digit() {
            if pending_dash && !out.is_empty() {
                out.push('-');
            }
            pending_dash = false;
            out.push(c);
        } else {
            pending_dash = true;
        }
    }
    // Every character is ASCII here, so cutting at a byte is cutting at a char.
    let cut = |s: &mut String| {
        if s.len() > max {
            s.truncate(max);
            while s.ends_with('-') {
                s.pop();
            }
        }
    };
    cut(&mut out);
    if out.is_empty() {
        return None;
    }
    if VersionSelector::parse(&out).is_some() {
        out.insert_str(0, "s-");
        // Still not a selector after this cut: it starts with "s-".
        cut(&mut out);
    }
    Some(out)
}

/// Selects instances by version: `v2` matches every 2.x.y, `v2-1` matches 2.1.x,
/// `v2-1-3` matches 2.1.3 exactly (pre-release and build suffixes aside).
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug, PartialOrd, Ord)]
pub struct VersionSelector {
    parts: [u32; 3],
    len: u8,
}

impl VersionSelector {
    /// Parses a DNS label such as `v2` or `v2-1`. Case-insensitive.
    pub fn parse(label: &str) -> Option<Self> {
        let rest = label.strip_prefix(['v', 'V'])?;
        let mut parts = [0u32; 3];
        let mut len = 0u8;
        for piece in rest.split('-') {
            if len == 3 || piece.is_empty() || !piece.bytes().all(|b| b.is_ascii_digit()) {
                return None;
            }
            parts[len as usize] = piece.parse().ok()?;
            len += 1;
        }
        Some(Self { parts, len })
    }

    /// The numeric prefix of a version string such as `2.1.0` or `v3.0.1-beta`.
    /// `None` when it does not start with a number.
    pub fn numbers_of(version: &str) -> Option<([u32; 3], u8)> {
        let v = version.strip_prefix(['v', 'V']).unwrap_or(version);
        let mut parts = [0u32; 3];
        let mut len = 0u8;
        for piece in v.split('.') {
            let digits: &str = &piece[..piece
                .find(|c: char| !c.is_ascii_digit())
                .unwrap_or(piece.len())];
            if digits.is_empty() || len == 3 {
                break;
            }
            parts[len as usize] = digits.parse().ok()?;
            len += 1;
            if digits.len() != piece.len() {
                break; // "0-beta": the suffix ends the numeric part
            }
        }
        (len > 0).then_some((parts, len))
    }

    /// Every selector that matches `version`: `2.1.0` gives v2, v2-1, v2-1-0.
    pub fn all_for(version: &str) -> Vec<Self> {
        let Some((parts, len)) = Self::numbers_of(version) else {
            return Vec::new();
        };
        (1..=len)
            .map(|l| {
                let mut p = [0u32; 3];
                p[..l as usize].copy_from_slice(&parts[..l as usize]);
                Self { parts: p, len: l }
            })
            .collect()
    }

    /// The selector one part shorter (`v2-1` gives `v2`), which matches
    /// every version this one matches; `None` for a major version alone.
    pub fn parent(&self) -> Option<Self> {
        (self.len > 1).then(|| {
            let mut parts = self.parts;
            parts[self.len as usize - 1] = 0;
            Self {
                parts,
                len: self.len - 1,
            }
        })
    }

    pub fn matches(&self, version: &str) -> bool {
        match Self::numbers_of(version) {
            Some((parts, len)) => {
                len >= self.len && parts[..self.len as usize] == self.parts[..self.len as usize]
            }
            None => false,
        }
    }
}

impl fmt::Display for VersionSelector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "v{}", self.parts[0])?;
        for p in &self.parts[1..self.len as usize] {
            write!(f, "-{p}")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn service_names_are_lowercase_dns_labels() {
        assert_eq!(ServiceName::new("Payments").unwrap().as_str(), "payments");
        assert!(ServiceName::new("pay-ments2").is_ok());
        for bad in ["", "-a", "a-", "a_b", "a.b", "é", &"a".repeat(64)] {
            assert!(ServiceName::new(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn service_names_leave_room_for_the_srv_underscore() {
        assert!(ServiceName::new(&"a".repeat(62)).is_ok());
        let err = ServiceName::new(&"a".repeat(63)).unwrap_err().to_string();
        assert!(err.contains("longer than 62 characters"), "{err}");
        assert!(err.contains("_<service>._tcp"), "{err}");
        assert!(InstanceId::new(&"a".repeat(63)).is_ok());
        assert!(InstanceId::new(&"a".repeat(64)).is_err());
        assert!(Datacenter::new(&"a".repeat(63)).is_ok());
        assert!(Datacenter::new(&"a".repeat(64)).is_err());
    }

    #[test]
    fn names_shaped_like_version_selectors_are_rejected() {
        for bad in ["v2", "V2-1", "v10-0-3"] {
            assert!(matches!(
                ServiceName::new(bad),
                Err(NameError::LooksLikeVersion { .. })
            ));
        }
        assert!(ServiceName::new("v2x").is_ok());
        assert!(ServiceName::new("vault").is_ok());
    }

    #[test]
    fn selectors_match_by_prefix_of_numbers() {
        let v2 = VersionSelector::parse("v2").unwrap();
        let v21 = VersionSelector::parse("v2-1").unwrap();
        assert!(v2.matches("2.1.0") && v2.matches("2") && v2.matches("v2.9.9-rc1"));
        assert!(!v2.matches("20.1.0") && !v2.matches("latest"));
        assert!(v21.matches("2.1.7") && !v21.matches("2.10.0") && !v21.matches("2"));
        assert_eq!(
            VersionSelector::all_for("2.1.0-beta")
                .iter()
                .map(|s| s.to_string())
                .collect::<Vec<_>>(),
            ["v2", "v2-1", "v2-1-0"]
        );
        assert!(VersionSelector::parse("v").is_none());
        assert!(VersionSelector::parse("v1-2-3-4").is_none());
        assert!(VersionSelector::parse("v1--2").is_none());
    }

    #[test]
    fn free_names_normalize_to_labels() {
        let svc = |raw: &str| normalize_label(raw, ServiceName::MAX_LEN);
        assert_eq!(
            svc("Payment_Service v1").as_deref(),
            Some("payment-service-v1")
        );
        assert_eq!(svc("__x__").as_deref(), Some("x"));
        assert_eq!(svc("V2").as_deref(), Some("s-v2"));
        assert_eq!(svc("!!!"), None);
        let long = svc(&"ab-".repeat(40)).unwrap();
        assert!(long.len() <= ServiceName::MAX_LEN && !long.ends_with('-'));
        assert!(ServiceName::new(&long).is_ok());
        let long = svc(&"a".repeat(100)).unwrap();
        assert_eq!(long.len(), ServiceName::MAX_LEN);
        assert!(ServiceName::new(&long).is_ok());
        let id = normalize_label(&"b".repeat(100), InstanceId::MAX_LEN).unwrap();
        assert_eq!(id.len(), InstanceId::MAX_LEN);
        assert!(InstanceId::new(&id).is_ok());
    }

    #[test]
    fn the_selector_rule_applies_after_the_cut() {
        // "v1-2-extra" cut to 4 is "v1-2", shaped like a selector: prefixed,
        // then cut again so that it still fits.
        assert_eq!(normalize_label("v1-2-extra", 4).as_deref(), Some("s-v1"));
        assert_eq!(
            normalize_label("V1_2_3 long tail", 6).as_deref(),
            Some("s-v1-2")
        );
        // A cut that leaves a trailing '-' drops it: "v1-" becomes "v1", a selector.
        assert_eq!(normalize_label("v1--x", 3).as_deref(), Some("s-v"));
        for max in 1..=40 {
            for raw in ["v1-2-3-tail", "V22_33", "v9", "vv1", "x-v1"] {
                if let Some(l) = normalize_label(raw, max) {
                    assert!(l.len() <= max, "{raw} at {max}: {l}");
                    assert!(VersionSelector::parse(&l).is_none(), "{raw} at {max}: {l}");
                    assert!(
                        !l.ends_with('-') && !l.starts_with('-'),
                        "{raw} at {max}: {l}"
                    );
                }
            }
        }
    }
}
