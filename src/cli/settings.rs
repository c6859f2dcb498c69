//! The flags of `maxine serve` (and the store flags of `snapshot restore`),
//! one clap `Arg` per row of the settings table, and the loading of the
//! configuration from the file, the process environment and those flags.

use std::collections::BTreeMap;
use std::marker::PhantomData;
use std::path::PathBuf;

use anyhow::Context;
use clap::{Arg, ArgAction, ArgMatches};

use maxine::config::{Config, Kind, SETTINGS, Setting, Sources};

/// Which rows a command offers as flags.
pub trait Scope {
    fn has(s: &Setting) -> bool;
    /// Text after the flags in `--help`.
    fn after_help() -> Option<String> {
        None
    }
}

/// `maxine serve`: every row that has a flag.
pub enum Serve {}

impl Scope for Serve {
    fn has(_: &Setting) -> bool {
        true
    }

    fn after_help() -> Option<String> {
        let mut text = String::from(
            "Each flag overrides its variable, which overrides the --config file, which \
             overrides the default.\n\nSettings without a flag (a variable, or the key in the \
             --config file):\n",
        );
        for s in SETTINGS.iter().filter(|s| !s.has_flag) {
            text.push_str(&format!("  {} ({}): {}", s.env, s.key, s.summary()));
            if let Some(d) = s.default {
                text.push_str(&format!(" [default: {d}]"));
            }
            text.push('\n');
        }
        Some(text)
    }
}

/// `maxine snapshot restore`: where the store is.
pub enum Store {}

impl Scope for Store {
    fn has(s: &Setting) -> bool {
        matches!(s.key, "data_dir" | "store")
    }
}

/// `--config` and the setting flags of one command, as given.
pub struct SettingArgs<S> {
    pub config: Option<PathBuf>,
    /// (TOML key, value) of each flag given.
    pub flags: Vec<(&'static str, String)>,
    scope: PhantomData<S>,
}

pub type ServeArgs = SettingArgs<Serve>;
pub type StoreArgs = SettingArgs<Store>;

fn rows<S: Scope>() -> impl Iterator<Item = &'static Setting> {
    SETTINGS.iter().filter(|s| s.has_flag && S::has(s))
}

/// `--federation-peer NAME=URL`, repeatable: the one flag that is not a
/// row of the table (a list given one item per flag).
const PEER_FLAG: &str = "federation-peer";

fn offers_peer_flag<S: Scope>() -> bool {
    Setting::find("federation.peers").is_some_and(S::has)
}

/// A row's help line, with its variables and default.
fn help(s: &Setting) -> String {
    let mut h = format!("{} [env: {}", s.summary(), s.env);
    if let Some(alias) = s.alias {
        h.push_str(&format!(" or {alias}"));
    }
    h.push(']');
    if let Some(d) = s.default {
        h.push_str(&format!(" [default: {d}]"));
    }
    h
}

impl<S: Scope> SettingArgs<S> {
    /// The configuration from the `--config` file, the process environment
    /// and these flags.
    pub fn load(&self) -> anyhow::Result<Config> {
        let file = match &self.config {
            Some(p) => Some((
                p.clone(),
                std::fs::read_to_string(p)
                    .with_context(|| format!("cannot read config file {}", p.display()))?,
            )),
            None => None,
        };
        let env: BTreeMap<String, String> = std::env::vars()
            .filter(|(k, _)| Sources::reads_env(k))
            .collect();
        Ok(Config::load(Sources {
            file,
            env,
            flags: self.flags.clone(),
        })?)
    }
}

