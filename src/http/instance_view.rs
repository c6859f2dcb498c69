//! An instance as the API shows it: every stored field, plus its DNS names.
//! The API's own wire form (the registry's layout is not it), the same in
//! every answer: a registration's reply, listings, each `change` event of
//! the streams and each instance of an MQTT healthy set.
//!
//! ```text
//! {"id","version","index","port","weight","health","service","datacenter",
//!  "address","tags","metadata",["compat",]"ttl",["resolution",]"checks","dns"}
//! ```
//!
//! It is written straight into bytes rather than through a derived
//! `Serialize`: every change is encoded for the streams and again for its
//! service's healthy set, and serde_json escapes each field name and
//! formats each address through `fmt` on every call, about five times
//! the work (docs/performance.md, "Registrations with event consumers
//! attached"). The bytes are serde_json's for the same fields: the tests
//! compare them with a derived reference.

use std::borrow::Cow;
use std::fmt::Write as _;
use std::net::IpAddr;

use axum::http::header;
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use serde_json::json;

use super::{DnsNames, HttpState, dns_names};
use crate::core::{Address, HostAddress, Instance, Resolved};

/// One instance's view, written by [`InstanceView::write`].
pub struct InstanceView<'a> {
    instance: &'a Instance,
    /// Its service's names (`name` and `srv` are the service's, made
    /// once for all instances of a listing; `instance` its own).
    names: Cow<'a, DnsNames>,
}

pub fn view<'a>(st: &HttpState, instance: &'a Instance) -> InstanceView<'a> {
    let names = dns_names(st, &instance.datacenter, &instance.service);
    view_named(Cow::Owned(names), instance)
}

/// [`view`] of an instance of the service these names are of.
pub fn view_named<'a>(names: Cow<'a, DnsNames>, instance: &'a Instance) -> InstanceView<'a> {
    InstanceView { instance, names }
}

impl InstanceView<'_> {
    /// Appends the view's JSON to `out`.
    pub fn write(&self, out: &mut Vec<u8>) {
        let i = self.instance;
        let mut o = Out(out);
        o.raw("{\"id\":");
        o.str(i.id.as_str());
        o.raw(",\"version\":");
        o.str(i.version.as_str());
        // The index of the change that produced this value.
        o.raw(",\"index\":");
        o.int(i.index);
        o.raw(",\"port\":");
        o.int(i.port);
        o.raw(",\"weight\":");
        o.int(i.weight);
        // Its status: the worst of its checks.
        o.raw(",\"health\":\"");
        o.raw(i.status().as_str());
        o.raw("\",\"service\":");
        o.str(i.service.as_str());
        o.raw(",\"datacenter\":");
        o.str(i.datacenter.as_str());
        o.raw(",\"address\":");
        o.address(&i.address);
        o.raw(",\"tags\":");
        o.serde(&i.tags);
        o.raw(",\"metadata\":");
        o.serde(&i.metadata);
        if let Some(c) = i.compat.as_deref() {
            // The fields a Maxine SDK sent, as they were sent.
            o.raw(",\"compat\":");
            o.serde(&CompatView {
                service_name: &c.service_name,
                node_name: &c.node_name,
                host_name: &c.host_name,
                ssl: c.ssl,
                path: &c.path,
                health_check_path: &c.health_check_path,
            });
        }
        // Seconds.
        o.raw(",\"ttl\":");
        o.serde(&i.ttl().as_secs_f64());
        if let Some(host) = i.address.host() {
            // For an instance registered by host name: what it resolved to.
            o.raw(",\"resolution\":");
            o.serde(&resolution_view(host));
        }
        // Its checks: the implicit `ttl` (the fields a `checks::CheckView`
        // of it would have) and the defined ones in name order.
        o.raw(",\"checks\":[{\"name\":");
        o.str(crate::core::check::TTL_CHECK);
        o.raw(",\"kind\":\"ttl\",\"status\":\"");
        o.raw(i.health.as_str());
        o.raw("\",\"ttl\":");
        o.serde(&i.ttl().as_secs_f64());
        o.raw("}");
        for check in super::checks::defined_views(i) {
            o.raw(",");
            o.serde(&check);
        }
        let n = &*self.names;
        o.raw("],\"dns\":{\"name\":");
        o.str(&n.name);
        o.raw(",\"srv\":");
        o.str(&n.srv);
        // `<id>.payments.dc1.maxine`: the core's naming of an instance.
        o.raw(",\"instance\":");
        o.string_of(|s| {
            let _ = write!(s, "{}", n.instance_name(&i.id));
        });
        o.raw("}}");
    }

    fn to_vec(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(512);
        self.write(&mut out);
        out
    }
}

/// Inside other answers (listings): the same bytes, taken as they are.
impl Serialize for InstanceView<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let json = String::from_utf8(self.to_vec()).map_err(serde::ser::Error::custom)?;
        serde_json::value::RawValue::from_string(json)
            .map_err(serde::ser::Error::custom)?
            .serialize(s)
    }
}

