//! TLS for the storage and token clients: the system's CA certificates (or the bundle named
//! by `SSL_CERT_FILE` / `SSL_CERT_DIR`, which replace them), verified by webpki as usual,
//! with one addition: a server certificate that is **byte-identical** to a certificate in
//! that bundle is accepted when it names the server (its subject alternative names).
//!
//! Why: Microsoft's Azurite documentation makes its HTTPS certificate with
//! `openssl req -x509 ... -addext subjectAltName=IP:127.0.0.1`, a self-signed certificate
//! with `CA:TRUE`. Users put it in the trust bundle; azcopy and the Python SDK accept it,
//! but webpki refuses a CA certificate as a server certificate (`CaUsedAsEndEntity`).
//! Trusting a certificate that the user put in the trust store, presented as it is, adds
//! no risk: the handshake still proves the server holds its private key (the signature
//! checks are webpki's), and the holder of a trusted CA's key can mint any certificate anyway.
//!
//! That acceptance is narrow: only for a **loopback** server (`127.0.0.0/8`,
//! `::1`, `localhost`: a local Azurite), and only while the certificate's validity dates
//! hold, which webpki would have checked had it accepted the certificate. A remote server
//! must pass webpki as it is. The system's CA certificates are loaded once per process.

use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::WebPkiServerVerifier;
use rustls::crypto::WebPkiSupportedAlgorithms;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, Error, RootCertStore, SignatureScheme};

/// webpki's verifier, plus acceptance of a pinned (byte-identical, trusted) certificate.
#[derive(Debug)]
struct TrustedOrPinned {
    /// None when no CA certificate could be loaded: then only a pinned one could pass
    /// (there is none either), and every server is refused as `UnknownIssuer`.
    inner: Option<Arc<WebPkiServerVerifier>>,
    trusted: Vec<CertificateDer<'static>>,
    algorithms: WebPkiSupportedAlgorithms,
}

