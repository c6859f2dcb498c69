//! What one stored record holds, and how it is encoded.
//!
//! A record is the postcard encoding (compact, varint integers, strings as
//! length + bytes) of [`Record`]. The enum's variant number comes first, so
//! later kinds of record (policies, tokens) are new variants at the end and
//! old files stay readable. The record's change index is its key in the
//! store, not part of the value. Stores check their own integrity (redb
//! checksums every page; Redis has its own); a record that does not decode
//! is reported and skipped at start-up.

use std::borrow::Cow;
use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use std::sync::Arc;

use crate::core::check::COMPAT_CHECK;
use crate::core::{
    AclObject, Address, BlacklistEntry, BlacklistTarget, Bootstrap, CheckKind, CheckName,
    CheckSpec, Cidr, CompatFields, Datacenter, DnsClient, FastHash, Health, Instance, InstanceId,
    InstanceSpec, Intention, IntentionAction, Owner, Policy, Restored, ServiceConfig, ServiceKey,
    ServiceName, Side, Strategy, Token, User,
};

#[derive(Serialize, Deserialize)]
enum Record<'a> {
    /// Variant 0: an instance as registered, with its health.
    #[serde(borrow)]
    Instance(InstanceRecord<'a>),
    /// Variant 1: an instance registered with a token of its own (`owner`,
    /// counted against that token's quota).
    OwnedInstance {
        #[serde(borrow)]
        owner: Cow<'a, str>,
        #[serde(borrow)]
        instance: InstanceRecord<'a>,
    },
    /// Variant 2: a policy; its rules as JSON (the policy grammar grows
    /// resources; JSON keeps old records readable).
    #[serde(borrow)]
    Policy(PolicyRecord<'a>),
    /// Variant 3: a token (the SHA-256 of its secret, never the secret).
    #[serde(borrow)]
    Token(TokenRecord<'a>),
    /// Variant 4: a sign-in user whose password was set through the API.
    #[serde(borrow)]
    User(UserRecord<'a>),
    /// Variant 5: the bootstrap mark.
    Bootstrap {
        #[serde(borrow)]
        accessor: Cow<'a, str>,
        at: u64,
    },
    /// Variant 6: a Maxine-compatible instance whose SDK sent a
    /// `healthCheckPath`, which variants 0 and 1 have no room for; `owner`
    /// as in variant 1. Instances without one are still written as
    /// variant 0 or 1, so that earlier versions of Maxine read them.
    CompatInstance {
        #[serde(borrow)]
        owner: Option<Cow<'a, str>>,
        #[serde(borrow)]
        instance: InstanceRecord<'a>,
        #[serde(borrow)]
        health_check_path: Cow<'a, str>,
    },
    /// Variant 7: an instance with health checks defined (the check a
    /// `healthCheckPath` stands for is not among them: it follows from the
    /// path, as in variant 6); `owner` and `health_check_path` as in
    /// variant 6. Instances without checks are still written as variants
    /// 0, 1 or 6. Check statuses are not stored (`Change::CheckStatus`).
    CheckedInstance {
        #[serde(borrow)]
        owner: Option<Cow<'a, str>>,
        #[serde(borrow)]
        instance: InstanceRecord<'a>,
        #[serde(borrow)]
        health_check_path: Cow<'a, str>,
        #[serde(borrow)]
        checks: Vec<CheckRecord<'a>>,
    },
    /// Variant 8: a service's settings (`PUT /v1/services/{svc}/config`);
    /// `None` fields follow the configuration's defaults.
    ServiceConfig {
        #[serde(borrow)]
        dc: Cow<'a, str>,
        #[serde(borrow)]
        service: Cow<'a, str>,
        /// The strategy's name (`round_robin`, `sticky`, ...).
        #[serde(borrow)]
        strategy: Option<Cow<'a, str>>,
        panic_threshold: Option<u8>,
    },
    /// Variant 9: a key/value entry (`create_index`: the index that first
    /// created the key; the record's own index is its key in the store).
    Kv {
        #[serde(borrow)]
        key: Cow<'a, str>,
        #[serde(borrow)]
        value: Cow<'a, [u8]>,
        create_index: u64,
    },
    /// Variant 10: an intention; `source` and `destination` are service
    /// names or `*`, `allow` its action.
    Intention {
        #[serde(borrow)]
        source: Cow<'a, str>,
        #[serde(borrow)]
        destination: Cow<'a, str>,
        allow: bool,
        #[serde(borrow)]
        description: Cow<'a, str>,
    },
    /// Variant 11: a DNS client network; `cidrs` in CIDR form.
    DnsClient {
        #[serde(borrow)]
        name: Cow<'a, str>,
        #[serde(borrow)]
        cidrs: Vec<Cow<'a, str>>,
        #[serde(borrow)]
        policies: Vec<Cow<'a, str>>,
    },
    /// Variant 12: a blacklisted service (times in Unix milliseconds).
    BlacklistService {
        #[serde(borrow)]
        service: Cow<'a, str>,
        #[serde(borrow)]
        reason: Cow<'a, str>,
        created_at: u64,
        expires_at: Option<u64>,
    },
    /// Variant 13: a blacklisted instance.
    BlacklistInstance {
        #[serde(borrow)]
        service: Cow<'a, str>,
        #[serde(borrow)]
        id: Cow<'a, str>,
        #[serde(borrow)]
        reason: Cow<'a, str>,
        created_at: u64,
        expires_at: Option<u64>,
    },
    /// Variant 14: a blacklisted network, in CIDR form.
    BlacklistCidr {
        #[serde(borrow)]
        cidr: Cow<'a, str>,
        #[serde(borrow)]
        reason: Cow<'a, str>,
        created_at: u64,
        expires_at: Option<u64>,
    },
    // Variant 15 is kept for the blacklist entries: a placeholder
    // (postcard numbers variants by their order), never written.
    Reserved15,
    /// Variant 16: a TSIG key; `token` is the accessor it is bound to.
    TsigKey {
        #[serde(borrow)]
        name: Cow<'a, str>,
        #[serde(borrow)]
        algorithm: Cow<'a, str>,
        #[serde(borrow)]
        secret: Cow<'a, [u8]>,
        #[serde(borrow)]
        token: Cow<'a, str>,
    },
}

fn blacklist(
    target: BlacklistTarget,
    reason: Cow<'_, str>,
    created_at: u64,
    expires_at: Option<u64>,
    index: u64,
) -> AclObject {
    AclObject::Blacklist(Arc::new(BlacklistEntry {
        target,
        reason: reason.into_owned(),
        created_at,
        expires_at,
        index,
    }))
}

/// One health check as defined (`core::CheckSpec`).
#[derive(Serialize, Deserialize)]
struct CheckRecord<'a> {
    #[serde(borrow)]
    name: Cow<'a, str>,
    #[serde(borrow)]
    kind: CheckKindRecord<'a>,
    interval_ms: u64,
    timeout_ms: u64,
    success_before_passing: u32,
    failures_before_critical: u32,
    deregister_critical_after_ms: Option<u64>,
}

#[derive(Serialize, Deserialize)]
enum CheckKindRecord<'a> {
    Http {
        #[serde(borrow)]
        url: Cow<'a, str>,
        #[serde(borrow)]
        method: Cow<'a, str>,
        #[serde(borrow)]
        headers: Vec<(Cow<'a, str>, Cow<'a, str>)>,
    },
    /// `ip:port`.
    Tcp(#[serde(borrow)] Cow<'a, str>),
    Grpc {
        #[serde(borrow)]
        target: Cow<'a, str>,
        #[serde(borrow)]
        service: Cow<'a, str>,
    },
    Script(#[serde(borrow)] Vec<Cow<'a, str>>),
}

impl<'a> CheckRecord<'a> {
    fn of(spec: &'a CheckSpec) -> Self {
        let kind = match &spec.kind {
            CheckKind::Http {
                url,
                method,
                headers,
            } => CheckKindRecord::Http {
                url: Cow::Borrowed(url),
                method: Cow::Borrowed(method),
                headers: headers
                    .iter()
                    .map(|(k, v)| (Cow::Borrowed(k.as_str()), Cow::Borrowed(v.as_str())))
                    .collect(),
            },
            CheckKind::Tcp { target } => CheckKindRecord::Tcp(Cow::Owned(target.to_string())),
            CheckKind::Grpc { target, service } => CheckKindRecord::Grpc {
                target: Cow::Owned(target.to_string()),
                service: Cow::Borrowed(service),
            },
            CheckKind::Script { args } => {
                CheckKindRecord::Script(args.iter().map(|a| Cow::Borrowed(a.as_str())).collect())
            }
        };
        Self {
            name: Cow::Borrowed(spec.name.as_str()),
            kind,
            interval_ms: spec.interval.as_millis() as u64,
            timeout_ms: spec.timeout.as_millis() as u64,
            success_before_passing: spec.success_before_passing,
            failures_before_critical: spec.failures_before_critical,
            deregister_critical_after_ms: spec
                .deregister_critical_after
                .map(|d| d.as_millis() as u64),
        }
    }

    /// The definition (validated with the rest of the spec).
    fn spec(self) -> Result<CheckSpec, DecodeError> {
        let invalid = |e: &dyn std::fmt::Display| DecodeError::Invalid(e.to_string());
        let target = |t: &str| {
            t.parse::<std::net::SocketAddr>()
                .map_err(|e| invalid(&format!("check target {t:?}: {e}")))
        };
        let kind = match self.kind {
            CheckKindRecord::Http {
                url,
                method,
                headers,
            } => CheckKind::Http {
                url: (&*url).into(),
                method: (&*method).into(),
                headers: headers
                    .iter()
                    .map(|(k, v)| ((&**k).into(), (&**v).into()))
                    .collect(),
            },
            CheckKindRecord::Tcp(t) => CheckKind::Tcp {
                target: target(&t)?,
            },
            CheckKindRecord::Grpc { target: t, service } => CheckKind::Grpc {
                target: target(&t)?,
                service: (&*service).into(),
            },
            CheckKindRecord::Script(args) => CheckKind::Script {
                args: args.iter().map(|a| (&**a).into()).collect(),
            },
        };
        let mut spec = CheckSpec::new(CheckName::new(&self.name).map_err(|e| invalid(&e))?, kind);
        spec.interval = Duration::from_millis(self.interval_ms);
        spec.timeout = Duration::from_millis(self.timeout_ms);
        spec.success_before_passing = self.success_before_passing;
        spec.failures_before_critical = self.failures_before_critical;
        spec.deregister_critical_after =
            self.deregister_critical_after_ms.map(Duration::from_millis);
        Ok(spec)
    }
}

#[derive(Serialize, Deserialize)]
struct PolicyRecord<'a> {
    #[serde(borrow)]
    name: Cow<'a, str>,
    #[serde(borrow)]
    description: Cow<'a, str>,
    #[serde(borrow)]
    rules_json: Cow<'a, str>,
}

#[derive(Serialize, Deserialize)]
struct TokenRecord<'a> {
    #[serde(borrow)]
    accessor: Cow<'a, str>,
    secret_hash: [u8; 32],
    #[serde(borrow)]
    description: Cow<'a, str>,
    #[serde(borrow)]
    policies: Vec<Cow<'a, str>>,
    #[serde(borrow)]
    service: Option<Cow<'a, str>>,
    expires_at: Option<u64>,
    max_instances: Option<u32>,
    created_at: u64,
}

#[derive(Serialize, Deserialize)]
struct UserRecord<'a> {
    #[serde(borrow)]
    name: Cow<'a, str>,
    #[serde(borrow)]
    password_hash: Cow<'a, str>,
    #[serde(borrow)]
    role: Cow<'a, str>,
    epoch: u64,
}

