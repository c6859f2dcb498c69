//! Unit tests of record sets, version members and instance tables.

use super::instances::InstanceTable;
use super::members::Subset;
use super::rrset::RecordSet;
use crate::core::InstanceId;
use crate::core::plan::LOCAL_PRIORITY;
use crate::dns::encoded::{
    A_TAIL, AAAA_TAIL, AT_QNAME, EncodedInstances, Encoding, InstanceWire, SRV_TARGET_AT,
};
use crate::dns::wire::{self, Flags, ReplyWriter, Section, types};

/// The shape of a test instance: its SRV record's length, and how many A
/// and AAAA records follow it.
type Shape = (usize, u8, u8);

/// Instances of these shapes, laid out as [`InstanceWire`] says: the SRV
/// record (its last `len - SRV_TARGET_AT` bytes stand for the target
/// name), then each address tail, every one after the first preceded by
/// the name again.
fn encoded(shapes: &[Shape]) -> EncodedInstances<u64> {
    let rec = |len: usize, tag: u8| -> Vec<u8> { (0..len).map(|i| tag ^ i as u8).collect() };
    let mut e = EncodedInstances::default();
    for (i, &(srv_len, a, aaaa)) in shapes.iter().enumerate() {
        let id = InstanceId::new(&format!("i{i:03}")).unwrap();
        e.push(&id, 0, |out| {
            let srv = rec(srv_len, srv_len as u8);
            out.extend(&srv);
            let tails = (0..a).map(|_| A_TAIL).chain((0..aaaa).map(|_| AAAA_TAIL));
            for (k, len) in tails.enumerate() {
                if k > 0 {
                    out.extend(&srv[SRV_TARGET_AT..]);
                }
                out.extend(rec(len, 0x80 | (i * 16 + k) as u8));
            }
            Encoding {
                srv_len: srv_len as u16,
                a,
                aaaa,
            }
        });
    }
    e
}

fn wires(e: &EncodedInstances<u64>) -> Vec<InstanceWire<'_>> {
    (0..e.len()).map(|i| e.wire(i)).collect()
}

/// The window written one record at a time, as the sets were before: each
/// instance's additional records together or not at all.
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
            .is_some_and(|(rec, n)| !w.push_records(Section::Additional, rec, n))
        {
            break;
        }
    }
    true
}

/// Six SRV targets of varied sizes, some without an address record, some
/// with several of both types (host names).
const SHAPES: [Shape; 6] = [
    (20, 1, 0),
    (25, 0, 0),
    (19, 2, 1),
    (40, 0, 2),
    (22, 0, 0),
    (30, 0, 1),
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
    // Address sets: the question pointer, then each address tail, every
    // address of every instance in order.
    let e = encoded(&[(20, 1, 0), (20, 0, 0), (21, 2, 1)]);
    let ws = wires(&e);
    let s = RecordSet::addresses(&ws, types::A).unwrap();
    let tails = |i: usize, t: u16| ws[i].addr_tails(t).collect::<Vec<_>>();
    let (t0, t2) = (tails(0, types::A), tails(2, types::A));
    assert_eq!((t0.len(), t2.len(), tails(2, types::AAAA).len()), (1, 2, 1));
    let want: Vec<u8> = [&AT_QNAME[..], t0[0], &AT_QNAME, t2[0], &AT_QNAME, t2[1]].concat();
    assert_eq!(s.records(), &want[..]);
    let r = AT_QNAME.len() + A_TAIL;
    assert_eq!(
        (s.len(), s.end(0), s.end(1), s.end(2)),
        (3, r, 2 * r, 3 * r)
    );
    assert_eq!(s.run(&(1..3)), &want[r..]);
    assert!(!s.extra() && s.additional().is_empty());
    let s6 = RecordSet::addresses(&ws, types::AAAA).unwrap();
    assert_eq!(
        s6.records(),
        &[&AT_QNAME[..], tails(2, types::AAAA)[0]].concat()[..]
    );
    assert!(RecordSet::addresses(&ws[1..2], types::A).is_none());
    assert!(RecordSet::addresses(&ws[..1], types::AAAA).is_none());
    // The additional records are the SRV target, the first address tail,
    // then the name and tail of each further address.
    let e = encoded(&[(SRV_TARGET_AT + 3, 1, 1)]);
    let w = e.wire(0);
    let (rec, n) = w.additional().unwrap();
    let name = &w.srv()[SRV_TARGET_AT..];
    let a = w.addr_tails(types::A).next().unwrap();
    let aaaa = w.addr_tails(types::AAAA).next().unwrap();
    assert_eq!((rec, n), (&[name, a, name, aaaa].concat()[..], 2));
    // SRV sets whose targets have no address carry no additional data.
    let hosts = encoded(&[(20, 0, 0), (21, 0, 0)]);
    assert!(
        !RecordSet::srv(&wires(&hosts), LOCAL_PRIORITY)
            .unwrap()
            .extra()
    );
    // Marks count the additional records of each prefix of the set.
    let mixed = encoded(&[(20, 1, 0), (21, 0, 0), (22, 1, 2)]);
    let set = RecordSet::srv(&wires(&mixed), LOCAL_PRIORITY).unwrap();
    assert!(set.extra());
    let first = 2 + A_TAIL;
    let third = 3 * (22 - SRV_TARGET_AT) + A_TAIL + 2 * AAAA_TAIL;
    assert_eq!(
        (set.mark(0), set.mark(1), set.mark(2)),
        ((first, 1), (first, 1), (first + third, 4))
    );
    assert_eq!(set.additional().len(), first + third);
    assert_eq!(set.records().len(), 20 + 21 + 22);
}

