//! Static zone data: SOA, NS (with glue) and operator records, read from a
//! master-format file `<zone_dir>/<domain>.zone` at start. Records are kept
//! pre-encoded, ready to be copied into replies.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use hickory_proto::rr::{Name, RData, Record, RecordType};
use hickory_proto::serialize::binary::{BinEncodable, BinEncoder, NameEncoding};
use hickory_proto::serialize::txt::Parser;

use super::wire::{types, wire_name};

#[derive(Debug, thiserror::Error)]
pub enum ZoneError {
    #[error("cannot read zone file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("zone file {path}: {message}")]
    Invalid { path: PathBuf, message: String },
    /// A zone directory was given, and it or the file in it is not there:
    /// only the default location falls back to the built-in zone.
    #[error(
        "zone file {path} does not exist{dir_note}: write it (a zone file with the SOA and NS records), \
         point dns.zone_dir (--zone-dir, MAXINE_ZONE_DIR) at the directory that holds it, \
         or leave dns.zone_dir unset for the built-in zone"
    )]
    Missing { path: PathBuf, dir_note: String },
}

/// Where `<domain>.zone` is looked for when no zone directory is given.
pub const DEFAULT_ZONE_DIR: &str = "zones";

/// One RRset of static data: record tails (type, class, TTL, length, data)
/// and, for NS, the glue records (complete, with owner names).
#[derive(Clone, Debug)]
pub struct StaticRrset {
    pub rtype: u16,
    pub tails: Vec<Box<[u8]>>,
    pub glue: Vec<Box<[u8]>>,
}

/// Static data at one name; an empty list marks an empty non-terminal.
pub type StaticNode = Vec<StaticRrset>;

/// The zone Maxine is authoritative for.
#[derive(Debug)]
pub struct Zone {
    /// Lowercase wire form of the apex, e.g. `\x06maxine\x00`.
    pub origin: Vec<u8>,
    /// Dotted apex without the final dot, e.g. `maxine`.
    pub domain: String,
    /// The SOA as the authority section of negative answers carries it:
    /// TTL = min(SOA TTL, SOA MINIMUM) (RFC 2308 3, 5).
    pub soa_negative_tail: Box<[u8]>,
    /// Static names (lowercase wire form) and their data.
    pub statics: HashMap<Vec<u8>, StaticNode>,
    /// Where the data came from, for the log.
    pub source: String,
}

/// The zone used when no file is present: SOA, NS and glue on loopback.
pub fn default_zone_text(domain: &str) -> String {
    format!(
        "$ORIGIN {domain}.\n$TTL 3600\n\
         @   IN SOA ns.{domain}. hostmaster.{domain}. 1 3600 600 86400 5\n\
         @   IN NS  ns.{domain}.\n\
         ns  IN A   127.0.0.1\n"
    )
}

impl Zone {
    /// The label right under the apex of every static name: a service may
    /// not take one, or its names would mix with the operator's records.
    pub fn reserved_labels(&self) -> Vec<String> {
        let mut out: Vec<String> = self
            .statics
            .keys()
            .filter(|k| k.len() > self.origin.len())
            .map(|k| {
                let mut pos = 0;
                while k.len() - pos - (1 + k[pos] as usize) > self.origin.len() {
                    pos += 1 + k[pos] as usize;
                }
                String::from_utf8_lossy(&k[pos + 1..pos + 1 + k[pos] as usize]).into_owned()
            })
            .collect();
        out.sort();
        out.dedup();
        out
    }

