//! The DNS naming grammar, in one place: which names under the zone mean
//! which registry question. `docs/dns.md` describes the same grammar for users.
//!
//! Labels are read left to right, without the zone suffix, in lowercase:
//!
//! | labels                     | meaning                                         |
//! |----------------------------|-------------------------------------------------|
//! | `svc`                      | passing instances of `svc` in the local dc      |
//! | `vN[-M[-P]].svc`           | the same, versions matching the selector        |
//! | `svc.dc`                   | passing instances of `svc` in `dc`              |
//! | `vN[-M[-P]].svc.dc`        | the same, by version                            |
//! | `_svc._tcp`, `_svc._tcp.dc`| RFC 2782 SRV spelling of `svc` / `svc.dc`       |
//! | `id.svc.dc`                | one instance (the SRV targets)                  |
//!
//! Service names, datacenters and instance ids are never shaped like version
//! selectors and service names never equal a datacenter, so each name has
//! exactly one reading.

use super::labels::{Datacenter, InstanceId, ServiceName, VersionSelector};
use super::registry::ServiceKey;

/// What a name under the zone refers to.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum NameTarget {
    /// Instances of a service. `dc: None` is the local datacenter.
    Service {
        dc: Option<Datacenter>,
        service: ServiceName,
        version: Option<VersionSelector>,
        /// Spelled `_svc._tcp` (RFC 2782).
        srv_form: bool,
    },
    /// One instance, by id.
    Instance {
        dc: Datacenter,
        service: ServiceName,
        id: InstanceId,
    },
}

/// Reads labels (left to right, zone removed). `is_dc` tells known datacenters.
pub fn parse(labels: &[&str], is_dc: impl Fn(&str) -> bool) -> Option<NameTarget> {
    let svc = |l: &str| ServiceName::new(l).ok();
    let dc = |l: &str| is_dc(l).then(|| Datacenter::new(l).ok()).flatten();
    let srv = |a: &str, b: &str| {
        (b == "_tcp")
            .then(|| a.strip_prefix('_').and_then(svc))
            .flatten()
    };
    let service = |dc, service, version, srv_form| NameTarget::Service {
        dc,
        service,
        version,
        srv_form,
    };
    match *labels {
        [s] => Some(service(None, svc(s)?, None, false)),
        [a, b] => {
            if b.starts_with('_') {
                Some(service(None, srv(a, b)?, None, true))
            } else if let Some(sel) = VersionSelector::parse(a) {
                Some(service(None, svc(b)?, Some(sel), false))
            } else {
                Some(service(Some(dc(b)?), svc(a)?, None, false))
            }
        }
        [a, b, c] => {
            let d = dc(c)?;
            if b.starts_with('_') {
                Some(service(Some(d), srv(a, b)?, None, true))
            } else if let Some(sel) = VersionSelector::parse(a) {
                Some(service(Some(d), svc(b)?, Some(sel), false))
            } else {
                Some(NameTarget::Instance {
                    dc: d,
                    service: svc(b)?,
                    id: InstanceId::new(a).ok()?,
                })
            }
        }
        _ => None,
    }
}

/// What the first label of a name right below a service's name means,
/// where that name is not itself a service name.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BelowService<'a> {
    /// `<selector>.<service>[.<dc>]`: a version name.
    Version(VersionSelector),
    /// `<id>.<service>.<dc>`: an instance name (the id label, as asked).
    Instance(&'a [u8]),
}

/// Reads a name below a service name on the query path, where it arrives as
/// wire labels: `first` is its first label (lowercase), `base_first` the
/// first label of the rest of the name, and `labels` how many labels the
/// name has under the zone. The same grammar as [`parse`]: version names
/// have 2 or 3 labels, instance names 3; SRV-form names (`_svc._tcp...`)
/// have nothing below them. Instance ids never look like selectors, so the
/// first label says which. Costs no allocation.
pub fn below_service<'a>(
    first: &'a [u8],
    base_first: &[u8],
    labels: usize,
) -> Option<BelowService<'a>> {
    if !(2..=3).contains(&labels) || base_first.first() == Some(&b'_') {
        return None;
    }
    // Cheap test first: a selector label starts with 'v' and a digit.
    if first.len() >= 2
        && first[0] == b'v'
        && first[1].is_ascii_digit()
        && let Some(sel) = std::str::from_utf8(first)
            .ok()
            .and_then(VersionSelector::parse)
    {
        return Some(BelowService::Version(sel));
    }
    (labels == 3).then_some(BelowService::Instance(first))
}

/// The labels of a target, left to right, without the zone.
pub fn render(t: &NameTarget) -> Vec<String> {
    match t {
        NameTarget::Service {
            dc,
            service,
            version,
            srv_form,
        } => {
            // Labels copied as they are, not through `fmt`: every
            // change renders its service's names.
            let mut out = Vec::with_capacity(3);
            if *srv_form {
                out.push(["_", service.as_str()].concat());
                out.push("_tcp".to_owned());
            } else {
                if let Some(v) = version {
                    out.push(v.to_string());
                }
                out.push(service.as_str().to_owned());
            }
            if let Some(d) = dc {
                out.push(d.as_str().to_owned());
            }
            out
        }
        NameTarget::Instance { dc, service, id } => {
            vec![
                id.as_str().to_owned(),
                service.as_str().to_owned(),
                dc.as_str().to_owned(),
            ]
        }
    }
}

