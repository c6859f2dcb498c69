//! Where things live under the prefix of an etcd store.
//!
//! ```text
//!   <prefix>/r/i/<dc>/<service>/<id>   an instance: its codec record (store::codec)
//!   <prefix>/r/a/policy/<name>         access-control objects: codec records
//!   <prefix>/r/a/token/<accessor>
//!   <prefix>/r/a/user/<name>
//!   <prefix>/r/a/bootstrap             the bootstrap mark
//!   <prefix>/r/s/<dc>/<service>        a service's settings (strategy, panic threshold)
//!   <prefix>/r/k/<key>                 a key/value entry (the key is a path)
//!   <prefix>/hb/<node>/<part>          a node's heartbeat summary (its lease)
//!   <prefix>/leader                    the expiry leader's node name (its lease)
//! ```
//!
//! Everything a node mirrors is under `<prefix>/r/`, which it watches; the
//! heartbeat and leader keys change every second and stay out of that
//! range. Datacenter and service names are DNS labels (no `/`); an
//! instance id is the rest of the key.

use crate::core::{AclKey, BlacklistTarget, Datacenter, InstanceId, ServiceKey, ServiceName};

/// The key layout of one prefix.
#[derive(Clone, Debug)]
pub struct Keys {
    /// Without a trailing `/`.
    prefix: String,
}

/// What a key under `<prefix>/r/` names.
#[derive(Debug, PartialEq, Eq)]
pub enum Target {
    Instance(ServiceKey, InstanceId),
    Acl(AclKey),
}

impl Keys {
    pub fn new(prefix: &str) -> Self {
        let trimmed = prefix.trim_end_matches('/');
        let prefix = if trimmed.starts_with('/') {
            trimmed.to_string()
        } else {
            format!("/{trimmed}")
        };
        Self { prefix }
    }

    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// The range every node mirrors.
    pub fn data(&self) -> String {
        format!("{}/r/", self.prefix)
    }

    pub fn instance(&self, key: &ServiceKey, id: &InstanceId) -> String {
        format!(
            "{}/r/i/{}/{}/{}",
            self.prefix,
            key.dc.as_str(),
            key.service.as_str(),
            id.as_str()
        )
    }

    pub fn acl(&self, key: &AclKey) -> String {
        match key {
            AclKey::Policy(n) => format!("{}/r/a/policy/{n}", self.prefix),
            AclKey::Token(a) => format!("{}/r/a/token/{a}", self.prefix),
            AclKey::User(n) => format!("{}/r/a/user/{n}", self.prefix),
            AclKey::Bootstrap => format!("{}/r/a/bootstrap", self.prefix),
            AclKey::Service(k) => format!(
                "{}/r/s/{}/{}",
                self.prefix,
                k.dc.as_str(),
                k.service.as_str()
            ),
            AclKey::Kv(k) => format!("{}/r/k/{}", self.prefix, k.as_str()),
            // `*` and service names hold no '/'.
            AclKey::Intention(s, d) => format!("{}/r/a/intention/{s}/{d}", self.prefix),
            AclKey::DnsClient(n) => format!("{}/r/a/dns-client/{n}", self.prefix),
            // Key names are DNS names: no '/'.
            AclKey::TsigKey(n) => format!("{}/r/a/tsig-key/{n}", self.prefix),
            AclKey::Blacklist(t) => match t {
                BlacklistTarget::Service(s) => {
                    format!("{}/r/a/blacklist-service/{s}", self.prefix)
                }
                BlacklistTarget::Instance(s, i) => {
                    format!("{}/r/a/blacklist-instance/{s}/{i}", self.prefix)
                }
                // The network as `10.0.0.0-8`: a key part holds no '/'.
                BlacklistTarget::Cidr(c) => format!(
                    "{}/r/a/blacklist-cidr/{}",
                    self.prefix,
                    c.to_string().replace('/', "-")
                ),
            },
        }
    }

    /// The range of every node's heartbeat summaries.
    pub fn heartbeats(&self) -> String {
        format!("{}/hb/", self.prefix)
    }

    /// The first key of `node`'s summary parts.
    pub fn heartbeat_part(&self, node: &str, part: usize) -> String {
        format!("{}/hb/{node}/{part:04}", self.prefix)
    }

    /// The range of `node`'s summary parts.
    pub fn heartbeat_node(&self, node: &str) -> String {
        format!("{}/hb/{node}/", self.prefix)
    }