    /// Loads `<zone_dir>/<domain>.zone`. With no `zone_dir` it is looked
    /// for in [`DEFAULT_ZONE_DIR`], and the built-in default zone is used
    /// when it is not there; a `zone_dir` that was given must hold the
    /// file. `negative_ttl` replaces the SOA MINIMUM.
    pub fn load(
        zone_dir: Option<&Path>,
        domain: &str,
        negative_ttl: Option<u32>,
    ) -> Result<Self, ZoneError> {
        let dir = zone_dir.unwrap_or(Path::new(DEFAULT_ZONE_DIR));
        let path = dir.join(format!("{domain}.zone"));
        match std::fs::read_to_string(&path) {
            Ok(text) => Self::parse(&text, &path, domain, negative_ttl),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound && zone_dir.is_some() => {
                let dir_note = if dir.is_dir() {
                    String::new()
                } else {
                    format!(" (the zone directory {} does not exist)", dir.display())
                };
                Err(ZoneError::Missing { path, dir_note })
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let mut z = Self::parse(
                    &default_zone_text(domain),
                    Path::new("(built-in)"),
                    domain,
                    negative_ttl,
                )?;
                z.source = format!("built-in default ({} not found)", path.display());
                Ok(z)
            }
            Err(source) => Err(ZoneError::Read { path, source }),
        }
    }

    pub fn parse(
        text: &str,
        path: &Path,
        domain: &str,
        negative_ttl: Option<u32>,
    ) -> Result<Self, ZoneError> {
        let invalid = |message: String| ZoneError::Invalid {
            path: path.to_path_buf(),
            message,
        };
        let origin_name =
            Name::from_ascii(format!("{domain}.")).map_err(|e| invalid(e.to_string()))?;
        let origin = wire_name(domain).ok_or_else(|| invalid(format!("bad domain {domain:?}")))?;
        let (_, sets) = Parser::new(text, Some(path.to_path_buf()), Some(origin_name.clone()))
            .parse()
            .map_err(|e| invalid(e.to_string()))?;

        let mut statics: HashMap<Vec<u8>, StaticNode> = HashMap::new();
        let mut soa = None;
        for (key, set) in &sets {
            let owner: Name = key.name().into();
            if !origin_name.zone_of(&owner) {
                return Err(invalid(format!(
                    "{owner} is outside the zone {origin_name}"
                )));
            }
            let rtype = u16::from(set.record_type());
            if matches!(rtype, types::OPT | types::ANY | types::AXFR | types::IXFR) {
                return Err(invalid(format!(
                    "{owner}: record type {} cannot be served",
                    set.record_type()
                )));
            }
            if set.record_type() == RecordType::NS && owner != origin_name {
                return Err(invalid(format!(
                    "NS records at {owner}: Maxine does not delegate below the apex"
                )));
            }
            let owner_wire = name_key(&owner);
            let mut tails = Vec::new();
            for rec in set.records_without_rrsigs() {
                let full = encode_record(rec).map_err(&invalid)?;
                tails.push(full[owner_len(&full)..].to_vec().into_boxed_slice());
                if set.record_type() == RecordType::SOA {
                    if owner_wire != origin {
                        return Err(invalid(format!("SOA at {owner}, not at the apex")));
                    }
                    soa = Some((rec.clone(), full));
                }
            }
            statics.entry(owner_wire).or_default().push(StaticRrset {
                rtype,
                tails,
                glue: Vec::new(),
            });
        }
        let Some((soa_rec, soa_full)) = soa else {
            return Err(invalid(format!("no SOA record at {origin_name}")));
        };
        let RData::SOA(soa_data) = &soa_rec.data else {
            return Err(invalid("SOA record without SOA data".into()));
        };
        let minimum = negative_ttl.unwrap_or(soa_data.minimum);
        let mut tail = soa_full[owner_len(&soa_full)..].to_vec();
        // Tail: type(2) class(2) ttl(4) rdlength(2) rdata; MINIMUM ends the rdata.
        let n = tail.len();
        tail[n - 4..].copy_from_slice(&minimum.to_be_bytes());
        let neg_ttl = soa_rec.ttl.min(minimum);
        let mut neg_tail = tail.clone();
        neg_tail[4..8].copy_from_slice(&neg_ttl.to_be_bytes());
        // The apex SOA itself also shows the effective MINIMUM.
        if let Some(apex) = statics.get_mut(&origin) {
            for set in apex.iter_mut().filter(|s| s.rtype == types::SOA) {
                set.tails = vec![tail.clone().into_boxed_slice()];
            }
        }

        add_glue(&mut statics, &sets, &origin_name)?;
        add_empty_non_terminals(&mut statics, &origin);
        Ok(Self {
            origin,
            domain: domain.to_string(),
            soa_negative_tail: neg_tail.into_boxed_slice(),
            statics,
            source: path.display().to_string(),
        })
    }
}

