//! Unit tests of record sets, version members and instance tables.

use super::instances::InstanceTable;
use super::members::Subset;
use super::rrset::RecordSet;
use crate::core::InstanceId;
use crate::core::plan::LOCAL_PRIORITY;
use crate::dns::encoded::{AT_QNAME, EncodedInstances, Encoding, InstanceWire, SRV_TARGET_AT};
use crate::dns::wire::{self, Flags, ReplyWriter, Section, types};

/// Instances whose SRV records are `shape.0` bytes long and whose
/// additional records (the target, then the address record's tail)
/// `shape.1`.
fn encoded(shapes: &[(usize, Option<usize>)]) -> EncodedInstances<u64> {
    let rec = |len: usize, tag: u8| -> Vec<u8> { (0..len).map(|i| tag ^ i as u8).collect() };
    let mut e = EncodedInstances::default();
    for (i, &(srv_len, additional)) in shapes.iter().enumerate() {
        let id = InstanceId::new(&format!("i{i:03}")).unwrap();
        e.push(&id, 0, |out| {
            out.extend(rec(srv_len, srv_len as u8));
            if let Some(len) = additional {
                out.extend(rec(len - (srv_len - SRV_TARGET_AT), 0x80 | len as u8));
            }
            Encoding {
                srv_len: srv_len as u16,
                addr_type: if additional.is_some() { types::A } else { 0 },
            }
        });
    }
    e
}

fn wires(e: &EncodedInstances<u64>) -> Vec<InstanceWire<'_>> {
    (0..e.len()).map(|i| e.wire(i)).collect()
}