/// An answer of one instance (a registration, a check change).
impl IntoResponse for InstanceView<'_> {
    fn into_response(self) -> Response {
        ([(header::CONTENT_TYPE, "application/json")], self.to_vec()).into_response()
    }
}

/// The fields a Maxine SDK sent, as they were sent.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct CompatView<'a> {
    service_name: &'a str,
    node_name: &'a str,
    host_name: &'a str,
    ssl: bool,
    path: &'a str,
    /// Shown as sent ("" when none): an HTTP check (docs/health.md).
    health_check_path: &'a str,
}

/// What an instance's host name resolved to, as the listing shows it:
/// `pending` (not resolved yet), `resolved` with its addresses, or
/// `unresolved` with the reason (out of DNS answers until it resolves);
/// `since`: when that outcome was first seen.
fn resolution_view(host: &HostAddress) -> serde_json::Value {
    match host.resolution() {
        None => json!({ "state": "pending" }),
        Some(r) => {
            let since = super::acl::rfc3339(r.since_ms);
            match &r.outcome {
                Resolved::Addresses(a) => {
                    json!({ "state": "resolved", "addresses": a, "since": since })
                }
                Resolved::Failed(why) => {
                    json!({ "state": "unresolved", "error": why, "since": since })
                }
            }
        }
    }
}

/// JSON written into a buffer: literal pieces as they are, strings as
/// serde_json writes them, the rest by serde_json.
struct Out<'a>(&'a mut Vec<u8>);

impl Out<'_> {
    /// JSON that is already JSON (field names, punctuation).
    fn raw(&mut self, json: &str) {
        self.0.extend_from_slice(json.as_bytes());
    }

    /// A string, escaped only where serde_json would escape it.
    fn str(&mut self, s: &str) {
        if needs_no_escape(s.as_bytes()) {
            self.0.push(b'"');
            self.0.extend_from_slice(s.as_bytes());
            self.0.push(b'"');
        } else {
            self.serde(s);
        }
    }

    /// A string made by `f`: written in place, escaped only if it must be.
    fn string_of(&mut self, f: impl FnOnce(&mut String)) {
        let mut s = String::with_capacity(64);
        f(&mut s);
        self.str(&s);
    }

    fn int(&mut self, n: impl itoa::Integer) {
        self.raw(itoa::Buffer::new().format(n));
    }

    /// An address as its text: IPv4 without going through `fmt`.
    fn address(&mut self, a: &Address) {
        match a {
            Address::Ip(IpAddr::V4(v4)) => {
                let [a, b, c, d] = v4.octets();
                self.0.push(b'"');
                self.int(a);
                for octet in [b, c, d] {
                    self.0.push(b'.');
                    self.int(octet);
                }
                self.0.push(b'"');
            }
            Address::Ip(ip) => self.string_of(|s| {
                let _ = write!(s, "{ip}");
            }),
            Address::Host(h) => self.str(h.name()),
        }
    }

    fn serde<T: Serialize + ?Sized>(&mut self, v: &T) {
        // Writing into a Vec fails only for a value that cannot be JSON
        // (a map with non-string keys): none of these is one.
        let _ = serde_json::to_writer(&mut *self.0, v);
    }
}