impl ServerCertVerifier for TrustedOrPinned {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, Error> {
        let verdict = match &self.inner {
            Some(inner) => inner.verify_server_cert(end_entity, intermediates, server_name, ocsp_response, now),
            None => Err(Error::InvalidCertificate(rustls::CertificateError::UnknownIssuer)),
        };
        match verdict {
            Ok(v) => Ok(v),
            Err(e) => {
                if is_loopback(server_name) && self.trusted.iter().any(|t| t.as_ref() == end_entity.as_ref()) {
                    // The name must still match: a trusted certificate for another host is refused.
                    let parsed = rustls::server::ParsedCertificate::try_from(end_entity)?;
                    rustls::client::verify_server_name(&parsed, server_name)?;
                    check_dates(end_entity, now)?;
                    return Ok(ServerCertVerified::assertion());
                }
                Err(e)
            }
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}

/// Whether the server is this machine (where a pinned certificate may be accepted).
fn is_loopback(name: &ServerName<'_>) -> bool {
    match name {
        ServerName::IpAddress(ip) => std::net::IpAddr::from(*ip).is_loopback(),
        ServerName::DnsName(d) => d.as_ref().eq_ignore_ascii_case("localhost"),
        _ => false,
    }
}

/// Refuses a certificate outside its validity dates (`notBefore`..=`notAfter`), or whose
/// dates cannot be read.
fn check_dates(cert: &CertificateDer<'_>, now: UnixTime) -> Result<(), Error> {
    use rustls::CertificateError::{BadEncoding, Expired, NotValidYet};
    let (not_before, not_after) = validity(cert.as_ref()).ok_or(Error::InvalidCertificate(BadEncoding))?;
    let now = now.as_secs() as i64;
    if now < not_before {
        return Err(Error::InvalidCertificate(NotValidYet));
    }
    if now > not_after {
        return Err(Error::InvalidCertificate(Expired));
    }
    Ok(())
}

/// One DER element at the start of `der`: (tag, contents, rest).
fn der_element(der: &[u8]) -> Option<(u8, &[u8], &[u8])> {
    let (&tag, rest) = der.split_first()?;
    let (&first, rest) = rest.split_first()?;
    let (len, rest) = if first < 0x80 {
        (first as usize, rest)
    } else {
        let n = (first & 0x7f) as usize;
        if n == 0 || n > 4 || rest.len() < n {
            return None;
        }
        (rest[..n].iter().fold(0usize, |a, &b| (a << 8) | b as usize), &rest[n..])
    };
    (rest.len() >= len).then(|| (tag, &rest[..len], &rest[len..]))
}

/// The `notBefore` and `notAfter` of an X.509 certificate, in Unix seconds.
fn validity(cert: &[u8]) -> Option<(i64, i64)> {
    let (0x30, cert, _) = der_element(cert)? else { return None };
    let (0x30, tbs, _) = der_element(cert)? else { return None };
    let mut rest = tbs;
    let (tag, _, after) = der_element(rest)?;
    if tag == 0xa0 {
        rest = after; // [0] version
    }
    for _ in 0..3 {
        rest = der_element(rest)?.2; // serialNumber, signature, issuer
    }
    let (0x30, validity, _) = der_element(rest)? else { return None };
    let (t1, nb, rest) = der_element(validity)?;
    let (t2, na, _) = der_element(rest)?;
    Some((der_time(t1, nb)?, der_time(t2, na)?))
}

/// A UTCTime (`YYMMDDHHMMSSZ`, 0x17) or GeneralizedTime (`YYYYMMDDHHMMSSZ`, 0x18) in Unix seconds.
fn der_time(tag: u8, text: &[u8]) -> Option<i64> {
    let text = std::str::from_utf8(text).ok()?.strip_suffix('Z')?;
    let (year, rest) = match (tag, text.len()) {
        (0x17, 12) => {
            let yy: i64 = text[..2].parse().ok()?;
            (if yy >= 50 { 1900 + yy } else { 2000 + yy }, &text[2..])
        }
        (0x18, 14) => (text[..4].parse().ok()?, &text[4..]),
        _ => return None,
    };
    if !rest.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let n = |i: usize| rest[i..i + 2].parse::<i64>().ok();
    let (month, day, h, m, s) = (n(0)?, n(2)?, n(4)?, n(6)?, n(8)?);
    if !(1..=12).contains(&month) || !(1..=31).contains(&day) || h > 23 || m > 59 || s > 60 {
        return None;
    }
    // Days from 1970-01-01 (Howard Hinnant's days_from_civil).
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let doy = (153 * (if month > 2 { month - 3 } else { month + 9 }) + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    Some(days * 86_400 + h * 3600 + m * 60 + s)
}

/// The rustls configuration every client of the plugin uses: built once per process (the
/// system's CA certificates are read once), shared by the storage and token clients.
pub fn client_config() -> Result<rustls::ClientConfig, String> {
    static BUILT: std::sync::OnceLock<Result<rustls::ClientConfig, String>> = std::sync::OnceLock::new();
    BUILT.get_or_init(build_client_config).clone()
}

fn build_client_config() -> Result<rustls::ClientConfig, String> {
    let loaded = rustls_native_certs::load_native_certs();
    let mut roots = RootCertStore::empty();
    let (_added, ignored) = roots.add_parsable_certificates(loaded.certs.iter().cloned());
    if ignored > 0 || !loaded.errors.is_empty() {
        tracing::debug!(ignored, errors = loaded.errors.len(), "some CA certificates could not be used");
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let inner = if roots.is_empty() {
        tracing::debug!("no CA certificate loaded (SSL_CERT_FILE / SSL_CERT_DIR): HTTPS servers will be refused");
        None
    } else {
        let built = WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider.clone()).build();
        Some(built.map_err(|e| format!("cannot use the CA certificates: {e}"))?)
    };
    let algorithms = provider.signature_verification_algorithms;
    let verifier = TrustedOrPinned { inner, trusted: loaded.certs, algorithms };
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("cannot configure TLS: {e}"))?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(verifier))
        .with_no_client_auth();
    Ok(config)
}

/// Applies [`client_config`] to a client builder.
pub fn configure(builder: reqwest::ClientBuilder) -> Result<reqwest::ClientBuilder, String> {
    Ok(builder.use_preconfigured_tls(client_config()?))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A self-signed `CA:TRUE` certificate for `names`, valid from `from` to `to` (Unix s),
    /// as Azurite's documentation makes one.
    fn ca_cert(names: &[&str], from: i64, to: i64) -> CertificateDer<'static> {
        let mut p = rcgen::CertificateParams::new(names.iter().map(|n| n.to_string()).collect::<Vec<_>>()).unwrap();
        p.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        let t = |s: i64| rcgen::date_time_ymd(1970, 1, 1) + time_of(s);
        p.not_before = t(from);
        p.not_after = t(to);
        let key = rcgen::KeyPair::generate().unwrap();
        p.self_signed(&key).unwrap().der().clone()
    }

