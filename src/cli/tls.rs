//! `tls self-signed DIR`: a new CA and a server certificate it signed, for
//! a quick start over HTTPS without a PKI of one's own. Runs offline.
//!
//! Two certificates, not one self-signed server certificate: clients trust
//! the CA (`--ca-cert`), and the server presents a certificate that is not
//! a CA's, which TLS clients require (a CA certificate served as the
//! server's own is refused with `CaUsedAsEndEntity`).

use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use clap::{Args, Subcommand};
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};

#[derive(Subcommand)]
pub enum TlsCommand {
    /// Write a new CA certificate (ca.crt) and a server certificate signed
    /// by it (tls.crt, with its key tls.key) into DIR. Serve with
    /// `--tls-cert DIR/tls.crt --tls-key DIR/tls.key`; clients trust
    /// DIR/ca.crt. The CA's own key is not kept: run it again for new
    /// certificates.
    SelfSigned(SelfSignedArgs),
}

#[derive(Args)]
pub struct SelfSignedArgs {
    /// Directory for ca.crt, tls.crt and tls.key (made if missing); files
    /// already there are never overwritten
    pub dir: PathBuf,
    /// A name clients reach the server by, a host name or an IP address;
    /// repeatable. Default: localhost, 127.0.0.1 and ::1
    #[arg(long = "name", value_name = "NAME")]
    pub names: Vec<String>,
}

/// The files written, in `DIR`.
pub const CA_FILE: &str = "ca.crt";
pub const CERT_FILE: &str = "tls.crt";
pub const KEY_FILE: &str = "tls.key";

/// How long the server certificate is valid: the longest that browsers
/// accept for a server certificate. The CA lasts ten years.
const SERVER_DAYS: i64 = 397;
const CA_DAYS: i64 = 3650;

pub fn run(cmd: TlsCommand) -> anyhow::Result<()> {
    let TlsCommand::SelfSigned(a) = cmd;
    let names = if a.names.is_empty() {
        vec!["localhost".into(), "127.0.0.1".into(), "::1".into()]
    } else {
        a.names.clone()
    };
    let files = self_signed(&a.dir, &names)?;
    let d = a.dir.display();
    let host = names
        .iter()
        .find(|n| n.parse::<std::net::IpAddr>().is_err())
        .cloned()
        .unwrap_or_else(|| match names[0].parse::<std::net::Ipv6Addr>() {
            Ok(_) => format!("[{}]", names[0]),
            Err(_) => names[0].clone(),
        });
    println!(
        "wrote {d}/{CA_FILE} (the CA), {d}/{CERT_FILE} and {d}/{KEY_FILE} (the server's \
         certificate and key, for {}; valid until {})",
        names.join(", "),
        files.valid_until
    );
    println!("serve:   maxine serve --tls-cert {d}/{CERT_FILE} --tls-key {d}/{KEY_FILE}");
    println!("clients: maxine services --api https://{host}:8080 --ca-cert {d}/{CA_FILE}");
    println!("         curl --cacert {d}/{CA_FILE} https://{host}:8080/v1/health");
    println!(
        "The CA's private key was not kept: to change the names, run this again into a new \
         directory and hand out its {CA_FILE}."
    );
    Ok(())
}

/// What [`self_signed`] wrote.
pub struct Written {
    /// The server certificate's last day, as YYYY-MM-DD.
    pub valid_until: String,
}

/// Writes the CA certificate and the server certificate and key for
/// `names` into `dir`, refusing to replace any file.
pub fn self_signed(dir: &Path, names: &[String]) -> anyhow::Result<Written> {
    for f in [CA_FILE, CERT_FILE, KEY_FILE] {
        let p = dir.join(f);
        if p.exists() {
            bail!(
                "{} exists already: remove it, or choose another directory",
                p.display()
            );
        }
    }
    let now = time::OffsetDateTime::now_utc();
    let since = now - time::Duration::minutes(5); // some clocks run behind

    let mut ca = CertificateParams::new(Vec::<String>::new())?;
    ca.distinguished_name.push(
        DnType::CommonName,
        format!("Maxine CA (maxine tls self-signed, {})", now.date()),
    );
    ca.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    ca.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    ca.not_before = since;
    ca.not_after = now + time::Duration::days(CA_DAYS);
    let ca_key = KeyPair::generate()?;
    let ca_cert = ca.self_signed(&ca_key)?;
    let issuer = Issuer::new(ca, ca_key);

    let mut server = CertificateParams::new(names.to_vec())
        .with_context(|| format!("{names:?} are not host names or IP addresses"))?;
    server
        .distinguished_name
        .push(DnType::CommonName, names[0].clone());
    server.is_ca = IsCa::ExplicitNoCa;
    server.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    server.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    server.use_authority_key_identifier_extension = true;
    server.not_before = since;
    server.not_after = now + time::Duration::days(SERVER_DAYS);
    let valid_until = server.not_after.date().to_string();
    let server_key = KeyPair::generate()?;
    let server_cert = server.signed_by(&server_key, &issuer)?;

    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o755)
        .create(dir)
        .with_context(|| format!("cannot create {}", dir.display()))?;
    // The key first, readable by its owner only; none of the files may
    // exist (create_new), so a race with another writer fails too.
    write_new(&dir.join(KEY_FILE), &server_key.serialize_pem(), 0o600)?;
    write_new(&dir.join(CERT_FILE), &server_cert.pem(), 0o644)?;
    write_new(&dir.join(CA_FILE), &ca_cert.pem(), 0o644)?;
    Ok(Written { valid_until })
}

fn write_new(path: &Path, text: &str, mode: u32) -> anyhow::Result<()> {
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(path)
        .with_context(|| format!("cannot create {}", path.display()))?;
    f.write_all(text.as_bytes())
        .and_then(|()| f.sync_all())
        .with_context(|| format!("cannot write {}", path.display()))
}
