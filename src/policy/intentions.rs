//! Intentions: may an asker with service identity S find D?
//!
//! The most specific intention that matches decides: `S -> D` over
//! `S -> *` over `* -> D` over `* -> *`; when none matches, the
//! `intentions.default` policy does. A service always finds itself (its
//! own instances are its peers), whatever the intentions say.

use std::collections::HashMap;
use std::sync::Arc;

use crate::core::{Intention, IntentionAction, ServiceName, Side};

use super::DefaultPolicy;

/// Where the intentions are looked up, one (source, destination) at a
/// time: a map of its own, or the registry's objects (`crate::askers`),
/// so that a change of one intention costs no copy of all of them.
pub trait IntentionTable: Send + Sync + std::fmt::Debug {
    /// The action of the intention `source -> destination`, if there is one.
    fn action(&self, source: &Side, destination: &Side) -> Option<IntentionAction>;
    fn is_empty(&self) -> bool;
}

impl IntentionTable for HashMap<(Side, Side), IntentionAction> {
    fn action(&self, source: &Side, destination: &Side) -> Option<IntentionAction> {
        self.get(&(source.clone(), destination.clone())).copied()
    }

    fn is_empty(&self) -> bool {
        HashMap::is_empty(self)
    }
}

/// Every intention, by (source, destination), with the default.
#[derive(Clone, Debug)]
pub struct Intentions {
    rules: Arc<dyn IntentionTable>,
    default: DefaultPolicy,
}

/// Which intention decided (for the API's "check" answers and tests).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Matched {
    /// The intention (source, destination) that matched.
    Rule(Side, Side),
    /// None matched: `intentions.default`.
    Default,
    /// The asker is the destination itself.
    Itself,
}

impl Intentions {
    pub fn new<'a>(all: impl IntoIterator<Item = &'a Intention>, default: DefaultPolicy) -> Self {
        let rules: HashMap<(Side, Side), IntentionAction> = all
            .into_iter()
            .map(|i| ((i.source.clone(), i.destination.clone()), i.action))
            .collect();
        Self::over(Arc::new(rules), default)
    }

    /// The intentions of `table`, looked up as they are asked for.
    pub fn over(table: Arc<dyn IntentionTable>, default: DefaultPolicy) -> Self {
        Self {
            rules: table,
            default,
        }
    }

    pub fn is_empty(&self) -> bool {
        self.rules.is_empty()
    }

    pub fn default_policy(&self) -> DefaultPolicy {
        self.default
    }

    /// The action for `source -> destination`, and what decided it.
    pub fn decide(
        &self,
        source: &ServiceName,
        destination: &ServiceName,
    ) -> (IntentionAction, Matched) {
        if source == destination {
            return (IntentionAction::Allow, Matched::Itself);
        }
        let (s, d) = (
            Side::Service(source.clone()),
            Side::Service(destination.clone()),
        );
        let order = [
            (s.clone(), d.clone()),
            (s, Side::Any),
            (Side::Any, d),
            (Side::Any, Side::Any),
        ];
        for key in order {
            if let Some(a) = self.rules.action(&key.0, &key.1) {
                return (a, Matched::Rule(key.0, key.1));
            }
        }
        let a = match self.default {
            DefaultPolicy::Allow => IntentionAction::Allow,
            DefaultPolicy::Deny => IntentionAction::Deny,
        };
        (a, Matched::Default)
    }

    pub fn allows(&self, source: &ServiceName, destination: &ServiceName) -> bool {
        self.decide(source, destination).0 == IntentionAction::Allow
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn side(s: &str) -> Side {
        Side::parse(s).unwrap()
    }

    fn name(s: &str) -> ServiceName {
        ServiceName::new(s).unwrap()
    }

    fn table(rules: &[(&str, &str, &str)], default: DefaultPolicy) -> Intentions {
        let all: Vec<Intention> = rules
            .iter()
            .map(|(s, d, a)| Intention {
                source: side(s),
                destination: side(d),
                action: IntentionAction::parse(a).unwrap(),
                description: String::new(),
                index: 1,
            })
            .collect();
        Intentions::new(&all, default)
    }

    /// (existing intentions, default, source, destination, action, rule
    /// that decided: `None` for the default).
    type Row = (
        &'static [(&'static str, &'static str, &'static str)],
        DefaultPolicy,
        &'static str,
        &'static str,
        &'static str,
        Option<(&'static str, &'static str)>,
    );

    /// The precedence table: each row is the intentions that exist, the
    /// question, and the answer with what decided it.
    #[test]
    fn the_most_specific_intention_wins() {
        use DefaultPolicy::{Allow as DA, Deny as DD};
        #[rustfmt::skip]
        let rows: &[Row] = &[
            // exact/exact beats everything
            (&[("web", "db", "allow"), ("web", "*", "deny"), ("*", "db", "deny"), ("*", "*", "deny")], DD, "web", "db", "allow", Some(("web", "db"))),
            (&[("web", "db", "deny"), ("web", "*", "allow"), ("*", "db", "allow"), ("*", "*", "allow")], DA, "web", "db", "deny", Some(("web", "db"))),
            // exact/* beats */exact and */*
            (&[("web", "*", "deny"), ("*", "db", "allow"), ("*", "*", "allow")], DA, "web", "db", "deny", Some(("web", "*"))),
            (&[("web", "*", "allow"), ("*", "db", "deny")], DD, "web", "db", "allow", Some(("web", "*"))),
            // */exact beats */*
            (&[("*", "db", "deny"), ("*", "*", "allow")], DA, "web", "db", "deny", Some(("*", "db"))),
            (&[("*", "db", "allow"), ("*", "*", "deny")], DD, "api", "db", "allow", Some(("*", "db"))),
            // */* beats the default
            (&[("*", "*", "deny")], DA, "web", "db", "deny", Some(("*", "*"))),
            (&[("*", "*", "allow")], DD, "web", "db", "allow", Some(("*", "*"))),
            // rules about other services do not match
            (&[("api", "db", "deny"), ("web", "cache", "deny")], DA, "web", "db", "allow", None),
            (&[("api", "db", "allow")], DD, "web", "db", "deny", None),
            // no rules: the default
            (&[], DA, "web", "db", "allow", None),
            (&[], DD, "web", "db", "deny", None),
        ];
        for (n, (rules, default, s, d, want, by)) in rows.iter().enumerate() {
            let t = table(rules, *default);
            let (action, matched) = t.decide(&name(s), &name(d));
            assert_eq!(action.as_str(), *want, "row {n}: {s} -> {d}");
            let want_by = match by {
                Some((a, b)) => Matched::Rule(side(a), side(b)),
                None => Matched::Default,
            };
            assert_eq!(matched, want_by, "row {n}: {s} -> {d}");
        }
    }

    #[test]
    fn a_service_always_finds_itself() {
        let t = table(
            &[("*", "*", "deny"), ("db", "db", "deny")],
            DefaultPolicy::Deny,
        );
        assert!(t.allows(&name("db"), &name("db")));
        assert!(!t.allows(&name("web"), &name("db")));
    }
}
