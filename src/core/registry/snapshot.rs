//! One service at one index: its instances and the version sets its
//! answers are built from. Immutable: a change builds the next snapshot and
//! swaps it into the registry's map, so readers never wait.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::sync::atomic::AtomicUsize;

use super::super::labels::{Datacenter, InstanceId, ServiceName, VersionSelector};
use super::super::model::{Instance, Version};
use super::super::strategy::Settings;

/// A service in a datacenter: the unit that answers are built for.
#[derive(Clone, PartialEq, Eq, Hash, Debug, PartialOrd, Ord)]
pub struct ServiceKey {
    pub dc: Datacenter,
    pub service: ServiceName,
}

impl ServiceKey {
    pub fn new(dc: Datacenter, service: ServiceName) -> Self {
        Self { dc, service }
    }
}

/// A service's instances, sorted by id: one pointer each (a map would add a
/// copy of the id and its share of B-tree nodes to every instance). Read it
/// as a `BTreeMap<InstanceId, Arc<Instance>>`; cloning copies the pointers.
#[derive(Clone, Default)]
pub struct Instances(pub(super) Box<[Arc<Instance>]>);

/// The `(id, instance)` pairs of [`Instances`], in id order.
pub type InstancesIter<'a> = std::iter::Map<
    std::slice::Iter<'a, Arc<Instance>>,
    fn(&'a Arc<Instance>) -> (&'a InstanceId, &'a Arc<Instance>),
>;

impl Instances {
    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn get(&self, id: &InstanceId) -> Option<&Arc<Instance>> {
        let at = self.0.binary_search_by(|i| i.id.cmp(id)).ok()?;
        Some(&self.0[at])
    }

    /// The instance at position `pos` (id order), as plans name them.
    pub fn at(&self, pos: u32) -> &Arc<Instance> {
        &self.0[pos as usize]
    }

    pub fn contains_key(&self, id: &InstanceId) -> bool {
        self.get(id).is_some()
    }

    /// The instances in id order.
    pub fn values(&self) -> std::slice::Iter<'_, Arc<Instance>> {
        self.0.iter()
    }

    /// The ids in order.
    pub fn keys(&self) -> impl DoubleEndedIterator<Item = &InstanceId> + ExactSizeIterator {
        self.0.iter().map(|i| &i.id)
    }

    pub fn iter(&self) -> InstancesIter<'_> {
        self.0.iter().map(|i| (&i.id, i))
    }

    /// These instances with `changes` applied (of two changes of one id, the
    /// later wins), in one pass; with the values the result no longer holds
    /// and the new values it does.
    pub(super) fn with_changes(
        &self,
        mut changes: Vec<(InstanceId, Option<Arc<Instance>>)>,
    ) -> (Self, Vec<Arc<Instance>>, Vec<Arc<Instance>>) {
        changes.sort_by(|a, b| a.0.cmp(&b.0)); // stable: the later change stays later
        let mut out = Vec::with_capacity(self.len() + changes.len());
        let (mut gone, mut added) = (Vec::new(), Vec::new());
        // Binary searches between the changes: a change to a large service
        // compares a few ids and copies the pointers around it.
        let mut old = &self.0[..];
        let mut changes = changes.into_iter().peekable();
        while let Some((id, new)) = changes.next() {
            if changes.peek().is_some_and(|(next, _)| *next == id) {
                continue;
            }
            let at = old.partition_point(|i| i.id < id);
            out.extend_from_slice(&old[..at]);
            old = &old[at..];
            if let Some((i, rest)) = old.split_first().filter(|(i, _)| i.id == id) {
                gone.push(i.clone());
                old = rest;
            }
            if let Some(new) = new {
                added.push(new.clone());
                out.push(new);
            }
        }
        out.extend_from_slice(old);
        (Self(out.into_boxed_slice()), gone, added)
    }
}

impl std::fmt::Debug for Instances {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_map().entries(self.iter()).finish()
    }
}