/// What a stored record holds.
#[allow(clippy::large_enum_variant)] // instances are nearly all records; objects are few
pub enum Decoded {
    Instance(Restored),
    Acl(AclObject),
}

#[derive(Serialize, Deserialize)]
struct InstanceRecord<'a> {
    #[serde(borrow)]
    dc: Cow<'a, str>,
    #[serde(borrow)]
    service: Cow<'a, str>,
    #[serde(borrow)]
    id: Cow<'a, str>,
    /// An IP literal or a host name, as `Address` displays it.
    #[serde(borrow)]
    address: Cow<'a, str>,
    port: u16,
    #[serde(borrow)]
    version: Cow<'a, str>,
    #[serde(borrow)]
    tags: Vec<Cow<'a, str>>,
    #[serde(borrow)]
    metadata: Vec<(Cow<'a, str>, Cow<'a, str>)>,
    weight: u16,
    ttl_ms: u64,
    critical: bool,
    #[serde(borrow)]
    compat: Option<CompatRecord<'a>>,
}

#[derive(Serialize, Deserialize)]
struct CompatRecord<'a> {
    #[serde(borrow)]
    service_name: Cow<'a, str>,
    #[serde(borrow)]
    node_name: Cow<'a, str>,
    #[serde(borrow)]
    host_name: Cow<'a, str>,
    ssl: bool,
    #[serde(borrow)]
    path: Cow<'a, str>,
}

