//! Reading a large range in pieces of about a page each.
//!
//! etcd (3.4, 3.5) counts every key from a read's first key to its range
//! end, whatever the read's limit, to answer `more` and `count`. Paging a
//! million keys 5,000 at a time with the range's own end therefore visits
//! the index about a hundred million times (70 s at 1,000,000 instances on
//! the benchmark machine, against a second for the values themselves).
//! So each read ends a [`Step`] beyond its start instead: the distance in
//! key space that the previous read's keys spanned per page, so that each
//! read covers about a page and etcd's count stays that small. A read that
//! finds few keys (a sparse part of the range) makes the next step larger.

/// A distance in key space: `value` added to the 16 bytes of a key from
/// byte `at` on (big-endian; missing bytes count as zeros).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Step {
    at: usize,
    value: u128,
}

/// 16 bytes of `key` from `at`, zeros past its end.
fn window(key: &[u8], at: usize) -> u128 {
    let mut b = [0u8; 16];
    for (i, x) in b.iter_mut().enumerate() {
        *x = key.get(at + i).copied().unwrap_or(0);
    }
    u128::from_be_bytes(b)
}

impl Step {
    /// The distance from `a` to `b` (`a < b`).
    pub fn between(a: &[u8], b: &[u8]) -> Self {
        let at = a.iter().zip(b).take_while(|(x, y)| x == y).count();
        Self {
            at,
            value: window(b, at).saturating_sub(window(a, at)).max(1),
        }
    }

    /// `self` times `num / den` (never 0; coarser where it would not fit).
    pub fn scaled(self, num: u128, den: u128) -> Self {
        let mut s = self;
        loop {
            match s.value.checked_mul(num) {
                Some(v) => {
                    return Self {
                        at: s.at,
                        value: (v / den.max(1)).max(1),
                    };
                }
                None if s.at > 0 => {
                    s = Self {
                        at: s.at - 1,
                        value: (s.value >> 8).max(1),
                    }
                }
                None => {
                    return Self {
                        at: 0,
                        value: u128::MAX,
                    };
                }
            }
        }
    }

    /// The key this far beyond `key` (always after it); `None` past the
    /// last key there can be.
    pub fn after(self, key: &[u8]) -> Option<Vec<u8>> {
        let mut out: Vec<u8> = key
            .iter()
            .copied()
            .chain(std::iter::repeat(0))
            .take(self.at)
            .collect();
        let (sum, carried) = window(key, self.at).overflowing_add(self.value);
        if carried {
            while let Some(last) = out.pop() {
                if last < 0xff {
                    out.push(last + 1);
                    return Some(out);
                }
            }
            return None;
        }
        out.extend_from_slice(&sum.to_be_bytes());
        // Trailing zeros do not move it in key order relative to `key`.
        while out.last() == Some(&0) {
            out.pop();
        }
        Some(out)
    }
}

/// The step for the read after one that returned `n` keys from `first`
/// to `last`, `more` if its range held more than `page` (`prev`: the step
/// it was read with; `None`: it read up to the end).
pub fn next(
    prev: Option<Step>,
    first: Option<&[u8]>,
    last: Option<&[u8]>,
    n: usize,
    more: bool,
    page: usize,
) -> Option<Step> {
    match (first, last) {
        // The keys' own spread, per page, from a (nearly) full read.
        (Some(a), Some(b)) if n >= 2 && (more || n >= page / 2 || prev.is_none()) => {
            Some(Step::between(a, b).scaled(page as u128, (n - 1) as u128))
        }
        // Few keys: the range spanned a gap in key space, or the keys thin
        // out. A larger step than before.
        _ => prev.map(|s| s.scaled(if n < 2 { 8 } else { 2 }, 1)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_step_lands_after_its_key_and_spans_about_what_it_measured() {
        let a = b"/p/r/i/dc1/s1/i100".as_slice();
        let b = b"/p/r/i/dc1/s1/i199".as_slice();
        let s = Step::between(a, b);
        assert_eq!(s.after(a).unwrap(), b.to_vec(), "a + (b - a) = b");
        let twice = s.scaled(2, 1).after(a).unwrap();
        assert!(
            twice.as_slice() > b,
            "{:?}",
            String::from_utf8_lossy(&twice)
        );
        // From a longer key (the one after a page's last: last + \0).
        let mut next = b.to_vec();
        next.push(0);
        let end = s.after(&next).unwrap();
        assert!(end > next && end.as_slice() < b"/p/r/i/dc1/s1/i3".as_slice());
        // Tiny and huge steps still move forward, or say the space ends.
        let one = Step { at: 40, value: 1 };
        assert!(one.after(a).unwrap().as_slice() > a);
        let big = s.scaled(u128::MAX, 1);
        assert!(big.after(a).is_none_or(|k| k.as_slice() > a));
        assert_eq!(
            Step {
                at: 0,
                value: u128::MAX
            }
            .after(&[0xff; 17]),
            None
        );
        // Shrinking never reaches 0.
        assert!(s.scaled(1, u128::MAX).after(a).unwrap().as_slice() > a);
    }

    /// Read by steps, a sorted set of keys comes out whole and in order,
    /// each read holding about a page.
    #[test]
    fn stepping_through_keys_visits_each_once_in_reads_of_about_a_page() {
        let mut keys: Vec<Vec<u8>> = (0..20_000)
            .map(|i| format!("/p/r/i/dc1/s{}/i{i}", i % 700).into_bytes())
            .chain((0..50).map(|i| format!("/p/r/k/key{i}").into_bytes()))
            .collect();
        keys.sort();
        let end = b"/p/r0".to_vec();
        let page = 500;
        let mut from = b"/p/r/".to_vec();
        let mut step: Option<Step> = None;
        let (mut seen, mut reads, mut largest) = (Vec::new(), 0, 0);
        loop {
            let to = step
                .and_then(|s| s.after(&from))
                .filter(|k| *k < end)
                .unwrap_or_else(|| end.clone());
            assert!(to > from);
            let lo = keys.partition_point(|k| *k < from);
            let hi = keys.partition_point(|k| *k < to);
            let range = &keys[lo..hi];
            reads += 1;
            if reads > 1 {
                largest = largest.max(range.len());
            }
            let got: Vec<Vec<u8>> = range.iter().take(page).map(|k| k.to_vec()).collect();
            let more = range.len() > page;
            step = next_step(step, &got, more, page);
            seen.extend(got.iter().cloned());
            if more {
                from = got.last().unwrap().clone();
                from.push(0);
            } else if to == end {
                break;
            } else {
                from = to;
            }
            assert!(reads < 1000, "it ends");
        }
        assert_eq!(seen, keys);
        assert!(reads < 200, "{reads} reads");
        assert!(
            largest < keys.len(),
            "only the first read counts everything"
        );
    }

    /// What [`super::super::sync`] does after each read.
    fn next_step(prev: Option<Step>, got: &[Vec<u8>], more: bool, page: usize) -> Option<Step> {
        super::next(
            prev,
            got.first().map(|k| k.as_slice()),
            got.last().map(|k| k.as_slice()),
            got.len(),
            more,
            page,
        )
    }
}
