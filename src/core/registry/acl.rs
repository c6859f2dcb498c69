//! The registry's access-control table: policies, tokens, sign-in users and
//! the bootstrap mark, changed by [`Change::Acl`](super::Change) under the
//! same write lock and index sequence as instances.
//!
//! Reads are lock-free (`papaya` maps): a request's token is found by the
//! SHA-256 of its secret without touching the write lock, so checking
//! credentials costs the heartbeat path no lock at all.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use super::super::acl::{
    ANONYMOUS, AclChange, AclError, AclKey, AclObject, Bootstrap, Owner, Policy, Token, User,
    builtin_policies, is_builtin_policy,
};
use super::super::change::{AclEvent, Actor, Batch, Context, Origin};
use super::super::kv::{KvChange, KvEntry, KvKey};
use super::{MAX_INDEX, Registry, RegistryError, ServiceKey, WriteState};

/// The lock-free side of the table.
pub(super) struct AclMaps {
    pub(super) objects: papaya::HashMap<AclKey, AclObject, super::FastHash>,
    pub(super) by_secret: papaya::HashMap<[u8; 32], Arc<Token>, super::FastHash>,
    /// Tokens by accessor, read without building a key (the anonymous
    /// token is read by every request without a credential).
    by_accessor: papaya::HashMap<Box<str>, Arc<Token>, super::FastHash>,
    /// Index of the latest access-control change: caches of decisions
    /// (per token) are valid while it stays the same.
    pub(super) index: std::sync::atomic::AtomicU64,
    builtins: Vec<Arc<Policy>>,
    /// The anonymous token until an operator changes it (one copy: every
    /// request without a credential reads it).
    anonymous: Arc<Token>,
    /// The blacklist entries, and the networks among them (copies of
    /// those objects, so that a registration and the expiry driver read
    /// them without scanning every object).
    blacklist: papaya::HashMap<
        crate::core::BlacklistTarget,
        Arc<crate::core::BlacklistEntry>,
        super::FastHash,
    >,
    blacklisted_cidrs:
        papaya::HashMap<crate::core::Cidr, Arc<crate::core::BlacklistEntry>, super::FastHash>,
}

impl AclMaps {
    pub(super) fn new() -> Self {
        Self {
            objects: papaya::HashMap::with_hasher(Default::default()),
            by_secret: papaya::HashMap::with_hasher(Default::default()),
            by_accessor: papaya::HashMap::with_hasher(Default::default()),
            index: Default::default(),
            builtins: builtin_policies().into_iter().map(Arc::new).collect(),
            anonymous: Arc::new(Token::anonymous()),
            blacklist: papaya::HashMap::with_hasher(Default::default()),
            blacklisted_cidrs: papaya::HashMap::with_hasher(Default::default()),
        }
    }
}

/// Instances held per owner (`None`: registered without a token of one's
/// own), for quotas. Kept under the write lock.
pub(super) type Holdings = HashMap<Option<Owner>, u32>;

/// An access-control change to undo, for [`Registry::revert_acl`].
#[derive(Debug)]
pub struct AclRevert {
    pub key: AclKey,
    /// The value to go back to (`None`: it did not exist).
    pub to: Option<AclObject>,
}

impl Registry {
    /// A stored object.
    pub fn acl_object(&self, key: &AclKey) -> Option<AclObject> {
        self.inner.acl.objects.pin().get(key).cloned()
    }

    /// Every stored object, by key (key/value entries too: a backup holds
    /// them); built-in policies are not stored.
    pub fn acl_objects(&self) -> Vec<AclObject> {
        let mut all: Vec<_> = self.inner.acl.objects.pin().values().cloned().collect();
        all.sort_by_key(|o| o.key());
        all
    }

    /// The token whose secret hashes to `hash`.
    pub fn token_by_secret_hash(&self, hash: &[u8; 32]) -> Option<Arc<Token>> {
        self.inner.acl.by_secret.pin().get(hash).cloned()
    }

    pub fn token(&self, accessor: &str) -> Option<Arc<Token>> {
        self.inner.acl.by_accessor.pin().get(accessor).cloned()
    }

    /// The token of requests without a credential: as the operator last
    /// set it, or without policies.
    pub fn anonymous_token(&self) -> Arc<Token> {
        self.token(ANONYMOUS)
            .unwrap_or_else(|| self.inner.acl.anonymous.clone())
    }