/// Why a record could not be read back.
#[derive(Debug, thiserror::Error)]
pub enum DecodeError {
    #[error("not a record of this version of Maxine: {0}")]
    Format(String),
    #[error("invalid value: {0}")]
    Invalid(String),
}

/// Encodes the instance (its change index is the key, not part of the value).
pub fn encode(inst: &Instance) -> Vec<u8> {
    let address = inst.address.to_string();
    let record = InstanceRecord {
        dc: Cow::Borrowed(inst.datacenter.as_str()),
        service: Cow::Borrowed(inst.service.as_str()),
        id: Cow::Borrowed(inst.id.as_str()),
        address: Cow::Borrowed(&address),
        port: inst.port,
        version: Cow::Borrowed(&inst.version),
        tags: inst
            .tags
            .iter()
            .map(|t| Cow::Borrowed(t.as_str()))
            .collect(),
        metadata: inst
            .metadata
            .iter()
            .map(|(k, v)| (Cow::Borrowed(k), Cow::Borrowed(v)))
            .collect(),
        weight: inst.weight,
        ttl_ms: inst.ttl().as_millis() as u64,
        // The TTL's status; check statuses are not stored.
        critical: inst.health == Health::Critical,
        compat: inst.compat.as_ref().map(|c| CompatRecord {
            service_name: Cow::Borrowed(&c.service_name),
            node_name: Cow::Borrowed(&c.node_name),
            host_name: Cow::Borrowed(&c.host_name),
            ssl: c.ssl,
            path: Cow::Borrowed(&c.path),
        }),
    };
    let health_check_path = inst
        .compat
        .as_ref()
        .map_or("", |c| c.health_check_path.as_str());
    // The defined checks: the one a `healthCheckPath` stands for follows
    // from the path.
    let checks: Vec<CheckRecord<'_>> = inst
        .checks
        .iter()
        .map(|e| &e.check.spec)
        .filter(|c| health_check_path.is_empty() || c.name.as_str() != COMPAT_CHECK)
        .map(CheckRecord::of)
        .collect();
    let record = match &inst.owner {
        _ if !checks.is_empty() => Record::CheckedInstance {
            owner: inst.owner.as_ref().map(|o| Cow::Borrowed(o.as_str())),
            instance: record,
            health_check_path: Cow::Borrowed(health_check_path),
            checks,
        },
        _ if !health_check_path.is_empty() => Record::CompatInstance {
            owner: inst.owner.as_ref().map(|o| Cow::Borrowed(o.as_str())),
            instance: record,
            health_check_path: Cow::Borrowed(health_check_path),
        },
        None => Record::Instance(record),
        Some(o) => Record::OwnedInstance {
            owner: Cow::Borrowed(o.as_str()),
            instance: record,
        },
    };
    postcard::to_allocvec(&record).expect("encoding into a Vec cannot fail")
}

