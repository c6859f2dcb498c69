use std::collections::BTreeMap;

use super::*;
use crate::core::Rules;

fn policy(name: &str, rules: &str) -> Arc<Policy> {
    Arc::new(Policy {
        name: name.into(),
        description: String::new(),
        rules: serde_json::from_str(rules).unwrap(),
        index: 1,
    })
}

fn grants(policies: &[&str]) -> Grants {
    Grants {
        policies: policies
            .iter()
            .enumerate()
            .map(|(i, r)| policy(&format!("p{i}"), r))
            .collect(),
        service: None,
    }
}

use Access::{Read, Write};
use DefaultPolicy::{Allow as DefAllow, Deny as DefDeny};

#[test]
fn service_rules_follow_specificity_then_deny_then_the_most_permissive() {
    // (policies, service, access wanted, default, allowed?)
    let table: &[(&[&str], &str, Access, DefaultPolicy, bool)] = &[
        // No rule: the default decides.
        (&[], "payments", Read, DefAllow, true),
        (&[], "payments", Write, DefDeny, false),
        // "" matches every service.
        (
            &[r#"{"service_prefix":{"":"read"}}"#],
            "payments",
            Read,
            DefDeny,
            true,
        ),
        (
            &[r#"{"service_prefix":{"":"read"}}"#],
            "payments",
            Write,
            DefAllow,
            false,
        ),
        // Write implies read.
        (
            &[r#"{"service":{"payments":"write"}}"#],
            "payments",
            Read,
            DefDeny,
            true,
        ),
        // An exact rule beats a longer prefix, either way round.
        (
            &[r#"{"service":{"payments":"write"},"service_prefix":{"pay":"deny"}}"#],
            "payments",
            Write,
            DefDeny,
            true,
        ),
        (
            &[r#"{"service":{"payments":"deny"},"service_prefix":{"payments":"write"}}"#],
            "payments",
            Read,
            DefAllow,
            false,
        ),
        // The longest prefix wins.
        (
            &[r#"{"service_prefix":{"":"deny","pay":"write"}}"#],
            "payments",
            Write,
            DefDeny,
            true,
        ),
        (
            &[r#"{"service_prefix":{"":"write","pay":"deny"}}"#],
            "payments",
            Read,
            DefAllow,
            false,
        ),
        (
            &[r#"{"service_prefix":{"":"write","pay":"deny"}}"#],
            "orders",
            Write,
            DefDeny,
            true,
        ),
        // Across policies, at equal specificity, deny wins ...
        (
            &[
                r#"{"service":{"payments":"write"}}"#,
                r#"{"service":{"payments":"deny"}}"#,
            ],
            "payments",
            Read,
            DefAllow,
            false,
        ),
        // ... and otherwise the most permissive.
        (
            &[
                r#"{"service":{"payments":"read"}}"#,
                r#"{"service":{"payments":"write"}}"#,
            ],
            "payments",
            Write,
            DefDeny,
            true,
        ),
        // A more specific rule in another policy still beats a shorter one.
        (
            &[
                r#"{"service_prefix":{"":"deny"}}"#,
                r#"{"service_prefix":{"pay":"read"}}"#,
            ],
            "payments",
            Read,
            DefDeny,
            true,
        ),
        // A rule about another service does not match.
        (
            &[r#"{"service":{"orders":"write"}}"#],
            "payments",
            Read,
            DefDeny,
            false,
        ),
        (
            &[r#"{"service":{"orders":"write"}}"#],
            "payments",
            Read,
            DefAllow,
            true,
        ),
    ];
    for (i, (policies, service, want, default, allowed)) in table.iter().enumerate() {
        let d = decide(
            &grants(policies),
            *default,
            Resource::Service(service),
            *want,
        );
        assert_eq!(
            d == Decision::Allow,
            *allowed,
            "row {i}: {policies:?} {want:?} on {service} (default {default:?}) gave {d:?}"
        );
    }
}

#[test]
fn a_service_identity_writes_its_service_and_reads_every_other() {
    let g = Grants {
        policies: Vec::new(),
        service: Some(ServiceName::new("payments").unwrap()),
    };
    let on = |s, a| decide(&g, DefDeny, Resource::Service(s), a) == Decision::Allow;
    assert!(on("payments", Write));
    assert!(on("orders", Read));
    assert!(!on("orders", Write));
    // It grants nothing beyond services.
    assert!(decide(&g, DefDeny, Resource::Acl, Read) != Decision::Allow);
}

#[test]
fn acl_operator_and_audit_are_switches_where_deny_wins() {
    let g = grants(&[r#"{"acl":"write"}"#, r#"{"operator":"read"}"#]);
    assert_eq!(decide(&g, DefDeny, Resource::Acl, Write), Decision::Allow);
    assert!(decide(&g, DefDeny, Resource::Operator, Write) != Decision::Allow);
    assert!(decide(&g, DefDeny, Resource::Audit, Read) != Decision::Allow);
    let g = grants(&[r#"{"acl":"write"}"#, r#"{"acl":"deny"}"#]);
    assert!(decide(&g, DefAllow, Resource::Acl, Read) != Decision::Allow);
}

#[test]
fn a_denial_names_what_was_missing() {
    let g = grants(&[r#"{"service":{"payments":"read"}}"#]);
    let Decision::Deny(m) = decide(&g, DefDeny, Resource::Service("payments"), Write) else {
        panic!("allowed");
    };
    assert_eq!(m.to_string(), r#"service:write on "payments""#);
    let Decision::Deny(m) = decide(&grants(&[]), DefDeny, Resource::Audit, Read) else {
        panic!("allowed");
    };
    assert_eq!(
        m.to_string(),
        "audit:read (no rule grants it; the default is deny)"
    );
}

#[test]
fn the_built_in_policies_grant_what_the_roles_promise() {
    let builtin = |n: &str| {
        Arc::new(
            crate::core::acl::builtin_policies()
                .into_iter()
                .find(|p| p.name == n)
                .unwrap(),
        )
    };
    let with = |n: &str| Grants {
        policies: vec![builtin(n)],
        service: None,
    };
    let ok = |g: &Grants, r, a| decide(g, DefDeny, r, a) == Decision::Allow;
    let viewer = with("viewer");
    assert!(ok(&viewer, Resource::Service("x"), Read));
    assert!(!ok(&viewer, Resource::Service("x"), Write));
    let operator = with("operator");
    assert!(ok(&operator, Resource::Service("x"), Write));
    assert!(ok(&operator, Resource::Operator, Write));
    assert!(!ok(&operator, Resource::Acl, Read));
    let admin = with(crate::core::acl::GLOBAL_MANAGEMENT);
    for r in [
        Resource::Service("x"),
        Resource::Acl,
        Resource::Operator,
        Resource::Audit,
    ] {
        assert!(ok(&admin, r, Write), "{r}");
    }
}

#[test]
fn rules_round_trip_through_json_and_refuse_unknown_resources() {
    let r: Rules = serde_json::from_str(
        r#"{"service":{"payments":"write"},"service_prefix":{"":"read"},"audit":"read"}"#,
    )
    .unwrap();
    assert_eq!(r.service, BTreeMap::from([("payments".into(), Write)]));
    let back: Rules = serde_json::from_str(&serde_json::to_string(&r).unwrap()).unwrap();
    assert_eq!(back, r);
    assert!(serde_json::from_str::<Rules>(r#"{"services":{}}"#).is_err());
    assert!(serde_json::from_str::<Rules>(r#"{"acl":"admin"}"#).is_err());
}

#[test]
fn reading_everything_needs_every_name_read_and_no_rule_below_read() {
    // (policies, default, reads everything?)
    let table: &[(&[&str], DefaultPolicy, bool)] = &[
        (&[], DefAllow, true),
        (&[], DefDeny, false),
        (
            &[r#"{"service_prefix":{"":"read"},"key_prefix":{"":"read"}}"#],
            DefDeny,
            true,
        ),
        (&[r#"{"service_prefix":{"":"write"}}"#], DefDeny, false), // keys: default deny
        (&[r#"{"service":{"payments":"deny"}}"#], DefAllow, false),
        (&[r#"{"key_prefix":{"secret/":"deny"}}"#], DefAllow, false),
        (&[r#"{"service_prefix":{"pay":"write"}}"#], DefAllow, true),
        (
            &[
                r#"{"service_prefix":{"":"read"},"key_prefix":{"":"read"}}"#,
                r#"{"service_prefix":{"internal-":"deny"}}"#,
            ],
            DefDeny,
            false,
        ),
    ];
    for (policies, default, want) in table {
        let g = grants(policies);
        assert_eq!(
            reads_everything(&g, *default),
            *want,
            "{policies:?} {default:?}"
        );
        // It agrees with the decision for names of every kind.
        if *want {
            for name in ["payments", "internal-db", "x"] {
                assert_eq!(
                    decide(&g, *default, Resource::Service(name), Read),
                    Decision::Allow
                );
                assert_eq!(
                    decide(&g, *default, Resource::Key(name), Read),
                    Decision::Allow
                );
            }
        }
    }
    // A workload identity reads every service, but keys only by the default.
    let mut g = grants(&[]);
    g.service = Some(ServiceName::new("payments").unwrap());
    assert!(!reads_everything(&g, DefDeny));
    assert!(reads_everything(&g, DefAllow));
}
