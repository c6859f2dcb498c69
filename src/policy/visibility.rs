//! What a DNS asker may see: pure decisions over read rules and
//! intentions, for the asker kinds of `crate::askers` (an instance's
//! service identities, a DNS client network's policies, anonymous).
//!
//! A service is seen whole or not at all (docs/adr/0011-asker-classes.md).

use std::collections::HashMap;

use crate::core::{Access, ServiceName};

use super::intentions::Intentions;
use super::{Decision, DefaultPolicy, Grants, Resource, decide};

/// What decides an asker's view: the configuration's defaults.
#[derive(Clone, Copy, Debug)]
pub struct Defaults {
    /// The ACL default policy (read rules).
    pub acl: DefaultPolicy,
    /// `intentions.default`.
    pub intentions: DefaultPolicy,
}

/// Who an asker is, as far as visibility goes.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum ClassKey {
    /// The services of the registered instances at the asker's address
    /// (usually one; several services on one host share an address).
    Identity(Box<[ServiceName]>),
    /// An operator-declared DNS client network, by name.
    Client(String),
    Anonymous,
}

/// The rules as of one moment: intentions, the grants of each client
/// network and of the anonymous token, and the defaults.
#[derive(Clone, Debug)]
pub struct Visibility {
    pub defaults: Defaults,
    pub intentions: Intentions,
    /// Grants by client network name.
    pub client_grants: HashMap<String, Grants>,
    pub anonymous_grants: Grants,
}

impl Visibility {
    /// Whether nothing restricts anyone: no intentions, no client
    /// networks, both defaults allow, an anonymous token without policies.
    pub fn is_open(&self) -> bool {
        self.intentions.is_empty()
            && self.client_grants.is_empty()
            && self.defaults.acl == DefaultPolicy::Allow
            && self.defaults.intentions == DefaultPolicy::Allow
            && self.anonymous_grants.policies.is_empty()
    }

    /// Whether askers of `key` may see `service`. Several identities see
    /// only what every one of them may see.
    pub fn visible(&self, key: &ClassKey, service: &ServiceName) -> bool {
        let read = |g: &Grants| {
            decide(
                g,
                self.defaults.acl,
                Resource::Service(service.as_str()),
                Access::Read,
            ) == Decision::Allow
        };
        match key {
            ClassKey::Identity(sources) => sources.iter().all(|s| {
                // A service identity reads every service; the intention
                // between the two decides.
                let g = Grants {
                    policies: Vec::new(),
                    service: Some(s.clone()),
                };
                read(&g) && self.intentions.allows(s, service)
            }),
            ClassKey::Client(name) => self.client_grants.get(name).is_some_and(read),
            ClassKey::Anonymous => read(&self.anonymous_grants),
        }
    }
}
