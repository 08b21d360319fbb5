//! Throwaway TLS material for the test servers (the fake Kubernetes API,
//! the registry and its token service): a CA and a server certificate for
//! `127.0.0.1` and `localhost` signed by it, made fresh for each server.

use std::sync::Arc;

use tokio_rustls::rustls;

/// A CA and the server certificate it signed.
pub(crate) struct TlsMaterial {
    pub(crate) ca_pem: String,
    pub(crate) server_der: rustls::pki_types::CertificateDer<'static>,
    pub(crate) server_pem: String,
    pub(crate) server_key_der: Vec<u8>,
    pub(crate) server_key_pem: String,
}

impl TlsMaterial {
    /// A new CA named `name-ca` and a server certificate named `name`, for
    /// 127.0.0.1 and localhost.
    pub(crate) fn generate(name: &str) -> TlsMaterial {
        Self::generate_for(name, &["127.0.0.1", "localhost"])
    }

    /// [`TlsMaterial::generate`] with a server certificate for `hosts`.
    pub(crate) fn generate_for(name: &str, hosts: &[&str]) -> TlsMaterial {
        use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair};
        let ca_key = KeyPair::generate().expect("CA key");
        let mut ca_params = CertificateParams::new(Vec::<String>::new()).expect("CA params");
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca_params
            .distinguished_name
            .push(DnType::CommonName, format!("{name}-ca"));
        let ca = ca_params.self_signed(&ca_key).expect("self-signed CA");
        let server_key = KeyPair::generate().expect("server key");
        let mut params =
            CertificateParams::new(hosts.iter().map(|h| h.to_string()).collect::<Vec<_>>())
                .expect("server params");
        params.distinguished_name.push(DnType::CommonName, name);
        let server = params
            .signed_by(&server_key, &ca, &ca_key)
            .expect("server certificate");
        TlsMaterial {
            ca_pem: ca.pem(),
            server_der: server.der().clone(),
            server_pem: server.pem(),
            server_key_der: server_key.serialize_der(),
            server_key_pem: server_key.serialize_pem(),
        }
    }

    /// The server side's rustls configuration (HTTP/1.1 by ALPN).
    pub(crate) fn server_config(&self) -> Arc<rustls::ServerConfig> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let key = rustls::pki_types::PrivateKeyDer::Pkcs8(self.server_key_der.clone().into());
        let mut config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .expect("TLS versions")
            .with_no_client_auth()
            .with_single_cert(vec![self.server_der.clone()], key)
            .expect("server TLS config");
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        Arc::new(config)
    }

    /// A tokio acceptor for [`TlsMaterial::server_config`].
    pub(crate) fn acceptor(&self) -> tokio_rustls::TlsAcceptor {
        tokio_rustls::TlsAcceptor::from(self.server_config())
    }
}
