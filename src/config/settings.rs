//! The machinery behind the one declaration of every setting (in
//! `wire.rs`): a [`Setting`] row per leaf key, the `settings!` macro that
//! turns the declaration into serde wire types and the [`SETTINGS`] table,
//! and the reading of text (a variable, a flag, a default) as a TOML value
//! of the setting's kind.
//!
//! The table drives the sources (variables, flags) and the documentation;
//! what a value may be is decided by `Config::validate` alone.

use super::{ConfigError, DurationValue};

pub use super::wire::SETTINGS;

/// One leaf setting: its TOML key, variable, flag, default and help line.
#[derive(Clone, Copy, Debug)]
pub struct Setting {
    /// Dotted TOML key, e.g. `dns.addr`. Flags are passed on under it.
    pub key: &'static str,
    /// The `MAXINE_*` variable.
    pub env: &'static str,
    /// An older variable that sets it too; the `MAXINE_*` one wins.
    pub alias: Option<&'static str>,
    /// Whether `maxine serve` has a flag for it: [`Setting::flag`].
    pub has_flag: bool,
    pub kind: Kind,
    /// The default as written in TOML and in docs/config.md; `None`: unset.
    pub default: Option<&'static str>,
    /// One line of documentation, as written after its `///`; see
    /// [`Setting::summary`].
    pub doc: &'static str,
}

impl Setting {
    /// The line of documentation for `--help`: trimmed, no final period.
    pub fn summary(&self) -> &'static str {
        self.doc.trim().trim_end_matches('.')
    }

    /// The long flag, named after the variable: `MAXINE_DNS_ADDR` is
    /// `dns-addr` (given as `--dns-addr`).
    pub fn flag(&self) -> Option<String> {
        self.has_flag.then(|| {
            self.env
                .trim_start_matches("MAXINE_")
                .to_ascii_lowercase()
                .replace('_', "-")
        })
    }

    /// The row for `key`, if there is one.
    pub fn find(key: &str) -> Option<&'static Setting> {
        SETTINGS.iter().find(|s| s.key == key)
    }

    /// Reads `text` (from a variable, a flag or the default) as a TOML value
    /// of this setting's kind.
    pub fn value(&self, text: &str) -> Result<toml::Value, ConfigError> {
        let invalid = |what: &str| ConfigError::Invalid {
            key: self.key,
            message: format!("{text:?} is not {what}"),
        };
        Ok(match self.kind {
            Kind::Text => toml::Value::String(text.to_string()),
            Kind::Integer => {
                toml::Value::Integer(text.trim().parse().map_err(|_| invalid("a whole number"))?)
            }
            Kind::Bool => match text.trim() {
                "true" => toml::Value::Boolean(true),
                "false" => toml::Value::Boolean(false),
                _ => return Err(invalid("true or false")),
            },
            // Comma-separated; TOML files give an array.
            Kind::List => toml::Value::Array(
                text.split(',')
                    .map(str::trim)
                    .filter(|t| !t.is_empty())
                    .map(|t| toml::Value::String(t.to_string()))
                    .collect(),
            ),
            // A number of seconds, or text such as "30s" for DurationValue.
            Kind::Duration => match text.trim().parse::<i64>() {
                Ok(n) => toml::Value::Integer(n),
                Err(_) => toml::Value::String(text.to_string()),
            },
        })
    }
}

/// How a setting's text is read.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Text,
    Integer,
    /// `true` or `false`; as a flag, a switch that sets `true`.
    Bool,
    Duration,
    /// A list of text values: comma-separated in variables and flags.
    List,
}

/// The kind of a wire field's type.
pub trait WireKind {
    const KIND: Kind;
}

macro_rules! wire_kind {
    ($($ty:ty => $kind:ident),* $(,)?) => {
        $(impl WireKind for $ty { const KIND: Kind = Kind::$kind; })*
    };
}

wire_kind! {
    String => Text,
    std::path::PathBuf => Text,
    bool => Bool,
    u8 => Integer,
    u32 => Integer,
    usize => Integer,
    DurationValue => Duration,
    Vec<String> => List,
    super::PeerList => List,
}

impl<T: WireKind> WireKind for Option<T> {
    const KIND: Kind = T::KIND;
}

/// The declared default of a field, as its wire type.
pub(super) fn default_value<T: WireKind + serde::de::DeserializeOwned>(key: &str) -> T {
    let s = Setting::find(key).expect("every field has a row");
    let text = s.default.expect("called only for rows with a default");
    s.value(text)
        .ok()
        .and_then(|v| v.try_into().ok())
        .unwrap_or_else(|| panic!("the default of {key}, {text:?}, does not parse"))
}

