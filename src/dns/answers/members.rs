//! Version names that select some of a service's instances: positions of
//! their records in the service's own sets, not copies.

use super::super::encoded::offset;
use super::super::wire::types;

/// The members of a version name that selects some of its service's
/// instances: for A, AAAA and SRV, the positions of its records in the
/// service's own set of that type, in order. A version name costs four
/// bytes per member instead of copies of the records; its answers are
/// copied record by record from the service's sets.
///
/// `[n_a: u32][n_aaaa: u32][n_srv: u32][positions...]`
#[derive(Clone, Debug, Default)]
pub(super) struct Subset {
    buf: Box<[u32]>,
}

impl Subset {
    pub(super) fn new(a: &[u32], aaaa: &[u32], srv: &[u32]) -> Self {
        let counts = [a.len(), aaaa.len(), srv.len()].map(offset);
        Self {
            buf: [&counts[..], a, aaaa, srv].concat().into(),
        }
    }

    /// The positions of the records of `qtype`; empty for none (and for
    /// other types).
    pub(super) fn of_type(&self, qtype: u16) -> &[u32] {
        let [na, naaaa, nsrv] = [0, 1, 2].map(|i| self.buf[i] as usize);
        let (from, len) = match qtype {
            types::A => (3, na),
            types::AAAA => (3 + na, naaaa),
            types::SRV => (3 + na + naaaa, nsrv),
            _ => return &[],
        };
        &self.buf[from..from + len]
    }
}
