//! What is stored at one name: the record sets every asker class sees, a
//! service's version names and instance names (found through the service's
//! node), and static zone data.

use crate::askers::ServiceRef;
use crate::core::{AskerClass, VersionSelector};

use super::super::wire::types;
use super::super::zone::StaticRrset;
use super::instances::InstanceTable;
use super::lookup::Found;
use super::members::Subset;
use super::rrset::RecordSet;

/// The dynamic record sets of a name.
#[derive(Clone, Debug, Default)]
pub(super) struct Sets {
    pub(super) a: Option<RecordSet>,
    pub(super) aaaa: Option<RecordSet>,
    pub(super) srv: Option<RecordSet>,
}

impl Sets {
    /// Sets are never empty (an empty one is left out: NODATA either way).
    pub(super) fn of_type(&self, qtype: u16) -> Option<&RecordSet> {
        match qtype {
            types::A => self.a.as_ref(),
            types::AAAA => self.aaaa.as_ref(),
            types::SRV => self.srv.as_ref(),
            _ => None,
        }
    }
}

/// Everything that can be answered at one name.
#[derive(Clone, Debug, Default)]
pub struct Node {
    /// What every asker that may see the service sees. Read rules and
    /// intentions decide per service whether an asker's class sees it at
    /// all (`service`, docs/adr/0011-asker-classes.md); answers that vary
    /// within a service by who asks are the strategies' orders.
    pub(super) anyone: Variant,
    /// At a service name: the answers of `<id>.<service>.<dc>.<zone>`, the
    /// instance names, also looked up through the service's node.
    pub(super) instances: InstanceTable,
    pub(super) statics: Box<[StaticRrset]>,
    /// The service whose answers these are (`None`: static data only).
    /// Policy decides per service whether an asker sees them
    /// (docs/adr/0011-asker-classes.md).
    pub(super) service: Option<ServiceRef>,
}

/// The dynamic answers of a name as one asker class sees them.
#[derive(Clone, Debug, Default)]
pub(super) struct Variant {
    pub(super) sets: Sets,
    /// At a service name: the version names `<selector>.<name>`, looked up
    /// through the service's node rather than stored one by one. A handful
    /// of selectors, scanned, each with the index of its members in
    /// `version_sets`, or [`SAME_SETS`]: a selector that selects every
    /// instance (the common case) answers with the node's own sets.
    pub(super) versions: Selectors,
    pub(super) version_sets: Box<[Subset]>,
    /// How the service name's answers are ordered per query: its
    /// strategy's precomputed orders of `sets`.
    pub(super) spread: Spread,
}

/// The precomputed orders of a name's sets for its service's strategy
/// (docs/adr/0007-answer-variants-for-strategies.md): a bounded number,
/// rebuilt with the node; a query picks one, never builds or sorts.
/// Each order is a [`Subset`] holding every record of each set (positions
/// in the set, four bytes each).
#[derive(Clone, Debug, Default)]
pub(super) enum Spread {
    /// `round_robin`: a rotating window of the sets themselves.
    #[default]
    Rotate,
    /// `weighted`, `random`: one of these orders per query, in turn.
    Cycle(Box<[Subset]>),
    /// `sticky`: the order of the client subnet's bucket (one per bucket).
    Sticky(Box<[Subset]>),
    /// `nearest`: by client zone number, the order with that zone's
    /// instances first (`None`: the zone has none; rotate as round robin).
    Nearest(Box<[Option<Near>]>),
}

/// The order of one client zone: its instances first.
#[derive(Clone, Debug)]
pub(super) struct Near {
    pub(super) order: Subset,
    /// How many of each type's records (A, AAAA, SRV) are the zone's own:
    /// answers rotate among those, then follow with the rest in order.
    pub(super) head: [u32; 3],
}

/// The order `spread` gives a query of `qtype` (positions in the set of
/// that type) and how many leading positions rotate; `None`: rotate the
/// whole set (round robin).
pub(super) struct Chosen<'a> {
    pub(super) members: &'a [u32],
    pub(super) head: usize,
}

impl Spread {
    /// The order for this query. `turn` is the thread's rotation counter,
    /// `bucket` and `zone` what the asker's address comes to (computed
    /// only when the strategy needs them).
    #[inline]
    pub(super) fn choose(
        &self,
        qtype: u16,
        turn: usize,
        bucket: impl FnOnce() -> usize,
        zone: impl FnOnce() -> Option<u16>,
    ) -> Option<Chosen<'_>> {
        match self {
            Spread::Rotate => None,
            Spread::Cycle(orders) => orders.get(turn % orders.len().max(1)).map(|o| Chosen {
                members: o.of_type(qtype),
                head: 0,
            }),
            Spread::Sticky(orders) => orders.get(bucket() % orders.len().max(1)).map(|o| Chosen {
                members: o.of_type(qtype),
                head: 0,
            }),
            Spread::Nearest(zones) => {
                let near = zones.get(usize::from(zone()?))?.as_ref()?;
                let k = match qtype {
                    types::A => 0,
                    types::AAAA => 1,
                    _ => 2,
                };
                Some(Chosen {
                    members: near.order.of_type(qtype),
                    head: near.head[k] as usize,
                })
            }
        }
    }
}

/// A service's version selectors, each with the index of its [`Subset`] or
/// [`SAME_SETS`].
pub(super) type Selectors = Box<[(VersionSelector, u32)]>;

/// A version name whose sets are its service name's.
pub(super) const SAME_SETS: u32 = u32::MAX;

impl Node {
    /// The answers `class` sees at this name: chosen after the lookup, so
    /// the query path stays one lookup whatever the number of classes.
    #[inline]
    pub(super) fn variant(&self, _class: AskerClass) -> &Variant {
        &self.anyone
    }
}

impl Variant {
    /// What the version name `sel` below this node answers, if it exists.
    pub(super) fn version(&self, sel: &VersionSelector) -> Option<Found<'_>> {
        let (_, at) = self.versions.iter().find(|(s, _)| s == sel)?;
        if *at == SAME_SETS {
            return Some(Found::Version(&self.sets, None));
        }
        let subset = self.version_sets.get(*at as usize)?;
        Some(Found::Version(&self.sets, Some(subset)))
    }
}
