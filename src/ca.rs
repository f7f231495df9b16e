//! The local certificate authority of transparent mode: created on this
//! machine in `state_dir/ca/` (key 0600, never shipped, never logged), and
//! the leaf certificates it mints for intercepted hosts (cached per host).
//!
//! Modes are set explicitly, whatever the umask (the systemd unit runs with
//! `UMask=0077`): the key 0600, the directory 0755 and the certificate and
//! bundle 0644, so an app's own unprivileged service can read
//! `state_dir/ca/ca.pem` and `bundle.pem` while the rest of `state_dir`
//! stays private to modelgate's user.

use std::collections::HashMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use pingora::tls::sign::CertifiedKey;
use pingora::tls::{CertificateDer, CryptoProvider, PrivateKeyDer};
use rcgen::{BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair, KeyUsagePurpose};

/// The CA certificate's subject (leaf certificates name it as issuer).
const CA_NAME: &str = "modelgate local CA";

pub fn cert_path(state_dir: &Path) -> PathBuf {
    state_dir.join("ca").join("ca.pem")
}

fn key_path(state_dir: &Path) -> PathBuf {
    state_dir.join("ca").join("ca-key.pem")
}

fn ca_params() -> CertificateParams {
    let mut p = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, CA_NAME);
    dn.push(DnType::OrganizationName, "modelgate");
    p.distinguished_name = dn;
    p.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    p.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign, KeyUsagePurpose::DigitalSignature];
    p
}

/// Create the CA in `state_dir` unless one is there (or `force`). Returns
/// the certificate's path and whether it was created now.
pub fn init(state_dir: &Path, force: bool) -> Result<(PathBuf, bool), String> {
    let (cert, key) = (cert_path(state_dir), key_path(state_dir));
    if cert.exists() && key.exists() && !force {
        return Ok((cert, false));
    }
    let dir = state_dir.join("ca");
    std::fs::create_dir_all(&dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    set_mode(&dir, 0o755);
    let key_pair = KeyPair::generate().map_err(|e| format!("cannot generate the CA key: {e}"))?;
    let mut params = ca_params();
    validity(&mut params, 3650);
    let ca = params.self_signed(&key_pair).map_err(|e| format!("cannot sign the CA certificate: {e}"))?;
    write_private(&key, key_pair.serialize_pem().as_bytes())?;
    crate::fsutil::write_atomic(&cert, ca.pem().as_bytes()).map_err(|e| format!("cannot write {}: {e}", cert.display()))?;
    set_mode(&cert, 0o644);
    Ok((cert, true))
}

/// Make the public parts readable by everyone (they are certificates), if
/// this user owns them; a CA made under an older, stricter layout is fixed
/// at the next start.
pub fn publish(state_dir: &Path) {
    let dir = state_dir.join("ca");
    for (p, mode) in [(dir.clone(), 0o755), (cert_path(state_dir), 0o644), (dir.join("bundle.pem"), 0o644)] {
        if p.exists() {
            set_mode(&p, mode);
        }
    }
}

fn set_mode(path: &Path, mode: u32) {
    use std::os::unix::fs::PermissionsExt;
    let current = std::fs::metadata(path).map(|m| m.permissions().mode() & 0o7777).ok();
    if current != Some(mode) {
        if let Err(e) = std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)) {
            tracing::warn!(file = %path.display(), error = %e, mode = format!("{mode:o}"), "cannot set the mode of a public CA file; apps running as other users may not read it");
        }
    }
}

/// Write `state_dir/ca/bundle.pem` when it is missing or older than the
/// system's trust store (so an app's `SSL_CERT_FILE` works without a manual
/// `modelgate ca bundle`); a failure is logged, never fatal.
pub fn refresh_bundle(state_dir: &Path) {
    let out = state_dir.join("ca").join("bundle.pem");
    let modified = |p: &Path| std::fs::metadata(p).and_then(|m| m.modified()).ok();
    let system = ["/etc/ssl/certs/ca-certificates.crt", "/etc/pki/tls/certs/ca-bundle.crt"].iter().filter_map(|p| modified(Path::new(p))).max();
    let fresh = match (modified(&out), system, modified(&cert_path(state_dir))) {
        (Some(b), Some(s), Some(c)) => b >= s && b >= c,
        (Some(b), None, Some(c)) => b >= c,
        _ => false,
    };
    if fresh {
        return;
    }
    match write_bundle(&cert_path(state_dir), &out) {
        Ok(n) => {
            tracing::info!(bundle = %out.display(), system_roots = n, "wrote the CA bundle (system roots + the modelgate CA) for SSL_CERT_FILE / REQUESTS_CA_BUNDLE")
        }
        Err(e) => tracing::warn!(bundle = %out.display(), error = %e, "cannot write the CA bundle; run `modelgate ca bundle` as modelgate's user"),
    }
}