/// Encodes an access-control object (its index is the key).
pub fn encode_acl(obj: &AclObject) -> Vec<u8> {
    let record = match obj {
        AclObject::Policy(p) => Record::Policy(PolicyRecord {
            name: Cow::Borrowed(&p.name),
            description: Cow::Borrowed(&p.description),
            rules_json: Cow::Owned(
                serde_json::to_string(&p.rules).expect("rules always serialize"),
            ),
        }),
        AclObject::Token(t) => Record::Token(TokenRecord {
            accessor: Cow::Borrowed(&t.accessor),
            secret_hash: t.secret_hash,
            description: Cow::Borrowed(&t.description),
            policies: t
                .policies
                .iter()
                .map(|p| Cow::Borrowed(p.as_str()))
                .collect(),
            service: t.service.as_ref().map(|s| Cow::Borrowed(s.as_str())),
            expires_at: t.expires_at,
            max_instances: t.max_instances,
            created_at: t.created_at,
        }),
        AclObject::User(u) => Record::User(UserRecord {
            name: Cow::Borrowed(&u.name),
            password_hash: Cow::Borrowed(&u.password_hash),
            role: Cow::Borrowed(&u.role),
            epoch: u.epoch,
        }),
        AclObject::Bootstrap(b) => Record::Bootstrap {
            accessor: Cow::Borrowed(&b.accessor),
            at: b.at,
        },
        AclObject::Service(c) => Record::ServiceConfig {
            dc: Cow::Borrowed(c.key.dc.as_str()),
            service: Cow::Borrowed(c.key.service.as_str()),
            strategy: c.strategy.map(|s| Cow::Borrowed(s.as_str())),
            panic_threshold: c.panic_threshold,
        },
        AclObject::Kv(e) => Record::Kv {
            key: Cow::Borrowed(e.key.as_str()),
            value: Cow::Borrowed(&e.value),
            create_index: e.create_index,
        },
        AclObject::Intention(i) => Record::Intention {
            source: Cow::Borrowed(i.source.as_str()),
            destination: Cow::Borrowed(i.destination.as_str()),
            allow: i.action == IntentionAction::Allow,
            description: Cow::Borrowed(&i.description),
        },
        AclObject::TsigKey(k) => Record::TsigKey {
            name: Cow::Borrowed(&k.name),
            algorithm: Cow::Borrowed(&k.algorithm),
            secret: Cow::Borrowed(&k.secret),
            token: Cow::Borrowed(&k.token),
        },
        AclObject::DnsClient(c) => Record::DnsClient {
            name: Cow::Borrowed(&c.name),
            cidrs: c.cidrs.iter().map(|c| Cow::Owned(c.to_string())).collect(),
            policies: c
                .policies
                .iter()
                .map(|p| Cow::Borrowed(p.as_str()))
                .collect(),
        },
        AclObject::Blacklist(b) => {
            let reason = Cow::Borrowed(b.reason.as_str());
            let (created_at, expires_at) = (b.created_at, b.expires_at);
            match &b.target {
                BlacklistTarget::Service(service) => Record::BlacklistService {
                    service: Cow::Borrowed(service.as_str()),
                    reason,
                    created_at,
                    expires_at,
                },
                BlacklistTarget::Instance(service, id) => Record::BlacklistInstance {
                    service: Cow::Borrowed(service.as_str()),
                    id: Cow::Borrowed(id.as_str()),
                    reason,
                    created_at,
                    expires_at,
                },
                BlacklistTarget::Cidr(c) => Record::BlacklistCidr {
                    cidr: Cow::Owned(c.to_string()),
                    reason,
                    created_at,
                    expires_at,
                },
            }
        }
    };
    postcard::to_allocvec(&record).expect("encoding into a Vec cannot fail")
}

/// Decodes records into registry values, sharing one copy of each
/// datacenter and service name (a million instances of a thousand services
/// keep a thousand names).
#[derive(Default)]
pub struct Decoder {
    /// datacenter -> service -> key.
    keys: HashMap<Box<str>, HashMap<Box<str>, ServiceKey, FastHash>, FastHash>,
    /// One copy of each owner.
    owners: HashMap<Box<str>, Owner, FastHash>,
}