/// The names of a service itself: the address form and the SRV form, with
/// the datacenter and, when it is local, without. Its version names
/// (`<selector>.<name>`) and instance names come on top; see [`NameTarget`].
pub fn service_names(key: &ServiceKey, local_dc: &Datacenter) -> Vec<NameTarget> {
    let mut dcs = vec![Some(key.dc.clone())];
    if &key.dc == local_dc {
        dcs.insert(0, None);
    }
    let mut out = Vec::with_capacity(2 * dcs.len());
    for dc in dcs {
        for srv_form in [false, true] {
            out.push(NameTarget::Service {
                dc: dc.clone(),
                service: key.service.clone(),
                version: None,
                srv_form,
            });
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(name: &str) -> Option<NameTarget> {
        let labels: Vec<&str> = name.split('.').collect();
        parse(&labels, |l| l == "dc1" || l == "dc2")
    }

    #[test]
    fn every_documented_form_parses_and_renders_back() {
        for name in [
            "payments",
            "v2.payments",
            "v2-1.payments",
            "payments.dc1",
            "v2.payments.dc2",
            "_payments._tcp",
            "_payments._tcp.dc2",
            "web-1.payments.dc1",
        ] {
            let t = p(name).unwrap_or_else(|| panic!("{name} did not parse"));
            assert_eq!(render(&t).join("."), name);
        }
    }

    #[test]
    fn names_below_a_service_read_as_the_grammar_says() {
        use BelowService::*;
        let v2 = VersionSelector::parse("v2").unwrap();
        assert_eq!(below_service(b"v2", b"payments", 2), Some(Version(v2)));
        assert_eq!(below_service(b"v2", b"payments", 3), Some(Version(v2)));
        assert_eq!(
            below_service(b"web-1", b"payments", 3),
            Some(Instance(b"web-1"))
        );
        assert_eq!(
            below_service(b"v2x", b"payments", 3),
            Some(Instance(b"v2x"))
        );
        assert_eq!(
            below_service(b"web-1", b"payments", 2),
            None,
            "instances need a dc"
        );
        assert_eq!(
            below_service(b"v2", b"_payments", 3),
            None,
            "nothing below SRV names"
        );
        assert_eq!(below_service(b"v2", b"payments", 1), None);
        assert_eq!(below_service(b"a", b"b", 4), None);
    }

    #[test]
    fn unknown_datacenters_and_bad_labels_do_not_parse() {
        for name in [
            "payments.dc9",
            "v2.payments.dc9",
            "_payments._udp",
            "_payments.tcp",
            "a.b.c.d",
            "v2",
            "pay_ments",
            "x.v2.dc1",
        ] {
            assert_eq!(p(name), None, "{name}");
        }
    }

    #[test]
    fn names_at_the_length_limits_render_to_legal_dns_names() {
        use crate::core::labels::{MAX_LABEL_LEN, MAX_NAME_OCTETS, max_zone_len};
        let service = ServiceName::new(&"s".repeat(ServiceName::MAX_LEN)).unwrap();
        let dc = Datacenter::new(&"d".repeat(Datacenter::MAX_LEN)).unwrap();
        let id = InstanceId::new(&"i".repeat(InstanceId::MAX_LEN)).unwrap();
        // The longest selector: three parts of u32::MAX.
        let sel = VersionSelector::parse("v4294967295-4294967295-4294967295").unwrap();
        let zone_labels = ["z".repeat(MAX_LABEL_LEN - 2)];
        let zone_len = zone_labels.join(".").len();
        assert!(zone_len <= max_zone_len());
        let key = ServiceKey::new(dc.clone(), service.clone());
        let mut targets = service_names(&key, &dc);
        targets.push(NameTarget::Instance {
            dc: dc.clone(),
            service: service.clone(),
            id,
        });
        for d in [None, Some(dc.clone())] {
            targets.push(NameTarget::Service {
                dc: d,
                service: service.clone(),
                version: Some(sel),
                srv_form: false,
            });
        }
        for t in &targets {
            let labels = render(t);
            for l in &labels {
                assert!(
                    l.len() <= MAX_LABEL_LEN,
                    "{t:?}: label {l} has {} octets",
                    l.len()
                );
            }
            let octets: usize = labels
                .iter()
                .chain(&zone_labels)
                .map(|l| 1 + l.len())
                .sum::<usize>()
                + 1;
            assert!(octets <= MAX_NAME_OCTETS, "{t:?}: {octets} octets");
            let strs: Vec<&str> = labels.iter().map(String::as_str).collect();
            assert_eq!(parse(&strs, |l| l == dc.as_str()).as_ref(), Some(t));
        }
        // The longest zone leaves room for the longest instance name exactly.
        let longest = 64 + 63 + 64 + (max_zone_len() + 1) + 1;
        assert_eq!(longest, MAX_NAME_OCTETS);
    }
}