/// Set a certificate valid from yesterday for `days` (UTC dates).
fn validity(p: &mut CertificateParams, days: i64) {
    let today = jiff::Timestamp::now().to_zoned(jiff::tz::TimeZone::UTC).date();
    let ymd = |d: jiff::civil::Date| rcgen::date_time_ymd(i32::from(d.year()), d.month() as u8, d.day() as u8);
    p.not_before = ymd(today.saturating_sub(jiff::Span::new().days(1)));
    p.not_after = ymd(today.saturating_add(jiff::Span::new().days(days)));
}

/// Write the key readable by its owner only, created with mode 0600.
fn write_private(path: &Path, data: &[u8]) -> Result<(), String> {
    use std::os::unix::fs::OpenOptionsExt;
    let tmp = path.with_extension("tmp");
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)
        .map_err(|e| format!("cannot write {}: {e}", tmp.display()))?;
    f.write_all(data).and_then(|_| f.sync_all()).map_err(|e| format!("cannot write {}: {e}", tmp.display()))?;
    std::fs::rename(&tmp, path).map_err(|e| format!("cannot write {}: {e}", path.display()))
}

/// A loaded CA that mints leaf certificates.
pub struct Ca {
    pub cert_pem: String,
    cert_der: CertificateDer<'static>,
    issuer: Issuer<'static, KeyPair>,
    /// One key for every leaf (minting stays cheap).
    leaf_key: KeyPair,
    cache: Mutex<HashMap<String, Arc<CertifiedKey>>>,
}

impl std::fmt::Debug for Ca {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Ca { .. }")
    }
}

impl Ca {
    /// Load the CA from `state_dir`, creating it first when missing.
    pub fn open(state_dir: &Path) -> Result<Ca, String> {
        let (cert, created) = init(state_dir, false)?;
        if created {
            tracing::info!(cert = %cert.display(), "created the local CA for transparent mode; trust this certificate in the apps that use the forward proxy (modelgate ca show)");
        }
        let cert_pem = std::fs::read_to_string(&cert).map_err(|e| format!("cannot read {}: {e}", cert.display()))?;
        let key_file = key_path(state_dir);
        let key_pem = std::fs::read_to_string(&key_file).map_err(|e| format!("cannot read {}: {e}", key_file.display()))?;
        let key = KeyPair::from_pem(&key_pem).map_err(|e| format!("{} is not a private key: {e}", key_file.display()))?;
        let cert_der =
            rustls_pemfile::certs(&mut cert_pem.as_bytes()).next().and_then(Result::ok).ok_or_else(|| format!("{} holds no certificate", cert.display()))?;
        let leaf_key = KeyPair::generate().map_err(|e| format!("cannot generate a key: {e}"))?;
        Ok(Ca { cert_pem, cert_der, issuer: Issuer::new(ca_params(), key), leaf_key, cache: Mutex::default() })
    }

    /// The certificate (chain: leaf, CA) and key presented for `host`.
    pub fn leaf(&self, host: &str) -> Result<Arc<CertifiedKey>, String> {
        let host = host.to_ascii_lowercase();
        if let Some(k) = self.cache.lock().unwrap_or_else(|e| e.into_inner()).get(&host) {
            return Ok(k.clone());
        }
        let mut p = CertificateParams::new(vec![host.clone()]).map_err(|e| format!("cannot mint a certificate for {host}: {e}"))?;
        p.distinguished_name = DistinguishedName::new();
        p.distinguished_name.push(DnType::CommonName, host.as_str());
        p.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        p.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        p.use_authority_key_identifier_extension = true;
        validity(&mut p, 90);
        let cert = p.signed_by(&self.leaf_key, &self.issuer).map_err(|e| format!("cannot mint a certificate for {host}: {e}"))?;
        pingora::tls::install_default_crypto_provider();
        let provider = CryptoProvider::get_default().ok_or("no TLS crypto provider is installed")?;
        let key = provider
            .key_provider
            .load_private_key(PrivateKeyDer::Pkcs8(self.leaf_key.serialize_der().into()))
            .map_err(|e| format!("cannot load the leaf key: {e}"))?;
        let certified = Arc::new(CertifiedKey::new(vec![cert.der().clone(), self.cert_der.clone()], key));
        self.cache.lock().unwrap_or_else(|e| e.into_inner()).insert(host, certified.clone());
        Ok(certified)
    }
}