/// Glue for NS targets inside the zone: their A/AAAA records, complete.
fn add_glue(
    statics: &mut HashMap<Vec<u8>, StaticNode>,
    sets: &std::collections::BTreeMap<hickory_proto::rr::RrKey, hickory_proto::rr::RecordSet>,
    origin: &Name,
) -> Result<(), ZoneError> {
    type Glue = Vec<Box<[u8]>>;
    let mut glue_for: Vec<(Vec<u8>, Glue)> = Vec::new();
    for (key, set) in sets {
        if set.record_type() != RecordType::NS {
            continue;
        }
        let mut glue = Vec::new();
        for rec in set.records_without_rrsigs() {
            let RData::NS(target) = &rec.data else {
                continue;
            };
            if !origin.zone_of(&target.0) {
                continue;
            }
            for (k2, s2) in sets {
                let same = Name::from(k2.name()).eq_case(&target.0.to_lowercase());
                if same && matches!(s2.record_type(), RecordType::A | RecordType::AAAA) {
                    for r in s2.records_without_rrsigs() {
                        let full = encode_record(r).map_err(|m| ZoneError::Invalid {
                            path: PathBuf::from("zone"),
                            message: m,
                        })?;
                        glue.push(full.into_boxed_slice());
                    }
                }
            }
        }
        let owner: Name = key.name().into();
        glue_for.push((name_key(&owner), glue));
    }
    for (owner, glue) in glue_for {
        if let Some(node) = statics.get_mut(&owner) {
            for set in node.iter_mut().filter(|s| s.rtype == types::NS) {
                set.glue = glue.clone();
            }
        }
    }
    Ok(())
}

/// Every ancestor of a static name up to the apex exists (RFC 8020): an
/// empty node marks it, so it answers NODATA, not NXDOMAIN.
fn add_empty_non_terminals(statics: &mut HashMap<Vec<u8>, StaticNode>, origin: &[u8]) {
    let names: Vec<Vec<u8>> = statics.keys().cloned().collect();
    for name in names {
        let mut pos = 0;
        while name.len() - pos > origin.len() {
            pos += 1 + name[pos] as usize;
            statics.entry(name[pos..].to_vec()).or_default();
        }
    }
}

/// Lowercase wire form of a name, built from its labels (so escaped dots
/// inside a label stay inside it).
fn name_key(name: &Name) -> Vec<u8> {
    let mut out = Vec::with_capacity(name.len() + 1);
    for label in name.iter() {
        out.push(label.len() as u8);
        out.extend(label.iter().map(|b| b.to_ascii_lowercase()));
    }
    out.push(0);
    out
}

/// A complete record, names uncompressed, owner in lowercase.
fn encode_record(rec: &Record) -> Result<Vec<u8>, String> {
    let mut lower = rec.clone();
    lower.name = rec.name.to_lowercase();
    let mut buf = Vec::with_capacity(64);
    let mut enc = BinEncoder::new(&mut buf);
    enc.set_name_encoding(NameEncoding::Uncompressed);
    lower
        .emit(&mut enc)
        .map_err(|e| format!("cannot encode {}: {e}", rec.name))?;
    Ok(buf)
}