    /// A policy by name: stored, or built in.
    pub fn policy(&self, name: &str) -> Option<Arc<Policy>> {
        if let Some(b) = self.inner.acl.builtins.iter().find(|p| p.name == name) {
            return Some(b.clone());
        }
        match self.acl_object(&AclKey::Policy(name.to_string()))? {
            AclObject::Policy(p) => Some(p),
            _ => None,
        }
    }

    /// Built-in policies, then stored ones, by name.
    pub fn policies(&self) -> Vec<Arc<Policy>> {
        let mut all = self.inner.acl.builtins.clone();
        all.extend(self.acl_objects().into_iter().filter_map(|o| match o {
            AclObject::Policy(p) => Some(p),
            _ => None,
        }));
        all
    }

    /// The stored objects `pick` takes, in no order (a scan of them all).
    fn objects_of<T>(&self, pick: impl Fn(&AclObject) -> Option<Arc<T>>) -> Vec<Arc<T>> {
        self.inner
            .acl
            .objects
            .pin()
            .values()
            .filter_map(pick)
            .collect()
    }

    /// Every intention, by (source, destination).
    pub fn intentions(&self) -> Vec<Arc<crate::core::Intention>> {
        let mut all = self.objects_of(|o| match o {
            AclObject::Intention(i) => Some(i.clone()),
            _ => None,
        });
        all.sort_by(|a, b| (&a.source, &a.destination).cmp(&(&b.source, &b.destination)));
        all
    }

    /// Every blacklist entry, in key order.
    pub fn blacklist(&self) -> Vec<Arc<crate::core::BlacklistEntry>> {
        let mut all: Vec<_> = self.inner.acl.blacklist.pin().values().cloned().collect();
        all.sort_by(|a, b| a.target.cmp(&b.target));
        all
    }

    /// The blacklist entry that refuses registering instance `id` of
    /// `service` at `addresses`, if one does: two lookups, and a scan of
    /// the blacklisted networks when there are any.
    pub fn blacklisted(
        &self,
        service: &crate::core::ServiceName,
        id: &crate::core::InstanceId,
        addresses: &[std::net::IpAddr],
    ) -> Option<Arc<crate::core::BlacklistEntry>> {
        use crate::core::BlacklistTarget as T;
        let blacklist = self.inner.acl.blacklist.pin();
        if blacklist.is_empty() {
            return None;
        }
        for key in [
            T::Service(service.clone()),
            T::Instance(service.clone(), id.clone()),
        ] {
            if let Some(b) = blacklist.get(&key) {
                return Some(b.clone());
            }
        }
        let cidrs = self.inner.acl.blacklisted_cidrs.pin();
        if cidrs.is_empty() || addresses.is_empty() {
            return None;
        }
        cidrs
            .iter()
            .filter(|(c, _)| addresses.iter().any(|ip| c.contains(*ip)))
            .max_by_key(|(c, _)| c.prefix())
            .map(|(_, b)| b.clone())
    }

    /// Every DNS client network, by name.
    pub fn dns_clients(&self) -> Vec<Arc<crate::core::DnsClient>> {
        let mut all = self.objects_of(|o| match o {
            AclObject::DnsClient(c) => Some(c.clone()),
            _ => None,
        });
        all.sort_by(|a, b| a.name.cmp(&b.name));
        all
    }

    /// Every TSIG key, by name.
    pub fn tsig_keys(&self) -> Vec<Arc<crate::core::TsigKey>> {
        let mut all = self.objects_of(|o| match o {
            AclObject::TsigKey(k) => Some(k.clone()),
            _ => None,
        });
        all.sort_by(|a, b| a.name.cmp(&b.name));
        all
    }

    pub fn user(&self, name: &str) -> Option<Arc<User>> {
        match self.acl_object(&AclKey::User(name.to_string()))? {
            AclObject::User(u) => Some(u),
            _ => None,
        }
    }

    pub fn bootstrapped(&self) -> Option<Arc<Bootstrap>> {
        match self.acl_object(&AclKey::Bootstrap)? {
            AclObject::Bootstrap(b) => Some(b),
            _ => None,
        }
    }

    /// Index of the latest access-control change (0: none yet).
    pub fn acl_index(&self) -> u64 {
        self.inner.acl.index.load(Ordering::Acquire)
    }