/// Whether serde_json writes these bytes of a string as they are (it
/// escapes control characters, `"` and `\` only).
fn needs_no_escape(s: &[u8]) -> bool {
    s.iter().all(|&b| b >= 0x20 && b != b'"' && b != b'\\')
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::{
        CompatFields, Datacenter, Health, InstanceId, Metadata, ServiceName, Tags, Text,
    };
    use std::sync::Arc;

    /// The wire form as a derived `Serialize` writes it: the reference
    /// the hand-written bytes must equal.
    #[derive(Serialize)]
    struct Reference<'a> {
        id: &'a str,
        version: &'a str,
        index: u64,
        port: u16,
        weight: u16,
        health: Health,
        service: &'a str,
        datacenter: &'a str,
        address: String,
        tags: &'a Tags,
        metadata: &'a Metadata,
        #[serde(skip_serializing_if = "Option::is_none")]
        compat: Option<CompatView<'a>>,
        ttl: f64,
        #[serde(skip_serializing_if = "Option::is_none")]
        resolution: Option<serde_json::Value>,
        checks: Vec<ReferenceCheck<'a>>,
        dns: ReferenceDns,
    }

    #[derive(Serialize)]
    #[serde(untagged)]
    enum ReferenceCheck<'a> {
        Ttl {
            name: &'a str,
            kind: &'a str,
            status: Health,
            ttl: f64,
        },
        Defined(crate::http::checks::CheckView<'a>),
    }

    #[derive(Serialize)]
    struct ReferenceDns {
        name: String,
        srv: String,
        instance: String,
    }

    fn reference(names: &DnsNames, i: &Instance) -> String {
        let mut instance = format!("{}.{}.{}", i.id, names.service, names.dc);
        if !names.zone.is_empty() {
            instance = format!("{instance}.{}", names.zone);
        }
        serde_json::to_string(&Reference {
            id: i.id.as_str(),
            version: i.version.as_str(),
            index: i.index,
            port: i.port,
            weight: i.weight,
            health: i.status(),
            service: i.service.as_str(),
            datacenter: i.datacenter.as_str(),
            address: i.address.to_string(),
            tags: &i.tags,
            metadata: &i.metadata,
            compat: i.compat.as_deref().map(|c| CompatView {
                service_name: &c.service_name,
                node_name: &c.node_name,
                host_name: &c.host_name,
                ssl: c.ssl,
                path: &c.path,
                health_check_path: &c.health_check_path,
            }),
            ttl: i.ttl().as_secs_f64(),
            resolution: i.address.host().map(resolution_view),
            checks: std::iter::once(ReferenceCheck::Ttl {
                name: "ttl",
                kind: "ttl",
                status: i.health,
                ttl: i.ttl().as_secs_f64(),
            })
            .chain(crate::http::checks::defined_views(i).map(ReferenceCheck::Defined))
            .collect(),
            dns: ReferenceDns {
                name: names.name.clone(),
                srv: names.srv.clone(),
                instance,
            },
        })
        .unwrap()
    }

    fn names(zone: &str) -> DnsNames {
        DnsNames {
            name: format!("payments.{zone}"),
            srv: format!("_payments._tcp.{zone}"),
            dc: Datacenter::new("dc1").unwrap(),
            service: ServiceName::new("payments").unwrap(),
            zone: zone.to_string(),
        }
    }

    fn instance(address: &str, f: impl FnOnce(&mut crate::core::InstanceSpec)) -> Arc<Instance> {
        let mut spec = crate::core::InstanceSpec::new(Address::parse(address).unwrap(), 8080);
        spec.version = "2.1.0".into();
        f(&mut spec);
        let key = crate::core::ServiceKey::new(
            Datacenter::new("dc1").unwrap(),
            ServiceName::new("payments").unwrap(),
        );
        let version = spec.version.as_str().into();
        Arc::new(Instance::from_spec(
            &key,
            InstanceId::new("i-1").unwrap(),
            spec,
            version,
            Health::Critical,
            42,
            0,
        ))
    }

    fn same(names: &DnsNames, i: &Instance) {
        let got = view_named(Cow::Borrowed(names), i).to_vec();
        let got = String::from_utf8(got).unwrap();
        assert_eq!(got, reference(names, i));
        // And as a part of another answer.
        let inside = serde_json::to_string(&[view_named(Cow::Borrowed(names), i)]).unwrap();
        assert_eq!(inside, format!("[{got}]"));
    }

    #[test]
    fn the_written_view_is_what_serde_writes() {
        let plain = names("maxine");
        for address in [
            "10.1.2.3",
            "0.0.0.0",
            "255.255.255.255",
            "::1",
            "fd00::1:2",
            "db.local",
        ] {
            same(&plain, &instance(address, |_| {}));
        }
        same(&names(""), &instance("10.0.0.1", |_| {}));
        // Strings that must be escaped, non-ASCII, tags, metadata, a
        // fractional ttl, an SDK's fields.
        let busy = instance("10.0.0.2", |s| {
            s.version = "1.0-\"beta\"\\\n\u{1}é".into();
            s.tags = vec!["a\"b".into(), "ü".into(), "plain".into()];
            s.metadata = [("k\"1", "v\n1"), ("zone", "eu-west-1")]
                .into_iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect();
            s.ttl = std::time::Duration::from_millis(1500);
            s.weight = 65535;
            s.compat = Some(Box::new(CompatFields {
                service_name: Text::from("Payments \"EU\""),
                node_name: Text::from("node-1"),
                host_name: Text::from("h\\1"),
                ssl: true,
                path: Text::from("/api"),
                health_check_path: Text::from(""),
            }));
        });
        same(&plain, &busy);
        // A defined check (the one an SDK's healthCheckPath stands for).
        let checked = instance("127.0.0.1", |s| {
            s.compat = Some(Box::new(CompatFields {
                service_name: Text::from("payments"),
                node_name: Text::from("node-1"),
                host_name: Text::from("127.0.0.1"),
                ssl: false,
                path: Text::from(""),
                health_check_path: Text::from("/health"),
            }));
        });
        assert!(
            !checked.checks.is_empty(),
            "the healthCheckPath defines a check"
        );
        same(&plain, &checked);
    }

    #[test]
    fn an_answer_of_one_instance_is_json() {
        let plain = names("maxine");
        let i = instance("10.1.2.3", |_| {});
        let r = view_named(Cow::Borrowed(&plain), &i).into_response();
        assert_eq!(r.headers()[header::CONTENT_TYPE], "application/json");
    }

    #[test]
    fn escaping_matches_serde_json() {
        for b in 0u8..=0x7f {
            let s = (b as char).to_string();
            let plain = serde_json::to_string(&s).unwrap() == format!("\"{s}\"");
            assert_eq!(needs_no_escape(s.as_bytes()), plain, "byte {b:#x}");
        }
        assert!(needs_no_escape("é✓".as_bytes()));
    }
}