#[test]
fn instance_tables_find_exactly_their_ids() {
    let e = encoded(&[(20, 1, 0), (21, 2, 1), (22, 0, 0)]);
    let ws = wires(&e);
    let ids: [&[u8]; 3] = [b"a", b"ab", b"b"];
    let t = InstanceTable::new(ids.iter().copied().zip(ws.iter().copied()));
    // Records get the question pointer as owner.
    let records = |i: usize, rtype: u16| -> Vec<u8> {
        ws[i]
            .addr_tails(rtype)
            .flat_map(|tail| [&AT_QNAME[..], tail].concat())
            .collect()
    };
    let a = t.find(b"a").unwrap();
    assert_eq!(a.of_type(types::A), (&records(0, types::A)[..], 1));
    assert_eq!(a.of_type(types::AAAA), (&[][..], 0));
    let ab = t.find(b"ab").unwrap();
    assert_eq!(ab.of_type(types::A), (&records(1, types::A)[..], 2));
    assert_eq!(ab.of_type(types::AAAA), (&records(1, types::AAAA)[..], 1));
    let b = t.find(b"b").unwrap();
    assert_eq!((b.of_type(types::A).1, b.of_type(types::AAAA).1), (0, 0));
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

/// DNS and the discovery pick agree: a sticky SRV answer starts with the
/// instance `Registry::pick` gives the same client, for every subnet.
#[test]
fn a_sticky_answer_starts_with_the_instance_discovery_picks() {
    use crate::core::{Query, QueryContext, ServiceName, Strategy, Transport};
    use crate::dns::testing::{query, sample_with};
    let (registry, answers) = sample_with(3, 6, 32, Strategy::Sticky);
    let q = query("_svc1._tcp.maxine.", types::SRV, true);
    let question = Query {
        dc: None,
        service: ServiceName::new("svc1").unwrap(),
        version: None,
        healthy_only: true,
    };
    let mut firsts = std::collections::BTreeSet::new();
    for i in 0..64u8 {
        let ctx = QueryContext::new(Some([10, i, 7, 1].into()), Transport::Udp);
        let mut out = Vec::new();
        assert!(answers.respond(&q, &mut out, ctx));
        let m = hickory_proto::op::Message::from_vec(&out).unwrap();
        let target = match &m.answers[0].data {
            hickory_proto::rr::RData::SRV(srv) => srv.target.to_string(),
            other => panic!("not SRV: {other:?}"),
        };
        let picked = registry.pick(&question, &ctx).unwrap();
        assert_eq!(
            target,
            format!("{}.svc1.dc1.maxine.", picked.id),
            "client 10.{i}.7.1"
        );
        firsts.insert(target);
    }
    assert!(firsts.len() > 3, "subnets spread: {firsts:?}");
}