impl std::ops::Index<&InstanceId> for Instances {
    type Output = Arc<Instance>;
    fn index(&self, id: &InstanceId) -> &Arc<Instance> {
        self.get(id).expect("no entry found for key")
    }
}

impl<'a> IntoIterator for &'a Instances {
    type Item = (&'a InstanceId, &'a Arc<Instance>);
    type IntoIter = InstancesIter<'a>;
    fn into_iter(self) -> InstancesIter<'a> {
        self.iter()
    }
}

/// One service's instances at one index. Immutable; cloning the `Arc` is free.
#[derive(Debug)]
pub struct ServiceSnapshot {
    pub key: ServiceKey,
    /// All instances, sorted by id.
    pub instances: Instances,
    /// For each version number some instance runs (`2.1.0` and `v2.1.0-rc1`
    /// are one), the positions of its instances in `instances`, in id order:
    /// four bytes per instance, however many selectors match it.
    groups: Box<[Box<[u32]>]>,
    /// Every version selector that matches some instance, sorted, with the
    /// groups it matches.
    by_selector: Box<[(VersionSelector, Box<[u32]>)]>,
    /// The distinct versions of the instances, sorted: the copies that new
    /// values of the service share.
    versions: Box<[Version]>,
    /// Index of the latest change to this service.
    pub index: u64,
    /// Shared by every snapshot of the service, so round robin survives writes.
    pub(crate) rr: Arc<AtomicUsize>,
    /// Whether answers leave out warning instances (`dns.only_passing`):
    /// the registry's setting when this snapshot was built.
    pub only_passing: bool,
    /// The service's settings in effect (its own or the defaults).
    pub settings: Settings,
    /// The indexes of the instance values that outlier detection ejected,
    /// sorted: kept here, not in the instances, because it is short-lived
    /// and rare (an instance value is in one allocation size class, with
    /// no room for another field). A new value of an instance (a new
    /// registration, a health change) has a new index, so it is no longer
    /// ejected.
    pub(super) ejected: Box<[u64]>,
}

impl ServiceSnapshot {
    pub(super) fn build(
        key: ServiceKey,
        instances: Instances,
        index: u64,
        rr: Arc<AtomicUsize>,
        only_passing: bool,
        settings: Settings,
        ejected: Box<[u64]>,
    ) -> Self {
        // A service runs few versions: parse each distinct one once and fill
        // one list per version number, in id order. (Every write rebuilds
        // this, so per-instance parsing and hashing add up.)
        let mut versions: Vec<(&Version, Option<usize>)> = Vec::new();
        let mut version_at: HashMap<&str, usize> = HashMap::new();
        let mut group_of: HashMap<VersionSelector, usize> = HashMap::new();
        let mut groups: Vec<(Vec<VersionSelector>, Vec<u32>)> = Vec::new();
        for (pos, inst) in instances.values().enumerate() {
            let known = if versions.len() <= 8 {
                versions.iter().position(|(v, _)| **v == inst.version)
            } else {
                version_at.get(&*inst.version).copied()
            };
            let at = known.unwrap_or_else(|| {
                // The longest selector names the version number exactly.
                let selectors = VersionSelector::all_for(&inst.version);
                let group = selectors.last().map(|exact| {
                    *group_of.entry(*exact).or_insert_with(|| {
                        groups.push((selectors.clone(), Vec::new()));
                        groups.len() - 1
                    })
                });
                versions.push((&inst.version, group));
                version_at.insert(inst.version.as_str(), versions.len() - 1);
                versions.len() - 1
            });
            if let Some(g) = versions[at].1 {
                groups[g].1.push(pos as u32);
            }
        }
        let mut by_selector: BTreeMap<VersionSelector, Vec<u32>> = BTreeMap::new();
        for (g, (selectors, _)) in groups.iter().enumerate() {
            for sel in selectors {
                by_selector.entry(*sel).or_default().push(g as u32);
            }
        }
        let mut versions: Box<[Version]> = versions.into_iter().map(|(v, _)| v.clone()).collect();
        versions.sort_unstable_by(|a, b| a.as_str().cmp(b.as_str()));
        Self {
            key,
            groups: groups.into_iter().map(|(_, p)| p.into()).collect(),
            by_selector: by_selector
                .into_iter()
                .map(|(s, g)| (s, g.into()))
                .collect(),
            versions,
            instances,
            index,
            rr,
            only_passing,
            settings,
            ejected,
        }
    }