/// Declares wire sections: each becomes a `#[serde(deny_unknown_fields)]`
/// struct whose `Default` comes from the declared defaults, and each leaf
/// field a row of `SETTINGS`, in declaration order. A leaf reads
///
/// ```text
/// /// One line of documentation.
/// name: Type [= "default"], "MAXINE_VARIABLE" [or "ALIAS"] [, flag];
/// ```
///
/// and a section's nested sections follow its leaves in `sections { .. }`.
macro_rules! settings {
    ($(
        $(#[doc = $sdoc:literal])+
        $name:ident $prefix:literal {
            $(
                #[doc = $doc:literal]
                $field:ident: $ty:ty $(= $default:literal)?, $env:literal $(or $alias:literal)? $(, $flag:ident)?;
            )*
        } $(sections {
            $(
                #[doc = $subdoc:literal]
                $sub:ident: $subty:ident,
            )*
        })?
    )*) => {
        $(
            $(#[doc = $sdoc])*
            #[derive(serde::Deserialize, Debug)]
            #[serde(deny_unknown_fields, default)]
            pub struct $name {
                $(
                    #[doc = $doc]
                    $(#[doc = concat!("\n\nDefault `", $default, "`.")])?
                    pub $field: $ty,
                )*
                $($(
                    #[doc = $subdoc]
                    pub $sub: $subty,
                )*)?
            }

            impl Default for $name {
                fn default() -> Self {
                    Self {
                        $($field: settings!(@default $ty, concat!($prefix, stringify!($field)) $(, $default)?),)*
                        $($($sub: <$subty>::default(),)*)?
                    }
                }
            }
        )*

        /// Every leaf setting, in the order of the declaration.
        pub const SETTINGS: &[$crate::config::Setting] = &[$($(
            $crate::config::Setting {
                key: concat!($prefix, stringify!($field)),
                env: $env,
                alias: settings!(@opt $($alias)?),
                has_flag: settings!(@flag $($flag)?),
                kind: <$ty as $crate::config::settings::WireKind>::KIND,
                default: settings!(@opt $($default)?),
                doc: $doc,
            },
        )*)*];
    };
    (@default $ty:ty, $key:expr) => { <$ty as Default>::default() };
    (@default $ty:ty, $key:expr, $default:literal) => {
        $crate::config::settings::default_value::<$ty>($key)
    };
    (@opt) => { None };
    (@opt $v:literal) => { Some($v) };
    (@flag) => { false };
    (@flag flag) => { true };
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_row_has_a_maxine_variable_and_a_one_line_doc() {
        for s in SETTINGS {
            assert!(s.env.starts_with("MAXINE_"), "{}: {}", s.key, s.env);
            assert!(
                !s.doc.trim().is_empty() && !s.doc.contains('\n'),
                "{}",
                s.key
            );
            assert_eq!(
                SETTINGS.iter().filter(|o| o.env == s.env).count(),
                1,
                "{} is declared twice",
                s.env
            );
        }
    }

    /// A switch can only turn a setting on, so it must default to off.
    #[test]
    fn flags_of_true_or_false_settings_are_switches_that_default_to_off() {
        for s in SETTINGS
            .iter()
            .filter(|s| s.has_flag && s.kind == Kind::Bool)
        {
            assert_eq!(s.default, Some("false"), "{}", s.key);
        }
    }

    #[test]
    fn every_default_parses_as_its_field() {
        // ConfigFile::default() reads every declared default.
        let _ = super::super::ConfigFile::default();
    }

    /// docs/config.md lists every setting, in table order, with exactly its
    /// key, flag, variables and default.
    #[test]
    fn the_settings_table_in_docs_config_md_matches_the_declaration() {
        let doc = include_str!("../../docs/config.md");
        let rows: Vec<Vec<String>> = doc
            .split("## Settings")
            .nth(1)
            .expect("docs/config.md has a Settings section")
            .lines()
            .skip_while(|l| !l.starts_with('|'))
            .take_while(|l| l.starts_with('|'))
            .skip(2) // header and |---|
            .map(|l| {
                l.trim_matches('|')
                    .split('|')
                    .take(4)
                    .map(|c| c.trim().to_string())
                    .collect()
            })
            .collect();
        let code = |s: &str| format!("`{s}`");
        let expected: Vec<Vec<String>> = SETTINGS
            .iter()
            .map(|s| {
                let mut env = code(s.env);
                if let Some(a) = s.alias {
                    env = format!("{env}, {}", code(a));
                }
                vec![
                    code(s.key),
                    s.flag()
                        .map(|f| code(&format!("--{f}")))
                        .unwrap_or_default(),
                    env,
                    s.default.map(code).unwrap_or_default(),
                ]
            })
            .collect();
        for (i, want) in expected.iter().enumerate() {
            assert_eq!(
                rows.get(i),
                Some(want),
                "docs/config.md row {} must read | {} | (key | flag | environment | default)",
                i + 1,
                want.join(" | ")
            );
        }
        assert_eq!(
            rows.len(),
            expected.len(),
            "docs/config.md lists settings that do not exist"
        );
    }
}