    /// How many instances `owner` holds (`None`: those registered without
    /// a token of their own).
    pub fn holdings(&self, owner: Option<&str>) -> u32 {
        let w = self.lock();
        holding(&w, owner)
    }

    /// What an access-control change makes: the objects to put (`Some`) or
    /// remove (`None`), by key. Refused when it contradicts the table.
    pub(super) fn decide_acl(
        &self,
        change: &AclChange,
        index: u64,
    ) -> Result<Vec<(AclKey, Option<AclObject>)>, RegistryError> {
        let acl = |e: AclError| RegistryError::Acl(e);
        match change {
            AclChange::Put(obj) => {
                obj.validate().map_err(acl)?;
                match obj {
                    AclObject::Policy(p) if is_builtin_policy(&p.name) => {
                        return Err(acl(AclError::Conflict(format!(
                            "policy {:?} is built in and cannot be changed",
                            p.name
                        ))));
                    }
                    AclObject::Token(t) => self.check_token(t).map_err(acl)?,
                    AclObject::DnsClient(c) => {
                        if let Some(p) = c.policies.iter().find(|p| self.policy(p).is_none()) {
                            return Err(acl(AclError::UnknownPolicy(p.clone())));
                        }
                    }
                    AclObject::TsigKey(k)
                        if k.token != ANONYMOUS && self.token(&k.token).is_none() =>
                    {
                        return Err(acl(AclError::Invalid(format!(
                            "no token has the accessor {:?}",
                            k.token
                        ))));
                    }
                    AclObject::Bootstrap(_) => {
                        return Err(acl(AclError::Invalid(
                            "the bootstrap mark is set by bootstrapping".into(),
                        )));
                    }
                    _ => {}
                }
                Ok(vec![(obj.key(), Some(obj.at(index)))])
            }
            AclChange::Delete(key) => {
                match key {
                    AclKey::Token(a) if a == ANONYMOUS => {
                        return Err(acl(AclError::Conflict(
                            "the anonymous token cannot be deleted; change its policies instead"
                                .into(),
                        )));
                    }
                    AclKey::Policy(p) if is_builtin_policy(p) => {
                        return Err(acl(AclError::Conflict(format!(
                            "policy {p:?} is built in and cannot be deleted"
                        ))));
                    }
                    AclKey::Bootstrap => {
                        return Err(acl(AclError::Invalid(
                            "the bootstrap mark cannot be removed".into(),
                        )));
                    }
                    _ => {}
                }
                if self.acl_object(key).is_none() {
                    return Err(acl(AclError::NotFound(key.to_string())));
                }
                Ok(vec![(key.clone(), None)])
            }
            AclChange::Bootstrap { token, at } => {
                if let Some(b) = self.bootstrapped() {
                    return Err(acl(AclError::AlreadyBootstrapped(b.accessor.clone())));
                }
                let obj = AclObject::Token(token.clone());
                obj.validate().map_err(acl)?;
                self.check_token(token).map_err(acl)?;
                let mark = AclObject::Bootstrap(Arc::new(Bootstrap {
                    accessor: token.accessor.clone(),
                    at: *at,
                    index,
                }));
                Ok(vec![
                    (obj.key(), Some(obj.at(index))),
                    (AclKey::Bootstrap, Some(mark)),
                ])
            }
        }
    }

    /// What a key/value change makes (compare-and-set: refused with a
    /// conflict when the key's index is not the one given).
    pub(super) fn decide_kv(
        &self,
        change: &KvChange,
        index: u64,
    ) -> Result<Vec<(AclKey, Option<AclObject>)>, RegistryError> {
        let (key, cas) = match change {
            KvChange::Put { key, cas, .. } | KvChange::Delete { key, cas } => (key, *cas),
        };
        let current = self.kv_get(key);
        if let Some(want) = cas {
            let have = current.as_ref().map_or(0, |e| e.index);
            if have != want {
                return Err(RegistryError::Acl(AclError::Conflict(format!(
                    "key {:?} is at index {have}, not {want} (cas): nothing was changed",
                    key.as_str()
                ))));
            }
        }
        match change {
            KvChange::Put { key, value, .. } => {
                let obj = AclObject::Kv(Arc::new(KvEntry {
                    key: key.clone(),
                    value: value.clone(),
                    create_index: current.as_ref().map_or(index, |e| e.create_index),
                    index,
                }));
                obj.validate().map_err(RegistryError::Acl)?;
                Ok(vec![(obj.key(), Some(obj))])
            }
            KvChange::Delete { key, .. } => {
                if current.is_none() {
                    return Err(RegistryError::Acl(AclError::NotFound(format!(
                        "key {:?}",
                        key.as_str()
                    ))));
                }
                Ok(vec![(AclKey::Kv(key.clone()), None)])
            }
        }
    }

