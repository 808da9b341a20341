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
                if self.trusted.iter().any(|t| t.as_ref() == end_entity.as_ref()) {
                    // The name must still match: a trusted certificate for another host is refused.
                    let parsed = rustls::server::ParsedCertificate::try_from(end_entity)?;
                    rustls::client::verify_server_name(&parsed, server_name)?;
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

/// The rustls configuration every client of the plugin uses.
pub fn client_config() -> Result<rustls::ClientConfig, String> {
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