    /// The node (name) a summary key belongs to.
    pub fn heartbeat_owner<'a>(&self, key: &'a str) -> Option<&'a str> {
        let rest = key.strip_prefix(&self.heartbeats())?;
        rest.split('/').next()
    }

    pub fn leader(&self) -> String {
        format!("{}/leader", self.prefix)
    }

    /// What a mirrored key names; `None` for a key Maxine did not write.
    pub fn parse(&self, key: &[u8]) -> Option<Target> {
        let key = std::str::from_utf8(key).ok()?;
        let rest = key.strip_prefix(&self.data())?;
        if let Some(rest) = rest.strip_prefix("i/") {
            let mut parts = rest.splitn(3, '/');
            let dc = Datacenter::new(parts.next()?).ok()?;
            let service = ServiceName::new(parts.next()?).ok()?;
            let id = InstanceId::new(parts.next()?).ok()?;
            return Some(Target::Instance(ServiceKey::new(dc, service), id));
        }
        if let Some(rest) = rest.strip_prefix("s/") {
            let (dc, service) = rest.split_once('/')?;
            let dc = Datacenter::new(dc).ok()?;
            let service = ServiceName::new(service).ok()?;
            return Some(Target::Acl(AclKey::Service(ServiceKey::new(dc, service))));
        }
        if let Some(rest) = rest.strip_prefix("k/") {
            let key = crate::core::KvKey::new(rest).ok()?;
            return Some(Target::Acl(AclKey::Kv(key)));
        }
        let rest = rest.strip_prefix("a/")?;
        if rest == "bootstrap" {
            return Some(Target::Acl(AclKey::Bootstrap));
        }
        let (kind, name) = rest.split_once('/')?;
        let name = name.to_string();
        Some(Target::Acl(match kind {
            "policy" => AclKey::Policy(name),
            "token" => AclKey::Token(name),
            "user" => AclKey::User(name),
            "dns-client" => AclKey::DnsClient(name),
            "tsig-key" => AclKey::TsigKey(name),
            "blacklist-service" => {
                AclKey::Blacklist(BlacklistTarget::Service(ServiceName::new(&name).ok()?))
            }
            "blacklist-instance" => {
                let (s, i) = name.split_once('/')?;
                AclKey::Blacklist(BlacklistTarget::Instance(
                    ServiceName::new(s).ok()?,
                    InstanceId::new(i).ok()?,
                ))
            }
            "blacklist-cidr" => AclKey::Blacklist(BlacklistTarget::Cidr(
                crate::core::Cidr::parse_path(&name).ok()?,
            )),
            "intention" => {
                let (s, d) = name.split_once('/')?;
                use crate::core::intention::Side;
                AclKey::Intention(Side::parse(s).ok()?, Side::parse(d).ok()?)
            }
            _ => return None,
        }))
    }
}

/// The first key after every key that starts with `prefix` (etcd's range end).
pub fn range_end(prefix: &str) -> Vec<u8> {
    let mut end = prefix.as_bytes().to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return end;
        }
    }
    vec![0]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_parse_back_to_what_they_name() {
        let keys = Keys::new("maxine/");
        assert_eq!(keys.prefix(), "/maxine");
        let key = ServiceKey::new(
            Datacenter::new("dc1").unwrap(),
            ServiceName::new("pay").unwrap(),
        );
        let id = InstanceId::new("pay-1").unwrap();
        let k = keys.instance(&key, &id);
        assert_eq!(k, "/maxine/r/i/dc1/pay/pay-1");
        assert_eq!(
            keys.parse(k.as_bytes()),
            Some(Target::Instance(key.clone(), id))
        );
        assert_eq!(
            keys.acl(&AclKey::Kv(crate::core::KvKey::new("a/b").unwrap())),
            "/maxine/r/k/a/b"
        );
        for acl in [
            AclKey::Bootstrap,
            AclKey::Token("abc".into()),
            AclKey::Policy("p".into()),
            AclKey::User("u".into()),
            AclKey::Service(key.clone()),
            AclKey::Kv(crate::core::KvKey::new("app/payments/timeout").unwrap()),
            AclKey::Blacklist(BlacklistTarget::Service(ServiceName::new("web").unwrap())),
            AclKey::Blacklist(BlacklistTarget::Instance(
                ServiceName::new("web").unwrap(),
                InstanceId::new("web-1").unwrap(),
            )),
            AclKey::Blacklist(BlacklistTarget::Cidr(
                crate::core::Cidr::parse("10.9.0.0/16").unwrap(),
            )),
            AclKey::Blacklist(BlacklistTarget::Cidr(
                crate::core::Cidr::parse("fd00::/8").unwrap(),
            )),
        ] {
            assert_eq!(
                keys.parse(keys.acl(&acl).as_bytes()),
                Some(Target::Acl(acl))
            );
        }
        assert_eq!(keys.parse(b"/maxine/hb/n1/0000"), None);
        assert_eq!(range_end("/a/"), b"/a0".to_vec());
        assert_eq!(keys.heartbeat_owner("/maxine/hb/n1/0003"), Some("n1"));
    }
}