    /// One key/value entry.
    pub fn kv_get(&self, key: &KvKey) -> Option<Arc<KvEntry>> {
        match self.acl_object(&AclKey::Kv(key.clone()))? {
            AclObject::Kv(e) => Some(e),
            _ => None,
        }
    }

    /// Every key/value entry whose key starts with `prefix`, by key.
    pub fn kv_list(&self, prefix: &str) -> Vec<Arc<KvEntry>> {
        let mut all: Vec<Arc<KvEntry>> = self
            .inner
            .acl
            .objects
            .pin()
            .values()
            .filter_map(|o| match o {
                AclObject::Kv(e) if e.key.as_str().starts_with(prefix) => Some(e.clone()),
                _ => None,
            })
            .collect();
        all.sort_by(|a, b| a.key.cmp(&b.key));
        all
    }

    fn check_token(&self, t: &Token) -> Result<(), AclError> {
        for p in &t.policies {
            if self.policy(p).is_none() {
                return Err(AclError::UnknownPolicy(p.clone()));
            }
        }
        if !t.is_anonymous()
            && self
                .token_by_secret_hash(&t.secret_hash)
                .is_some_and(|o| o.accessor != t.accessor)
        {
            return Err(AclError::Conflict("that secret is already in use".into()));
        }
        Ok(())
    }

    /// Publishes decided access-control changes and tells observers.
    pub(super) fn commit_acl(&self, w: &mut WriteState, events: Vec<AclEvent>) {
        let Some(last) = events.last().map(|e| e.index) else {
            return;
        };
        self.publish_acl(events.iter().map(|e| (e.key.clone(), e.value.clone())));
        self.inner.acl.index.store(last, Ordering::Release);
        // A service's settings changed: its snapshot and answers follow.
        let services = self.resettle(events.iter().filter_map(|e| match &e.key {
            AclKey::Service(k) => Some((k.clone(), e.index)),
            _ => None,
        }));
        let batch = Batch {
            events: &[],
            services: &services,
            acl: &events,
            instances: None,
        };
        for o in &w.observers {
            o.applied(&batch);
        }
    }

    /// Writes objects into the lock-free maps (under the write lock).
    fn publish_acl(&self, changes: impl Iterator<Item = (AclKey, Option<AclObject>)>) {
        let objects = self.inner.acl.objects.pin();
        let by_secret = self.inner.acl.by_secret.pin();
        let by_accessor = self.inner.acl.by_accessor.pin();
        let cidrs = self.inner.acl.blacklisted_cidrs.pin();
        let blacklist = self.inner.acl.blacklist.pin();
        for (key, value) in changes {
            if let AclKey::Blacklist(target) = &key {
                let cidr = match target {
                    crate::core::BlacklistTarget::Cidr(c) => Some(c),
                    _ => None,
                };
                match &value {
                    Some(AclObject::Blacklist(b)) => {
                        blacklist.insert(target.clone(), b.clone());
                        if let Some(c) = cidr {
                            cidrs.insert(*c, b.clone());
                        }
                    }
                    _ => {
                        blacklist.remove(target);
                        if let Some(c) = cidr {
                            cidrs.remove(c);
                        }
                    }
                }
            }
            if let Some(AclObject::Token(old)) = objects.get(&key) {
                if by_secret
                    .get(&old.secret_hash)
                    .is_some_and(|t| t.accessor == old.accessor)
                {
                    by_secret.remove(&old.secret_hash);
                }
                by_accessor.remove(old.accessor.as_str());
            }
            match value {
                Some(v) => {
                    if let AclObject::Token(t) = &v {
                        if !t.is_anonymous() {
                            by_secret.insert(t.secret_hash, t.clone());
                        }
                        by_accessor.insert(t.accessor.as_str().into(), t.clone());
                    }
                    objects.insert(key, v);
                }
                None => {
                    objects.remove(&key);
                }
            }
        }
    }