impl Decoder {
    /// Decodes any record.
    pub fn decode_any(&mut self, index: u64, bytes: &[u8]) -> Result<Decoded, DecodeError> {
        let record: Record<'_> =
            postcard::from_bytes(bytes).map_err(|e| DecodeError::Format(e.to_string()))?;
        let invalid = |e: &dyn std::fmt::Display| DecodeError::Invalid(e.to_string());
        let obj = match record {
            Record::Instance(r) => {
                return self.instance(index, r, None, "").map(Decoded::Instance);
            }
            Record::OwnedInstance { owner, instance: r } => {
                let owner = self.owner(&owner);
                return self
                    .instance(index, r, Some(owner), "")
                    .map(Decoded::Instance);
            }
            Record::CompatInstance {
                owner,
                instance: r,
                health_check_path,
            } => {
                let owner = owner.map(|o| self.owner(&o));
                return self
                    .instance(index, r, owner, &health_check_path)
                    .map(Decoded::Instance);
            }
            Record::CheckedInstance {
                owner,
                instance: r,
                health_check_path,
                checks,
            } => {
                let owner = owner.map(|o| self.owner(&o));
                let checks = checks
                    .into_iter()
                    .map(CheckRecord::spec)
                    .collect::<Result<Vec<_>, _>>()?;
                return self
                    .instance(index, r, owner, &health_check_path)
                    .and_then(|mut restored| {
                        restored.spec.checks = checks;
                        restored
                            .spec
                            .validate()
                            .map_err(|e| DecodeError::Invalid(e.to_string()))?;
                        Ok(restored)
                    })
                    .map(Decoded::Instance);
            }
            Record::Policy(p) => AclObject::Policy(Arc::new(Policy {
                name: p.name.into_owned(),
                description: p.description.into_owned(),
                rules: serde_json::from_str(&p.rules_json).map_err(|e| invalid(&e))?,
                index,
            })),
            Record::Token(t) => AclObject::Token(Arc::new(Token {
                accessor: t.accessor.into_owned(),
                secret_hash: t.secret_hash,
                description: t.description.into_owned(),
                policies: t.policies.into_iter().map(Cow::into_owned).collect(),
                service: match t.service {
                    Some(s) => Some(ServiceName::new(&s).map_err(|e| invalid(&e))?),
                    None => None,
                },
                expires_at: t.expires_at,
                max_instances: t.max_instances,
                created_at: t.created_at,
                index,
            })),
            Record::User(u) => AclObject::User(Arc::new(User {
                name: u.name.into_owned(),
                password_hash: u.password_hash.into_owned(),
                role: u.role.into_owned(),
                epoch: u.epoch,
                index,
            })),
            Record::Bootstrap { accessor, at } => AclObject::Bootstrap(Arc::new(Bootstrap {
                accessor: accessor.into_owned(),
                at,
                index,
            })),
            Record::ServiceConfig {
                dc,
                service,
                strategy,
                panic_threshold,
            } => AclObject::Service(Arc::new(ServiceConfig {
                key: ServiceKey::new(
                    Datacenter::new(&dc).map_err(|e| invalid(&e))?,
                    ServiceName::new(&service).map_err(|e| invalid(&e))?,
                ),
                strategy: match strategy {
                    Some(s) => Some(
                        Strategy::parse(&s)
                            .ok_or_else(|| invalid(&format!("unknown strategy {s:?}")))?,
                    ),
                    None => None,
                },
                panic_threshold,
                index,
            })),
            Record::Kv {
                key,
                value,
                create_index,
            } => AclObject::Kv(Arc::new(crate::core::KvEntry {
                key: crate::core::KvKey::new(&key).map_err(|e| invalid(&e))?,
                value: value.as_ref().into(),
                create_index,
                index,
            })),
            Record::Intention {
                source,
                destination,
                allow,
                description,
            } => AclObject::Intention(Arc::new(Intention {
                source: Side::parse(&source).map_err(|e| invalid(&e))?,
                destination: Side::parse(&destination).map_err(|e| invalid(&e))?,
                action: if allow {
                    IntentionAction::Allow
                } else {
                    IntentionAction::Deny
                },
                description: description.into_owned(),
                index,
            })),
            Record::Reserved15 => {
                return Err(invalid(&"a record variant kept for later (12 to 15)"));
            }
            Record::TsigKey {
                name,
                algorithm,
                secret,
                token,
            } => AclObject::TsigKey(Arc::new(crate::core::TsigKey {
                name: name.into_owned(),
                algorithm: algorithm.into_owned(),
                secret: secret.into_owned(),
                token: token.into_owned(),
                index,
            })),
            Record::DnsClient {
                name,
                cidrs,
                policies,
            } => AclObject::DnsClient(Arc::new(DnsClient {
                name: name.into_owned(),
                cidrs: cidrs
                    .iter()
                    .map(|c| Cidr::parse(c))
                    .collect::<Result<_, _>>()
                    .map_err(|e| invalid(&e))?,
                policies: policies.into_iter().map(Cow::into_owned).collect(),
                index,
            })),
            Record::BlacklistService {
                service,
                reason,
                created_at,
                expires_at,
            } => blacklist(
                BlacklistTarget::Service(ServiceName::new(&service).map_err(|e| invalid(&e))?),
                reason,
                created_at,
                expires_at,
                index,
            ),
            Record::BlacklistInstance {
                service,
                id,
                reason,
                created_at,
                expires_at,
            } => blacklist(
                BlacklistTarget::Instance(
                    ServiceName::new(&service).map_err(|e| invalid(&e))?,
                    InstanceId::new(&id).map_err(|e| invalid(&e))?,
                ),
                reason,
                created_at,
                expires_at,
                index,
            ),
            Record::BlacklistCidr {
                cidr,
                reason,
                created_at,
                expires_at,
            } => blacklist(
                BlacklistTarget::Cidr(Cidr::parse(&cidr).map_err(|e| invalid(&e))?),
                reason,
                created_at,
                expires_at,
                index,
            ),
        };
        obj.validate().map_err(|e| invalid(&e))?;
        Ok(Decoded::Acl(obj))
    }