/// The window written one record at a time, as the sets were before.
fn one_by_one(all: &[InstanceWire<'_>], start: usize, take: usize, w: &mut ReplyWriter) -> bool {
    let window = all.iter().cycle().skip(start).take(take);
    for inst in window.clone() {
        if !w.push_full(Section::Answer, inst.srv()) {
            return false;
        }
    }
    for inst in window {
        if inst
            .additional()
            .is_some_and(|rec| !w.push_full(Section::Additional, rec))
        {
            break;
        }
    }
    true
}

/// Six SRV targets of varied sizes, some without an address record.
const SHAPES: [(usize, Option<usize>); 6] = [
    (20, Some(30)),
    (25, None),
    (18, Some(16)),
    (40, Some(28)),
    (22, None),
    (30, Some(16)),
];

/// For every window of `n` records (`take` from `start`, wrapping) and
/// every size limit of an SRV reply: `write` fits exactly when `want`
/// does, and then writes the same bytes. `what` names the case.
fn assert_windows_agree(
    n: usize,
    what: &str,
    write: impl Fn(usize, usize, &mut ReplyWriter) -> bool,
    want: impl Fn(usize, usize, &mut ReplyWriter) -> bool,
) {
    let q = super::super::testing::query("_svc._tcp.maxine.", types::SRV, false);
    let req = wire::parse(&q).unwrap();
    let flags = Flags {
        aa: true,
        rd: false,
        cd: false,
        rcode: 0,
    };
    let (mut got, mut wanted) = (Vec::new(), Vec::new());
    for take in 1..=n {
        for start in 0..n {
            for limit in q.len()..400 {
                let mut w = ReplyWriter::start(&mut got, &req, flags, limit);
                let ok = write(start, take, &mut w);
                w.finish(None, 0);
                let mut w = ReplyWriter::start(&mut wanted, &req, flags, limit);
                let ok_want = want(start, take, &mut w);
                w.finish(None, 0);
                let at = format!("{what} take {take} start {start} limit {limit}");
                assert_eq!(ok, ok_want, "{at}");
                if ok {
                    assert_eq!(got, wanted, "{at}");
                }
            }
        }
    }
}

#[test]
fn windows_copy_like_record_by_record_at_every_size() {
    for n in 1..=SHAPES.len() {
        let e = encoded(&SHAPES[..n]);
        let all = wires(&e);
        let set = RecordSet::srv(&all, LOCAL_PRIORITY).unwrap();
        assert_windows_agree(
            n,
            &format!("n {n}"),
            |start, take, w| set.write(start, take, w),
            |start, take, w| one_by_one(&all, start, take, w),
        );
    }
}

#[test]
fn version_members_copy_like_a_set_of_their_own() {
    let e = encoded(&SHAPES);
    let all = wires(&e);
    let set = RecordSet::srv(&all, LOCAL_PRIORITY).unwrap();
    for members in [
        vec![0u32, 2, 3],
        vec![1, 4],
        vec![5],
        vec![0, 1, 2, 3, 4, 5],
    ] {
        let own: Vec<InstanceWire<'_>> = members.iter().map(|&m| all[m as usize]).collect();
        assert_windows_agree(
            members.len(),
            &format!("{members:?}"),
            |start, take, w| set.write_members(&members, start, take, w),
            |start, take, w| one_by_one(&own, start, take, w),
        );
    }
    let sub = Subset::new(&[1], &[], &[0, 3]);
    assert_eq!(
        (
            sub.of_type(types::A),
            sub.of_type(types::AAAA),
            sub.of_type(types::SRV)
        ),
        (&[1u32][..], &[][..], &[0u32, 3][..])
    );
    assert!(sub.of_type(types::CNAME).is_empty());
}

#[test]
fn sets_and_additional_records_are_built_from_instance_records() {
    // Address sets: the question pointer, then each address tail.
    let e = encoded(&[(20, Some(5)), (20, None), (21, Some(4))]);
    let ws = wires(&e);
    let s = RecordSet::addresses(&ws, types::A).unwrap();
    let tails = |i: usize| ws[i].addr_tail(types::A).unwrap();
    let want: Vec<u8> = [&AT_QNAME[..], tails(0), &AT_QNAME, tails(2)].concat();
    assert_eq!(s.records(), &want[..]);
    assert_eq!((s.len(), s.end(0), s.end(1)), (2, 5, 8));
    assert_eq!(s.run(&(1..2)), &want[5..]);
    assert!(!s.extra() && s.additional().is_empty());
    assert!(RecordSet::addresses(&ws[1..2], types::A).is_none());
    assert!(RecordSet::addresses(&ws[..1], types::AAAA).is_none());
    // The additional record is the SRV target, then the address tail.
    let e = encoded(&[(SRV_TARGET_AT + 3, Some(3 + 4))]);
    let w = e.wire(0);
    let rec = w.additional().unwrap();
    assert_eq!(&rec[..3], &w.srv()[SRV_TARGET_AT..]);
    assert_eq!(&rec[3..], w.addr_tail(types::A).unwrap());
    // SRV sets whose targets are all host names carry no additional data.
    let hosts = encoded(&[(20, None), (21, None)]);
    assert!(
        !RecordSet::srv(&wires(&hosts), LOCAL_PRIORITY)
            .unwrap()
            .extra()
    );
    // Marks count the additional records of each prefix of the set.
    let mixed = encoded(&[(20, Some(30)), (21, None), (22, Some(10))]);
    let set = RecordSet::srv(&wires(&mixed), LOCAL_PRIORITY).unwrap();
    assert!(set.extra());
    assert_eq!(
        (set.mark(0), set.mark(1), set.mark(2)),
        ((30, 1), (30, 1), (40, 2))
    );
    assert_eq!(set.additional().len(), 40);
    assert_eq!(set.records().len(), 20 + 21 + 22);
}

#[test]
fn instance_tables_find_exactly_their_ids() {
    let recs: [&[u8]; 3] = [&[1, 1], &[2, 2, 2], &[]];
    let ids: [&[u8]; 3] = [b"a", b"ab", b"b"];
    let t = InstanceTable::new(ids.iter().zip(recs).map(|(id, r)| {
        let rec = (!r.is_empty()).then_some((types::A, r));
        (*id, rec)
    }));
    // Records get the question pointer as owner.
    assert_eq!(t.find(b"a"), Some((types::A, &[0xC0, 0x0C, 1, 1][..])));
    assert_eq!(t.find(b"ab"), Some((types::A, &[0xC0, 0x0C, 2, 2, 2][..])));
    assert_eq!(t.find(b"b"), Some((0, &[][..])));
    for missing in [&b""[..], b"aa", b"abc", b"c", b"0"] {
        assert_eq!(t.find(missing), None, "{missing:?}");
    }
}

#[test]
fn srv_records_carry_their_tier_priority() {
    let e = encoded(&SHAPES);
    let all = wires(&e);
    let local = RecordSet::srv(&all, LOCAL_PRIORITY).unwrap();
    let far = RecordSet::srv(&all, 3).unwrap();
    assert_eq!(local.len(), far.len());
    for (i, wire) in all.iter().enumerate() {
        let (l, f) = (local.run(&(i..i + 1)), far.run(&(i..i + 1)));
        let at = crate::dns::encoded::SRV_PRIORITY_AT;
        assert_eq!(l, wire.srv(), "the local tier is copied as encoded");
        assert_eq!(&f[at..at + 2], &3u16.to_be_bytes());
        assert_eq!(
            (&l[..at], &l[at + 2..]),
            (&f[..at], &f[at + 2..]),
            "only the priority differs"
        );
    }
    assert_eq!(local.additional(), far.additional());
}