    fn time_of(s: i64) -> std::time::Duration {
        std::time::Duration::from_secs(s as u64)
    }

    fn verifier(trusted: CertificateDer<'static>) -> TrustedOrPinned {
        let provider = rustls::crypto::ring::default_provider();
        TrustedOrPinned { inner: None, trusted: vec![trusted], algorithms: provider.signature_verification_algorithms }
    }

    fn verify(v: &TrustedOrPinned, cert: &CertificateDer<'_>, host: &str, now: i64) -> Result<(), Error> {
        let name = ServerName::try_from(host.to_string()).unwrap();
        v.verify_server_cert(cert, &[], &name, &[], UnixTime::since_unix_epoch(time_of(now))).map(|_| ())
    }

    const NOW: i64 = 1_800_000_000;

    #[test]
    fn a_pinned_certificate_is_accepted_only_on_loopback_and_within_its_dates() {
        let cert = ca_cert(&["127.0.0.1", "localhost", "acct.blob.example"], NOW - 3600, NOW + 3600);
        let v = verifier(cert.clone());
        verify(&v, &cert, "127.0.0.1", NOW).unwrap();
        verify(&v, &cert, "localhost", NOW).unwrap();
        // A remote host must pass webpki: the pinned path is not for it.
        assert!(verify(&v, &cert, "acct.blob.example", NOW).is_err());
        let expired = verify(&v, &cert, "127.0.0.1", NOW + 7200).unwrap_err();
        assert_eq!(expired, Error::InvalidCertificate(rustls::CertificateError::Expired));
        let early = verify(&v, &cert, "127.0.0.1", NOW - 7200).unwrap_err();
        assert_eq!(early, Error::InvalidCertificate(rustls::CertificateError::NotValidYet));
        // Another host's name is still refused.
        let other = ca_cert(&["10.0.0.1"], NOW - 3600, NOW + 3600);
        assert!(verify(&verifier(other.clone()), &other, "127.0.0.1", NOW).is_err());
    }

    #[test]
    fn der_times_read_as_unix_seconds() {
        assert_eq!(der_time(0x17, b"700101000000Z"), Some(0));
        assert_eq!(der_time(0x17, b"270115083000Z"), Some(1_800_001_800));
        assert_eq!(der_time(0x18, b"20270115083000Z"), Some(1_800_001_800));
        assert_eq!(der_time(0x18, b"20000229000000Z"), Some(951_782_400));
        assert_eq!(der_time(0x17, b"271315083000Z"), None);
        assert_eq!(der_time(0x17, b"27011508300Z"), None);
        assert_eq!(validity(b"\x30\x01"), None);
    }

    #[test]
    fn the_native_roots_are_loaded_once() {
        let a = client_config().unwrap();
        let b = client_config().unwrap();
        assert!(Arc::ptr_eq(&a.crypto_provider().clone(), &b.crypto_provider().clone()), "one configuration, cloned");
    }
}