    /// Whether outlier detection ejected this value of the instance.
    pub fn is_ejected(&self, i: &Instance) -> bool {
        !self.ejected.is_empty() && self.ejected.binary_search(&i.index).is_ok()
    }

    /// How many instances are ejected now.
    pub fn ejected_count(&self) -> usize {
        self.ejected.len()
    }

    /// This snapshot with other settings (a service's configuration
    /// changed): the same instances, at `index`.
    pub(super) fn with_settings(&self, settings: Settings, index: u64) -> Self {
        Self {
            key: self.key.clone(),
            instances: self.instances.clone(),
            groups: self.groups.clone(),
            by_selector: self.by_selector.clone(),
            versions: self.versions.clone(),
            index,
            rr: self.rr.clone(),
            only_passing: self.only_passing,
            settings,
            ejected: self.ejected.clone(),
        }
    }

    /// This service's copy of `version`, if an instance runs it.
    pub(super) fn version(&self, version: &str) -> Option<&Version> {
        let at = self
            .versions
            .binary_search_by(|v| v.as_str().cmp(version))
            .ok()?;
        Some(&self.versions[at])
    }

    /// The version selectors that match at least one instance.
    pub fn selectors(&self) -> impl Iterator<Item = &VersionSelector> {
        self.by_selector.iter().map(|(s, _)| s)
    }

    /// The version groups `sel` matches; `None` when no instance matches it.
    pub(crate) fn groups_of(&self, sel: &VersionSelector) -> Option<&[u32]> {
        let at = self
            .by_selector
            .binary_search_by(|(s, _)| s.cmp(sel))
            .ok()?;
        Some(&self.by_selector[at].1)
    }

    /// Instances matching `version` (all when `None`), passing ones only when
    /// `healthy_only`, in id order.
    pub fn select(
        &self,
        version: Option<&VersionSelector>,
        healthy_only: bool,
    ) -> Vec<Arc<Instance>> {
        self.select_positions(version, healthy_only)
            .into_iter()
            .map(|p| self.instances.0[p as usize].clone())
            .collect()
    }

    /// What [`ServiceSnapshot::select`] returns, as positions in
    /// `instances` (id order), without touching the instances' reference
    /// counts: for builders that keep their own data in the same order.
    pub fn select_positions(
        &self,
        version: Option<&VersionSelector>,
        healthy_only: bool,
    ) -> Vec<u32> {
        let only_passing = self.only_passing;
        self.select_positions_by(version, |i| !healthy_only || i.serves(only_passing))
    }

    /// Like [`ServiceSnapshot::select_positions`], for the instances `keep`
    /// accepts.
    pub fn select_positions_by(
        &self,
        version: Option<&VersionSelector>,
        keep: impl Fn(&Instance) -> bool,
    ) -> Vec<u32> {
        let keep = |p: &u32| keep(&self.instances.0[*p as usize]);
        let Some(sel) = version else {
            return (0..self.instances.0.len() as u32).filter(keep).collect();
        };
        match self.groups_of(sel) {
            None => Vec::new(),
            Some([g]) => self.groups[*g as usize]
                .iter()
                .copied()
                .filter(keep)
                .collect(),
            Some(gs) => {
                // Several version numbers (v2: 2.1.0 and 2.2.0): back to id order.
                let mut positions: Vec<u32> = gs
                    .iter()
                    .flat_map(|g| self.groups[*g as usize].iter().copied())
                    .filter(keep)
                    .collect();
                positions.sort_unstable();
                positions
            }
        }
    }

    pub fn passing_count(&self) -> usize {
        self.instances.values().filter(|i| i.is_passing()).count()
    }
}