/// Length of the uncompressed owner name at the start of a record.
fn owner_len(rec: &[u8]) -> usize {
    let mut pos = 0;
    while rec[pos] != 0 {
        pos += 1 + rec[pos] as usize;
    }
    pos + 1
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_zone_has_soa_ns_glue_and_negative_ttl() {
        let z = Zone::parse(
            &default_zone_text("maxine"),
            Path::new("x"),
            "maxine",
            Some(7),
        )
        .unwrap();
        let apex = &z.statics[&wire_name("maxine").unwrap()];
        assert!(apex.iter().any(|s| s.rtype == types::SOA));
        let ns = apex.iter().find(|s| s.rtype == types::NS).unwrap();
        assert_eq!(ns.glue.len(), 1);
        // TTL of the negative SOA = min(3600, 7).
        assert_eq!(&z.soa_negative_tail[4..8], &7u32.to_be_bytes());
        assert!(z.statics.contains_key(&wire_name("ns.maxine").unwrap()));
    }

    #[test]
    fn records_outside_the_zone_or_without_soa_are_refused() {
        let text = "$ORIGIN maxine.\n@ 60 IN SOA ns hm 1 2 3 4 5\nx.other. 60 IN A 1.2.3.4\n";
        assert!(Zone::parse(text, Path::new("x"), "maxine", None).is_err());
        let text = "$ORIGIN maxine.\nwww 60 IN A 1.2.3.4\n";
        let err = Zone::parse(text, Path::new("x"), "maxine", None)
            .unwrap_err()
            .to_string();
        assert!(err.contains("no SOA"), "{err}");
    }

    #[test]
    fn negative_ttl_is_the_smaller_of_soa_ttl_and_minimum() {
        let text = "$ORIGIN maxine.\n@ 30 IN SOA ns hm 1 2 3 4 300\n";
        let z = Zone::parse(text, Path::new("x"), "maxine", None).unwrap();
        assert_eq!(&z.soa_negative_tail[4..8], &30u32.to_be_bytes());
    }

    #[test]
    fn delegations_are_refused_and_reserved_labels_are_found() {
        let text = "$ORIGIN maxine.\n@ 60 IN SOA ns hm 1 2 3 4 5\nsub 60 IN NS ns.other.\n";
        let err = Zone::parse(text, Path::new("x"), "maxine", None)
            .unwrap_err()
            .to_string();
        assert!(err.contains("delegate"), "{err}");
        let text = "$ORIGIN maxine.\n@ 60 IN SOA ns hm 1 2 3 4 5\na.b 60 IN TXT \"x\"\nwww 60 IN A 1.2.3.4\nx\\.y 60 IN TXT \"z\"\n";
        let z = Zone::parse(text, Path::new("x"), "maxine", None).unwrap();
        assert_eq!(z.reserved_labels(), ["b", "www", "x.y"]);
        let mut key = vec![3, b'x', b'.', b'y'];
        key.extend(wire_name("maxine").unwrap());
        assert!(
            z.statics.contains_key(&key),
            "escaped dot stays inside the label"
        );
    }

    #[test]
    fn a_zone_dir_that_was_given_must_hold_the_zone_file() {
        let tmp = std::env::temp_dir().join(format!("maxine-zone-test-{}", std::process::id()));
        let missing = tmp.join("nope");
        let err = Zone::load(Some(&missing), "maxine", None)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("nope/maxine.zone")
                && err.contains("directory")
                && err.contains("does not exist")
                && err.contains("--zone-dir"),
            "{err}"
        );
        std::fs::create_dir_all(&tmp).unwrap();
        let err = Zone::load(Some(&tmp), "maxine", None)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("maxine.zone does not exist") && !err.contains("zone directory"),
            "{err}"
        );
        std::fs::write(
            tmp.join("maxine.zone"),
            "$ORIGIN maxine.\n@ 60 IN SOA ns hm 1 2 3 4 5\n",
        )
        .unwrap();
        assert!(Zone::load(Some(&tmp), "maxine", None).is_ok());
        std::fs::remove_dir_all(&tmp).unwrap();
    }

    #[test]
    fn empty_non_terminals_of_static_names_exist() {
        let text = "$ORIGIN maxine.\n@ 60 IN SOA ns hm 1 2 3 4 5\na.b.c 60 IN TXT \"x\"\n";
        let z = Zone::parse(text, Path::new("x"), "maxine", None).unwrap();
        assert!(z.statics[&wire_name("b.c.maxine").unwrap()].is_empty());
        assert!(z.statics[&wire_name("c.maxine").unwrap()].is_empty());
    }
}