    /// Loads access-control objects read back from storage (start-up,
    /// before anything is served). Of two values of one key, the higher
    /// index wins; returns the indexes of the values that lost.
    pub fn restore_acl(&self, objects: Vec<AclObject>) -> Vec<u64> {
        let _w = self.lock();
        let mut best: HashMap<AclKey, AclObject> = HashMap::new();
        let mut superseded = Vec::new();
        let mut max = 0;
        for o in objects {
            if o.index() == 0 || o.index() > MAX_INDEX {
                continue;
            }
            max = max.max(o.index());
            match best.get(&o.key()) {
                Some(b) if b.index() >= o.index() => {
                    if b.index() != o.index() {
                        superseded.push(o.index());
                    }
                }
                Some(b) => {
                    superseded.push(b.index());
                    best.insert(o.key(), o);
                }
                None => {
                    best.insert(o.key(), o);
                }
            }
        }
        let configured: Vec<ServiceKey> = best
            .keys()
            .filter_map(|k| match k {
                AclKey::Service(s) => Some(s.clone()),
                _ => None,
            })
            .collect();
        self.publish_acl(best.into_iter().map(|(k, v)| (k, Some(v))));
        self.inner.index.fetch_max(max, Ordering::AcqRel);
        self.inner.acl.index.fetch_max(max, Ordering::AcqRel);
        // Instances were restored first, with the defaults: services with
        // settings of their own get them now.
        let services = self.resettle(configured.into_iter().filter_map(|k| {
            let index = self.service(&k)?.index;
            Some((k, index))
        }));
        if !services.is_empty() {
            let batch = Batch {
                events: &[],
                services: &services,
                acl: &[],
                instances: None,
            };
            for o in &_w.observers {
                o.applied(&batch);
            }
        }
        for o in &_w.observers {
            o.acl_restored();
        }
        superseded
    }

    /// Undoes access-control changes that could not be made durable, like
    /// [`Registry::revert`] does for instances: each undo is a change of its
    /// own, made only while `still_current(key)` says the failed change is
    /// still the key's latest. Returns how many were undone.
    pub fn revert_acl(
        &self,
        reverts: Vec<AclRevert>,
        still_current: &dyn Fn(&AclKey) -> bool,
    ) -> usize {
        let mut w = self.lock();
        let mut events = Vec::new();
        for r in reverts {
            if !still_current(&r.key) {
                continue;
            }
            let now_value = self.acl_object(&r.key);
            if r.to.is_none() && now_value.is_none() {
                continue;
            }
            let Some(index) = self.index().checked_add(1).filter(|i| *i <= MAX_INDEX) else {
                break;
            };
            self.inner.index.store(index, Ordering::Release);
            events.push(AclEvent {
                index,
                key: r.key,
                value: r.to.map(|v| v.at(index)),
                previous: now_value,
                actor: Actor::System,
                origin: Origin::Local,
            });
        }
        let undone = events.len();
        self.commit_acl(&mut w, events);
        undone
    }
}

/// Whether `ctx`'s actor may hold one more instance, given the instance it
/// would replace (`current_owner`: `Some(owner)` when one exists).
pub(super) fn check_quota(
    reg: &Registry,
    w: &WriteState,
    ctx: &Context,
    current_owner: Option<Option<&Owner>>,
) -> Result<(), RegistryError> {
    let (limit, holder) = match &ctx.actor {
        Actor::Token { accessor, .. } => match reg.token(accessor.as_str()) {
            Some(t) => (t.max_instances, accessor.as_str().to_string()),
            None => return Ok(()),
        },
        Actor::Anonymous { .. } => (reg.anonymous_token().max_instances, ANONYMOUS.to_string()),
        _ => return Ok(()),
    };
    let Some(limit) = limit else { return Ok(()) };
    let owner = ctx.actor.owner();
    if current_owner.is_some_and(|c| c == owner.as_ref()) {
        return Ok(()); // a replacement: it holds no more than before
    }
    let held = holding(w, owner.as_ref().map(|o| o.as_str()));
    if held >= limit {
        return Err(RegistryError::Quota { limit, holder });
    }
    Ok(())
}

fn holding(w: &WriteState, owner: Option<&str>) -> u32 {
    let key = owner.map(Owner::new);
    w.holdings.get(&key).copied().unwrap_or(0)
}