/// Write the system's trusted roots and the CA as one PEM file; returns
/// how many system roots it holds.
pub fn write_bundle(ca_cert: &Path, out: &Path) -> Result<usize, String> {
    let ca = std::fs::read_to_string(ca_cert).map_err(|e| format!("cannot read {}: {e}", ca_cert.display()))?;
    let roots = rustls_native_certs::load_native_certs().map_err(|e| format!("cannot read the system's trusted roots: {e}"))?;
    let mut text = String::new();
    for r in &roots {
        text.push_str(&pem::encode(&pem::Pem::new("CERTIFICATE", r.as_ref().to_vec())));
    }
    text.push_str("# modelgate local CA\n");
    text.push_str(&ca);
    if let Some(dir) = out.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    }
    crate::fsutil::write_atomic(out, text.as_bytes()).map_err(|e| format!("cannot write {}: {e}", out.display()))?;
    set_mode(out, 0o644);
    Ok(roots.len())
}

/// How to make each runtime trust the CA (printed by `modelgate ca show`).
pub fn trust_instructions(cert: &Path, bundle: &Path, proxy: Option<std::net::SocketAddr>) -> String {
    let proxy = proxy.map_or("http://127.0.0.1:8081".to_string(), |a| format!("http://{a}"));
    let (cert, bundle) = (cert.display(), bundle.display());
    format!(
        "
# Trust it (the apps then reach api.openai.com, api.anthropic.com … through {proxy}):
#
# Python (openai, anthropic, google-genai, httpx, requests): one file with the
# system roots plus this CA —
#   modelgate ca bundle            # writes {bundle}
#   export HTTPS_PROXY={proxy} SSL_CERT_FILE={bundle} REQUESTS_CA_BUNDLE={bundle}
#
# Node: NODE_EXTRA_CA_CERTS adds to the built-in roots —
#   export NODE_EXTRA_CA_CERTS={cert} HTTPS_PROXY={proxy}
#   (Node's fetch does not read HTTPS_PROXY: use undici's ProxyAgent, or
#   NODE_USE_ENV_PROXY=1 on Node 24+)
#
# curl:
#   curl -x {proxy} --cacert {bundle} https://api.openai.com/v1/models
#   (or CURL_CA_BUNDLE={bundle} with HTTPS_PROXY set)
#
# The whole host (Debian/Ubuntu):
#   sudo cp {cert} /usr/local/share/ca-certificates/modelgate.crt && sudo update-ca-certificates
"
    )
}

/// The CA certificate in `state_dir`, when the CA has been created.
pub fn existing(state_dir: &Path) -> Option<PathBuf> {
    let cert = cert_path(state_dir);
    (cert.exists() && key_path(state_dir).exists()).then_some(cert)
}

/// What `ca show` says when the forward proxy is off (`config`: how the
/// command names its config).
pub fn proxy_off_note(config: &str) -> String {
    format!(
        "# Transparent mode is off in {config}: listen.forward_proxy is not set, so no app goes through modelgate's\n\
         # HTTPS proxy and no app needs this CA. To turn it on, add under `listen:` in the config\n\
         #   forward_proxy: 127.0.0.1:8081\n\
         # and restart modelgate (README \"Transparent mode\")."
    )
}

/// What `ca show` says when there is no CA yet (it never creates one).
pub fn missing_note(config: &str, state_dir: &Path, proxy: Option<std::net::SocketAddr>) -> String {
    let dir = state_dir.join("ca");
    match proxy {
        None => format!(
            "{}\n# There is no CA in {} either: `modelgate ca init` creates one (modelgate run also does when the proxy is on).",
            proxy_off_note(config),
            dir.display()
        ),
        Some(addr) => format!(
            "# The forward proxy is on ({addr}) but there is no CA in {} yet: `modelgate ca init` creates it (modelgate run also does at start); then run `modelgate ca show` again.",
            dir.display()
        ),
    }
}
