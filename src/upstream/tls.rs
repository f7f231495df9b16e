//! Trust roots for providers with a private CA (`ca_file`): the system roots
//! plus the file's certificates, in the form Pingora's per-peer CA takes.

use std::sync::Arc;

use pingora::protocols::tls::CaType;
use pingora::utils::tls::WrappedX509;
use x509_parser::prelude::{FromDer, X509Certificate};

fn wrap(der: Vec<u8>) -> Option<WrappedX509> {
    WrappedX509::try_new(der, |raw| X509Certificate::from_der(raw).map(|(_, c)| c)).ok()
}

/// Load `path` (PEM certificates) together with the platform's roots.
pub fn load_ca_bundle(path: &str) -> Result<Arc<CaType>, String> {
    let file = std::fs::File::open(path).map_err(|e| format!("cannot open CA file `{path}`: {e}"))?;
    let mut extra = Vec::new();
    for item in rustls_pemfile::certs(&mut std::io::BufReader::new(file)) {
        let der = item.map_err(|e| format!("CA file `{path}` is not valid PEM: {e}"))?;
        extra.push(wrap(der.to_vec()).ok_or_else(|| format!("CA file `{path}` holds a certificate that does not parse"))?);
    }
    if extra.is_empty() {
        return Err(format!("CA file `{path}` holds no PEM certificates"));
    }
    // System roots that fail to parse are skipped, as rustls itself does.
    let system = rustls_native_certs::load_native_certs().unwrap_or_default();
    let mut all: Vec<WrappedX509> = system.into_iter().filter_map(|c| wrap(c.to_vec())).collect();
    all.extend(extra);
    Ok(Arc::from(all.into_boxed_slice()))
}