    /// Decodes an instance record (an access-control record is an error).
    pub fn decode(&mut self, index: u64, bytes: &[u8]) -> Result<Restored, DecodeError> {
        match self.decode_any(index, bytes)? {
            Decoded::Instance(r) => Ok(r),
            Decoded::Acl(o) => Err(DecodeError::Invalid(format!(
                "{} is not an instance",
                o.key()
            ))),
        }
    }

    /// The one shared copy of `name`.
    fn owner(&mut self, name: &str) -> Owner {
        if let Some(o) = self.owners.get(name) {
            return o.clone();
        }
        let o = Owner::new(name);
        self.owners.insert(Box::from(name), o.clone());
        o
    }

    /// An instance record, with the compatible fields that came beside it
    /// (variant 6).
    fn instance(
        &mut self,
        index: u64,
        r: InstanceRecord<'_>,
        owner: Option<Owner>,
        health_check_path: &str,
    ) -> Result<Restored, DecodeError> {
        let invalid = |e: &dyn std::fmt::Display| DecodeError::Invalid(e.to_string());
        let key = match self.keys.get(&*r.dc).and_then(|m| m.get(&*r.service)) {
            Some(k) => k.clone(),
            None => {
                let k = ServiceKey::new(
                    Datacenter::new(&r.dc).map_err(|e| invalid(&e))?,
                    ServiceName::new(&r.service).map_err(|e| invalid(&e))?,
                );
                self.keys
                    .entry(Box::from(&*r.dc))
                    .or_default()
                    .insert(Box::from(&*r.service), k.clone());
                k
            }
        };
        let id = InstanceId::new(&r.id).map_err(|e| invalid(&e))?;
        let mut spec =
            InstanceSpec::new(Address::parse(&r.address).map_err(|e| invalid(&e))?, r.port);
        spec.version = r.version.into_owned();
        spec.tags = r.tags.into_iter().map(Cow::into_owned).collect();
        spec.metadata = r
            .metadata
            .into_iter()
            .map(|(k, v)| (k.into_owned(), v.into_owned()))
            .collect::<BTreeMap<_, _>>();
        spec.weight = r.weight;
        spec.ttl = Duration::from_millis(r.ttl_ms);
        spec.compat = r.compat.map(|c| {
            Box::new(CompatFields {
                service_name: (&*c.service_name).into(),
                node_name: (&*c.node_name).into(),
                host_name: (&*c.host_name).into(),
                ssl: c.ssl,
                path: (&*c.path).into(),
                health_check_path: health_check_path.into(),
            })
        });
        if spec.compat.is_none() && !health_check_path.is_empty() {
            return Err(DecodeError::Invalid(
                "a healthCheckPath without the Maxine-compatible names".into(),
            ));
        }
        spec.owner = owner;
        spec.validate().map_err(|e| invalid(&e))?;
        Ok(Restored {
            key,
            id,
            spec,
            health: if r.critical {
                Health::Critical
            } else {
                Health::Passing
            },
            index,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use std::time::Instant;

    #[test]
    fn an_instance_survives_encoding_with_every_field() {
        let t0 = Instant::now();
        let r = crate::core::registry::test_registry(t0);
        let mut spec = InstanceSpec::new(Address::parse("api.example.com").unwrap(), 443);
        spec.version = "2.1.0".into();
        spec.tags = vec!["blue".into(), "a b".into()];
        spec.metadata.insert("zone".into(), "eu-1".into());
        spec.weight = 7;
        spec.ttl = Duration::from_millis(5500);
        spec.compat = Some(Box::new(CompatFields {
            service_name: "Pay_Service".into(),
            node_name: "Node-1".into(),
            host_name: "https://api.example.com".into(),
            ssl: true,
            path: "/v1".into(),
            health_check_path: "/health".into(),
        }));
        let key = ServiceKey::new(
            Datacenter::new("dc1").unwrap(),
            ServiceName::new("pay-service").unwrap(),
        );
        let inst = r
            .register(
                key.clone(),
                InstanceId::new("node-1").unwrap(),
                spec.clone(),
                t0,
            )
            .unwrap();
        let back = Decoder::default()
            .decode(inst.index, &encode(&inst))
            .unwrap();
        assert_eq!(back.key, key);
        assert_eq!(back.id.as_str(), "node-1");
        assert_eq!(back.index, inst.index);
        assert_eq!(back.health, Health::Passing);
        assert_eq!(back.spec.address, spec.address);
        assert_eq!(
            (back.spec.port, back.spec.weight, back.spec.ttl),
            (443, 7, spec.ttl)
        );
        assert_eq!(
            (&back.spec.version, &back.spec.tags, &back.spec.metadata),
            (&spec.version, &spec.tags, &spec.metadata)
        );
        assert_eq!(back.spec.compat, spec.compat);
    }

    /// A Maxine-compatible instance with `health_check_path` and `owner`.
    fn compat_instance(health_check_path: &str, owner: Option<&str>) -> Instance {
        let mut spec = InstanceSpec::new(Address::parse("10.0.0.7").unwrap(), 8080);
        spec.compat = Some(Box::new(CompatFields {
            service_name: "Pay_Service".into(),
            node_name: "Node-1".into(),
            host_name: "10.0.0.7".into(),
            ssl: false,
            path: "".into(),
            health_check_path: health_check_path.into(),
        }));
        spec.owner = owner.map(Owner::new);
        let key = ServiceKey::new(
            Datacenter::new("dc1").unwrap(),
            ServiceName::new("pay-service").unwrap(),
        );
        let id = InstanceId::new("node-1").unwrap();
        Instance::from_spec(&key, id, spec, "".into(), Health::Passing, 9, 0)
    }

    #[test]
    fn a_health_check_path_takes_a_new_variant_and_records_without_one_keep_the_old() {
        let mut d = Decoder::default();
        // None: variants 0 and 1, the layout earlier versions write and read.
        for (owner, variant) in [(None, 0), (Some("acc-1"), 1)] {
            let bytes = encode(&compat_instance("", owner));
            assert_eq!(bytes[0], variant, "{owner:?}");
            let back = d.decode(9, &bytes).unwrap();
            assert_eq!(back.spec.compat.unwrap().health_check_path.as_str(), "");
            assert_eq!(back.spec.owner.as_ref().map(|o| o.as_str()), owner);
        }
        // One: variant 6, with or without an owner.
        for owner in [None, Some("acc-1")] {
            let bytes = encode(&compat_instance("/health", owner));
            assert_eq!(bytes[0], 6, "{owner:?}");
            let back = d.decode(9, &bytes).unwrap();
            let compat = back.spec.compat.unwrap();
            assert_eq!(compat.health_check_path.as_str(), "/health");
            assert_eq!(compat.service_name.as_str(), "Pay_Service");
            assert_eq!(back.spec.owner.as_ref().map(|o| o.as_str()), owner);
        }
    }

    #[test]
    fn checks_take_variant_7_and_a_health_check_path_alone_keeps_variant_6() {
        let mut d = Decoder::default();
        // The healthCheckPath check follows from the path: variant 6 still.
        let path_only = compat_instance("/health", None);
        assert_eq!(path_only.checks.len(), 1);
        let bytes = encode(&path_only);
        assert_eq!(bytes[0], 6);
        let back = d.decode(9, &bytes).unwrap();
        assert!(back.spec.checks.is_empty());
        assert_eq!(back.spec.all_checks().len(), 1);
        // Defined checks of every kind: variant 7, with the path beside them.
        let name = |n: &str| CheckName::new(n).unwrap();
        let mut http = CheckSpec::new(
            name("web"),
            CheckKind::Http {
                url: "https://127.0.0.1:8443/ready".into(),
                method: "HEAD".into(),
                headers: vec![("X-Probe".into(), "1".into())],
            },
        );
        http.interval = Duration::from_secs(3);
        http.timeout = Duration::from_millis(1500);
        http.success_before_passing = 2;
        http.failures_before_critical = 4;
        http.deregister_critical_after = Some(Duration::from_secs(600));
        let checks = vec![
            http,
            CheckSpec::new(
                name("db"),
                CheckKind::Tcp {
                    target: "[::1]:5432".parse().unwrap(),
                },
            ),
            CheckSpec::new(
                name("rpc"),
                CheckKind::Grpc {
                    target: "127.0.0.1:50051".parse().unwrap(),
                    service: "pay".into(),
                },
            ),
            CheckSpec::new(
                name("disk"),
                CheckKind::Script {
                    args: vec!["/usr/bin/check-disk".into(), "-w 90".into()],
                },
            ),
        ];
        let mut inst = compat_instance("/health", Some("acc-1"));
        let mut spec = InstanceSpec::new(inst.address.clone(), inst.port);
        spec.compat = inst.compat.clone();
        spec.checks = checks.clone();
        inst.checks = crate::core::Checks::build(spec.all_checks(), &Default::default());
        let bytes = encode(&inst);
        assert_eq!(bytes[0], 7);
        let back = d.decode(9, &bytes).unwrap();
        let mut want = checks;
        want.sort_by(|a, b| a.name.cmp(&b.name));
        assert_eq!(back.spec.checks, want);
        assert_eq!(back.spec.owner.as_ref().map(|o| o.as_str()), Some("acc-1"));
        assert_eq!(
            back.spec.compat.unwrap().health_check_path.as_str(),
            "/health"
        );
    }

    #[test]
    fn intentions_are_variant_10_and_dns_clients_variant_11() {
        let mut d = Decoder::default();
        for (source, destination, action) in [
            ("web", "db", IntentionAction::Deny),
            ("*", "db", IntentionAction::Allow),
            ("api", "*", IntentionAction::Deny),
        ] {
            let obj = AclObject::Intention(Arc::new(Intention {
                source: Side::parse(source).unwrap(),
                destination: Side::parse(destination).unwrap(),
                action,
                description: "why".into(),
                index: 12,
            }));
            let bytes = encode_acl(&obj);
            assert_eq!(bytes[0], 10);
            match d.decode_any(12, &bytes).unwrap() {
                Decoded::Acl(back) => assert_eq!(back, obj),
                Decoded::Instance(_) => panic!("an intention decoded as an instance"),
            }
        }
        let obj = AclObject::DnsClient(Arc::new(DnsClient {
            name: "office".into(),
            cidrs: vec![
                Cidr::parse("10.1.0.0/16").unwrap(),
                Cidr::parse("fd00::/8").unwrap(),
            ],
            policies: vec!["viewer".into()],
            index: 13,
        }));
        let bytes = encode_acl(&obj);
        assert_eq!(bytes[0], 11);
        match d.decode_any(13, &bytes).unwrap() {
            Decoded::Acl(back) => assert_eq!(back, obj),
            Decoded::Instance(_) => panic!("a DNS client decoded as an instance"),
        }
    }

    #[test]
    fn tsig_keys_are_variant_16() {
        let mut d = Decoder::default();
        let obj = AclObject::TsigKey(Arc::new(crate::core::TsigKey {
            name: "ops.key".into(),
            algorithm: "hmac-sha256".into(),
            secret: vec![7; 32],
            token: "ops-token".into(),
            index: 14,
        }));
        let bytes = encode_acl(&obj);
        assert_eq!(bytes[0], 16);
        match d.decode_any(14, &bytes).unwrap() {
            Decoded::Acl(back) => assert_eq!(back, obj),
            Decoded::Instance(_) => panic!("a TSIG key decoded as an instance"),
        }
    }

    #[test]
    fn blacklist_entries_are_variants_12_13_and_14() {
        let mut d = Decoder::default();
        let web = ServiceName::new("web").unwrap();
        for (target, variant) in [
            (BlacklistTarget::Service(web.clone()), 12),
            (
                BlacklistTarget::Instance(web, InstanceId::new("web-1").unwrap()),
                13,
            ),
            (
                BlacklistTarget::Cidr(Cidr::parse("10.9.0.0/16").unwrap()),
                14,
            ),
            (BlacklistTarget::Cidr(Cidr::parse("fd00::/8").unwrap()), 14),
        ] {
            for expires_at in [None, Some(1_800_000_000_000)] {
                let obj = AclObject::Blacklist(Arc::new(BlacklistEntry {
                    target: target.clone(),
                    reason: "compromised".into(),
                    created_at: 1_700_000_000_000,
                    expires_at,
                    index: 21,
                }));
                let bytes = encode_acl(&obj);
                assert_eq!(bytes[0], variant);
                match d.decode_any(21, &bytes).unwrap() {
                    Decoded::Acl(back) => assert_eq!(back, obj),
                    Decoded::Instance(_) => panic!("a blacklist entry decoded as an instance"),
                }
            }
        }
        // Host bits set are damage, not a network.
        let bad = Record::BlacklistCidr {
            cidr: "10.9.0.1/16".into(),
            reason: "".into(),
            created_at: 0,
            expires_at: None,
        };
        assert!(
            d.decode_any(3, &postcard::to_allocvec(&bad).unwrap())
                .is_err()
        );
    }

    #[test]
    fn service_settings_are_variant_8_and_round_trip() {
        let key = ServiceKey::new(
            Datacenter::new("dc1").unwrap(),
            ServiceName::new("pay").unwrap(),
        );
        let mut d = Decoder::default();
        for (strategy, panic_threshold) in [(Some(Strategy::Sticky), Some(30)), (None, None)] {
            let obj = AclObject::Service(Arc::new(ServiceConfig {
                key: key.clone(),
                strategy,
                panic_threshold,
                index: 12,
            }));
            let bytes = encode_acl(&obj);
            assert_eq!(bytes[0], 8);
            match d.decode_any(12, &bytes).unwrap() {
                Decoded::Acl(back) => assert_eq!(back, obj),
                Decoded::Instance(_) => panic!("settings decoded as an instance"),
            }
        }
        // A threshold above 100 or an unknown strategy is damage.
        let bad = Record::ServiceConfig {
            dc: "dc1".into(),
            service: "pay".into(),
            strategy: Some("fastest".into()),
            panic_threshold: None,
        };
        assert!(
            d.decode_any(3, &postcard::to_allocvec(&bad).unwrap())
                .is_err()
        );
        let bad = Record::ServiceConfig {
            dc: "dc1".into(),
            service: "pay".into(),
            strategy: None,
            panic_threshold: Some(101),
        };
        assert!(
            d.decode_any(3, &postcard::to_allocvec(&bad).unwrap())
                .is_err()
        );
    }

    #[test]
    fn garbage_is_an_error_not_a_panic() {
        let mut d = Decoder::default();
        for bad in [&b""[..], b"\x00", b"\x07garbage", &[0xff; 40]] {
            assert!(d.decode(1, bad).is_err(), "{bad:?}");
        }
    }
}