impl<S: Scope> clap::Args for SettingArgs<S> {
    fn augment_args(mut cmd: clap::Command) -> clap::Command {
        cmd = cmd.arg(
            Arg::new("config")
                .long("config")
                .value_name("FILE")
                .value_parser(clap::value_parser!(PathBuf))
                .help("TOML config file; unknown keys are an error"),
        );
        for s in rows::<S>() {
            let flag = s.flag().expect("rows with a flag");
            let arg = Arg::new(s.key).long(flag).help(help(s));
            cmd = cmd.arg(match s.kind {
                Kind::Bool => arg.action(ArgAction::SetTrue),
                Kind::Integer => arg.value_name("N"),
                Kind::Duration => arg.value_name("DURATION"),
                Kind::List => arg.value_name("A,B,..."),
                Kind::Text => arg.value_name(
                    s.key
                        .rsplit('.')
                        .next()
                        .unwrap_or(s.key)
                        .to_ascii_uppercase(),
                ),
            });
        }
        if offers_peer_flag::<S>() {
            cmd = cmd.arg(
                Arg::new(PEER_FLAG)
                    .long(PEER_FLAG)
                    .value_name("NAME=URL")
                    .action(ArgAction::Append)
                    .help(
                        "A peer datacenter's API (repeatable); adds to federation.peers \
                         [env: MAXINE_FEDERATION_PEERS]",
                    ),
            );
        }
        match S::after_help() {
            Some(text) => cmd.after_help(text),
            None => cmd,
        }
    }

    fn augment_args_for_update(cmd: clap::Command) -> clap::Command {
        Self::augment_args(cmd)
    }
}

impl<S: Scope> clap::FromArgMatches for SettingArgs<S> {
    fn from_arg_matches(m: &ArgMatches) -> Result<Self, clap::Error> {
        let mut flags = Vec::new();
        for s in rows::<S>() {
            if s.kind == Kind::Bool {
                if m.get_flag(s.key) {
                    flags.push((s.key, "true".to_string()));
                }
            } else if let Some(v) = m.get_one::<String>(s.key) {
                flags.push((s.key, v.clone()));
            }
        }
        if offers_peer_flag::<S>()
            && let Some(peers) = m.get_many::<String>(PEER_FLAG)
        {
            let peers: Vec<&str> = peers.map(String::as_str).collect();
            flags.push(("federation.peers", peers.join(",")));
        }
        Ok(Self {
            config: m.get_one::<PathBuf>("config").cloned(),
            flags,
            scope: PhantomData,
        })
    }

    fn update_from_arg_matches(&mut self, m: &ArgMatches) -> Result<(), clap::Error> {
        *self = Self::from_arg_matches(m)?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::{Args, FromArgMatches};

    fn parse<S: Scope>(args: &[&str]) -> SettingArgs<S> {
        let cmd = SettingArgs::<S>::augment_args(clap::Command::new("t").no_binary_name(true));
        SettingArgs::from_arg_matches(&cmd.try_get_matches_from(args).unwrap()).unwrap()
    }

    #[test]
    fn every_flag_is_passed_on_under_its_toml_key() {
        let a = parse::<Serve>(&[
            "--config",
            "m.toml",
            "--dns-addr",
            "127.0.0.1:53",
            "--datacenter",
            "eu1",
            "--insecure-http",
            "--dns-ttl",
            "30s",
        ]);
        assert_eq!(a.config, Some(PathBuf::from("m.toml")));
        assert_eq!(
            a.flags,
            [
                ("datacenter", "eu1".to_string()),
                ("dns.addr", "127.0.0.1:53".into()),
                ("dns.ttl", "30s".into()),
                ("http.insecure_http", "true".into()),
            ]
        );
        assert!(parse::<Serve>(&[]).flags.is_empty());
    }

    #[test]
    fn restore_offers_only_the_store_flags() {
        let a = parse::<Store>(&["--data-dir", "/d", "--store", "memory"]);
        assert_eq!(
            a.flags,
            [("data_dir", "/d".to_string()), ("store", "memory".into())]
        );
        let cmd = StoreArgs::augment_args(clap::Command::new("t").no_binary_name(true));
        assert!(cmd.try_get_matches_from(["--dns-addr", "x"]).is_err());
    }
}
