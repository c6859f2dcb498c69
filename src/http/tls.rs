//! TLS material: loading the certificate chain and key into a rustls
//! server config. Serving (plain and TLS alike) is in `server.rs`.

use std::path::Path;
use std::sync::Arc;

use rustls::ServerConfig;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

/// Why TLS could not be set up. Every message names the file at fault.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("cannot read {path}: {message}")]
    Read { path: String, message: String },
    #[error("{path}: {message}")]
    Pem { path: String, message: String },
    #[error("invalid TLS material: {0}")]
    Invalid(String),
}

fn read(path: &Path) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|e| TlsError::Read {
        path: path.display().to_string(),
        message: e.to_string(),
    })
}

fn pem_error(path: &Path, message: String) -> TlsError {
    TlsError::Pem {
        path: path.display().to_string(),
        message,
    }
}

/// Loads a PEM certificate chain and key into a rustls server config
/// (TLS 1.2 and 1.3, ALPN h2 and http/1.1).
pub fn load_tls(cert: &Path, key: &Path) -> Result<Arc<ServerConfig>, TlsError> {
    let cert_pem = read(cert)?;
    let chain = CertificateDer::pem_slice_iter(&cert_pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| pem_error(cert, format!("not a PEM certificate chain: {e}")))?;
    if chain.is_empty() {
        return Err(pem_error(
            cert,
            "no certificate found (expected a -----BEGIN CERTIFICATE----- block)".into(),
        ));
    }
    if is_ca_certificate(&chain[0]) {
        return Err(pem_error(
            cert,
            "its first certificate is a CA certificate (basic constraints CA:TRUE), which TLS \
             clients refuse as a server's own certificate (rustls reports CaUsedAsEndEntity). \
             Serve a server certificate signed by that CA instead (the server's certificate \
             first, then any intermediates), and give the CA certificate to clients (`maxine \
             --ca-cert`, `curl --cacert`); `maxine tls self-signed DIR` writes such a pair"
                .into(),
        ));
    }
    let key_pem = read(key)?;
    let private_key = PrivateKeyDer::from_pem_slice(&key_pem).map_err(|e| match e {
        rustls_pki_types::pem::Error::NoItemsFound => pem_error(
            key,
            "no private key found (expected a -----BEGIN PRIVATE KEY----- block, PKCS#8, PKCS#1 or SEC1)"
                .into(),
        ),
        other => pem_error(key, format!("not a PEM private key: {other}")),
    })?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .map_err(|e| TlsError::Invalid(e.to_string()))?
        .with_no_client_auth()
        .with_single_cert(chain, private_key)
        .map_err(|e| {
            TlsError::Invalid(format!(
                "the certificate in {} and the key in {} cannot be used together: {e}",
                cert.display(),
                key.display()
            ))
        })?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// Whether a DER certificate says it is a CA (the basic constraints
/// extension with `cA` true). A certificate that does not parse is left to
/// rustls and the clients to refuse.
fn is_ca_certificate(der: &[u8]) -> bool {
    /// One DER element: (tag, contents, what follows).
    fn tlv(b: &[u8]) -> Option<(u8, &[u8], &[u8])> {
        let (&tag, b) = b.split_first()?;
        let (&first, b) = b.split_first()?;
        let (len, b) = if first < 0x80 {
            (first as usize, b)
        } else {
            let n = (first & 0x7f) as usize;
            if n == 0 || n > 4 || b.len() < n {
                return None;
            }
            let (bytes, b) = b.split_at(n);
            (bytes.iter().fold(0, |l, &x| l << 8 | x as usize), b)
        };
        (b.len() >= len).then(|| (tag, &b[..len], &b[len..]))
    }
    const SEQUENCE: u8 = 0x30;
    const EXTENSIONS: u8 = 0xa3; // [3] EXPLICIT, in TBSCertificate
    const BASIC_CONSTRAINTS: [u8; 3] = [0x55, 0x1d, 0x13]; // 2.5.29.19
    let ca = || -> Option<bool> {
        let (SEQUENCE, cert, _) = tlv(der)? else {
            return None;
        };
        let (SEQUENCE, mut tbs, _) = tlv(cert)? else {
            return None;
        };
        while !tbs.is_empty() {
            let (tag, field, rest) = tlv(tbs)?;
            tbs = rest;
            if tag != EXTENSIONS {
                continue;
            }
            let (SEQUENCE, mut exts, _) = tlv(field)? else {
                return None;
            };
            while !exts.is_empty() {
                let (_, ext, rest) = tlv(exts)?;
                exts = rest;
                let (0x06, oid, rest) = tlv(ext)? else {
                    return None;
                };
                if oid != BASIC_CONSTRAINTS {
                    continue;
                }
                // Skip the `critical` BOOLEAN, if present, to the OCTET STRING.
                let (mut tag, mut value, rest) = tlv(rest)?;
                if tag == 0x01 {
                    (tag, value, _) = tlv(rest)?;
                }
                let (0x04, SEQUENCE) = (tag, *value.first()?) else {
                    return None;
                };
                let (_, constraints, _) = tlv(value)?;
                return Some(match tlv(constraints) {
                    Some((0x01, v, _)) => v.first().is_some_and(|&b| b != 0),
                    _ => false, // cA absent: DEFAULT FALSE
                });
            }
        }
        Some(false)
    };
    ca().unwrap_or(false)
}
