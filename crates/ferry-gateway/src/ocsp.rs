//! OCSP stapling with responses Ferry fetches itself (`[gateway.tls] ocsp_stapling`, nginx's `ssl_stapling on`).
//!
//! For each certificate served without an `ocsp_response` file, the request is built from the certificate file's
//! chain (the leaf and, right after it, its issuer: the CertID is SHA-1 of the issuer's name and key with the
//! leaf's serial) and POSTed over plain HTTP to the responder named by the leaf's Authority Information Access
//! (or `ocsp_responder`). A response is stapled only once checked: status successful, signed by the issuer or by a
//! responder certificate the issuer signed for OCSP signing, an answer for this CertID that says `good`,
//! `thisUpdate` not in the future (beyond [`CLOCK_SKEW`]) and `nextUpdate`, when there is one, not past.
//!
//! A task per certificate fetches in the background (the listener does not wait for it: the first handshakes go
//! without a staple), refreshes at half of the response's validity (every hour without `nextUpdate`), retries a
//! failure after [`RETRY_MIN`] doubling up to [`RETRY_MAX`], and stops stapling a response at its `nextUpdate`.
//! The staple changes for new handshakes through [`Stapled`], the resolver of the site's rustls configuration,
//! which reads the certified key from a lock that the task replaces: no listener or site is rebuilt.
//!
//! Tasks are shared by certificate (its chain's DER and the responder): a reload or a file check that builds the
//! sites again finds the [`Stapling`] of an unchanged certificate still alive (the old sites hold it until the new
//! ones are installed) and keeps it, with its response and schedule. When no sites hold a `Stapling` any more,
//! dropping it stops its task.

use der::asn1::{AnyRef, BitStringRef};
use der::{Decode, Encode};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls_pki_types::{CertificateDer, UnixTime};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock, Weak};
use std::time::{Duration, SystemTime};
use tokio::sync::oneshot;
use x509_cert::ext::pkix::name::GeneralName;
use x509_cert::ext::pkix::AuthorityInfoAccessSyntax;
use x509_cert::Certificate;
use x509_ocsp::builder::OcspRequestBuilder;
use x509_ocsp::{CertId, CertStatus, OcspResponse, OcspResponseStatus, Request, ResponseData};

/// The first retry after a failed fetch; each further failure doubles it, up to [`RETRY_MAX`].
pub(crate) const RETRY_MIN: Duration = Duration::from_secs(5);
/// The longest wait between retries of a failing fetch.
pub(crate) const RETRY_MAX: Duration = Duration::from_secs(30 * 60);
/// How often a response without `nextUpdate` (or a revoked status) is fetched again.
const REFRESH_WITHOUT_NEXT_UPDATE: Duration = Duration::from_secs(60 * 60);
/// The soonest a response is fetched again after a good one (a responder whose responses are nearly expired).
const REFRESH_MIN: Duration = Duration::from_secs(60);
/// One fetch, from connecting to the last byte of the response.
const FETCH_TIMEOUT: Duration = Duration::from_secs(10);
/// How far in the future `thisUpdate` may be (the responder's clock ahead of ours).
pub(crate) const CLOCK_SKEW: Duration = Duration::from_secs(5 * 60);
/// The largest response body read (responses are a few KiB, with a responder certificate).
const MAX_RESPONSE: usize = 256 * 1024;
/// id-kp-OCSPSigning (1.3.6.1.5.5.7.3.9), the content octets of the OID: what a delegated responder's
/// certificate must list in its extended key usage.
const OCSP_SIGNING: &[u8] = &[0x2b, 0x06, 0x01, 0x05, 0x05, 0x07, 0x03, 0x09];

/// Why a certificate cannot be stapled, or why a fetched response is not stapled.
#[derive(Debug, thiserror::Error)]
pub(crate) enum OcspError {
    #[error("no issuer certificate after the certificate in the file (the chain must include it)")]
    NoIssuer,
    #[error("the second certificate in the file is not the issuer of the first")]
    WrongIssuer,
    #[error(
        "the certificate names no OCSP responder (Authority Information Access) and ocsp_responder is not set"
    )]
    NoResponder,
    #[error("responder {0}: only http:// responders are supported")]
    NotHttp(String),
    #[error("responder URL {0:?}: {1}")]
    BadUrl(String, String),
    #[error("certificate: {0}")]
    Certificate(der::Error),
    #[error("building the request: {0}")]
    Request(String),
    #[error("connecting to the responder: {0}")]
    Connect(std::io::Error),
    #[error("HTTP: {0}")]
    Http(String),
    #[error("no response within {0:?}")]
    Timeout(Duration),
    #[error("the responder answered HTTP {0}")]
    HttpStatus(u16),
    #[error("malformed response: {0}")]
    Malformed(String),
    #[error("the responder answered {0:?} instead of successful")]
    Unsuccessful(OcspResponseStatus),
    #[error("the response is not signed by the issuer nor by a responder certificate the issuer signed for OCSP")]
    Signature,
    #[error("the response has no answer for this certificate")]
    NotForThisCertificate,
    #[error("the certificate is revoked (since {0})")]
    Revoked(String),
    #[error("the responder does not know the certificate (status unknown)")]
    Unknown,
    #[error("the response is not valid yet (thisUpdate {0})")]
    NotYetValid(String),
    #[error("the response has expired (nextUpdate {0})")]
    Expired(String),
}

/// What is needed to fetch a certificate's responses, worked out once from its chain.
#[derive(Debug)]
pub(crate) struct Target {
    /// The certificate file, for log lines.
    file: PathBuf,
    /// The responder's URL as configured or found (for log lines), and parsed.
    url: String,
    uri: http::Uri,
    /// The responder's HTTP/1.1 client (`ferry_http`'s, as upstream servers use), built once.
    client: Arc<ferry_http::client::OriginClient>,
    /// The DER OCSPRequest, the same for every fetch (no nonce: responders serve pre-signed responses).
    request: Vec<u8>,
    cert_id: CertId,
    issuer: CertificateDer<'static>,
}

impl Target {
    /// The request for `chain`'s first certificate, its issuer being the second; the responder is `responder`
    /// when set, else the leaf's Authority Information Access OCSP URL.
    pub(crate) fn new(
        chain: &[CertificateDer<'_>],
        responder: Option<&str>,
        file: &Path,
    ) -> Result<Self, OcspError> {
        let (leaf_der, issuer_der) = match chain {
            [leaf, issuer, ..] => (leaf, issuer),
            _ => return Err(OcspError::NoIssuer),
        };
        let leaf = Certificate::from_der(leaf_der).map_err(OcspError::Certificate)?;
        let issuer = Certificate::from_der(issuer_der).map_err(OcspError::Certificate)?;
        if leaf.tbs_certificate.issuer != issuer.tbs_certificate.subject {
            return Err(OcspError::WrongIssuer);
        }
        let url = match responder {
            Some(url) => url.trim().to_owned(),
            None => aia_ocsp_url(&leaf)?.ok_or(OcspError::NoResponder)?,
        };
        let uri = responder_uri(&url)?;
        let client = match uri.authority() {
            Some(authority) => ferry_http::client::OriginClient::for_authority(
                authority,
                ferry_http::client::ClientOptions::keep_alive(FETCH_TIMEOUT),
            ),
            None => return Err(OcspError::BadUrl(url, "no host".into())),
        };
        let request = Request::from_cert::<sha1::Sha1>(&issuer, &leaf)
            .map_err(|e| OcspError::Request(e.to_string()))?;
        let cert_id = request.req_cert.clone();
        let request = OcspRequestBuilder::default()
            .with_request(request)
            .build()
            .to_der()
            .map_err(|e| OcspError::Request(e.to_string()))?;
        Ok(Self {
            file: file.to_owned(),
            url,
            uri,
            client,
            request,
            cert_id,
            issuer: issuer_der.clone().into_owned(),
        })
    }
}

/// The first OCSP URL of the certificate's Authority Information Access extension.
fn aia_ocsp_url(cert: &Certificate) -> Result<Option<String>, OcspError> {
    let Some((_, aia)) = cert
        .tbs_certificate
        .get::<AuthorityInfoAccessSyntax>()
        .map_err(OcspError::Certificate)?
    else {
        return Ok(None);
    };
    Ok(aia
        .0
        .iter()
        .filter(|d| d.access_method == const_oid::db::rfc5280::ID_AD_OCSP)
        .find_map(|d| match &d.access_location {
            GeneralName::UniformResourceIdentifier(uri) => Some(uri.as_str().to_owned()),
            _ => None,
        }))
}

/// `url` parsed, when it is an `http://` URL with a host.
pub(crate) fn responder_uri(url: &str) -> Result<http::Uri, OcspError> {
    let uri: http::Uri = url
        .parse()
        .map_err(|e: http::uri::InvalidUri| OcspError::BadUrl(url.to_owned(), e.to_string()))?;
    match uri.scheme_str() {
        Some("http") => {}
        Some(_) => return Err(OcspError::NotHttp(url.to_owned())),
        None => {
            return Err(OcspError::BadUrl(
                url.to_owned(),
                "not an absolute http:// URL".into(),
            ))
        }
    }
    if uri.host().is_none_or(str::is_empty) {
        return Err(OcspError::BadUrl(url.to_owned(), "no host".into()));
    }
    Ok(uri)
}

/// The times of a response that was checked and may be stapled.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Fresh {
    pub(crate) this_update: SystemTime,
    pub(crate) next_update: Option<SystemTime>,
}

impl Fresh {
    /// How long until the next fetch: half of the validity from `thisUpdate`, an hour without `nextUpdate`, and
    /// not sooner than a minute.
    pub(crate) fn refresh_in(&self, now: SystemTime) -> Duration {
        let Some(next) = self.next_update else {
            return REFRESH_WITHOUT_NEXT_UPDATE;
        };
        let half = next.duration_since(self.this_update).unwrap_or_default() / 2;
        (self.this_update + half)
            .duration_since(now)
            .unwrap_or_default()
            .max(REFRESH_MIN)
    }
}

/// A BasicOCSPResponse as it came, for its signature: x509-ocsp's types decode the signed part into values, and
/// the signature must be checked on the bytes as the responder signed them, not on a re-encoding. The fields are
/// RFC 6960's; der's derive does the decoding.
#[derive(der::Sequence)]
struct SignedBasic<'a> {
    tbs_response_data: AnyRef<'a>,
    /// The AlgorithmIdentifier SEQUENCE; its content is what rustls-pki-types names algorithms by.
    signature_algorithm: AnyRef<'a>,
    signature: BitStringRef<'a>,
    #[asn1(context_specific = "0", tag_mode = "EXPLICIT", optional = "true")]
    certs: Option<Vec<AnyRef<'a>>>,
}

/// Check a DER OCSPResponse for the certificate of `cert_id` issued by `issuer`, at `now`.
pub(crate) fn check(
    response: &[u8],
    cert_id: &CertId,
    issuer: &CertificateDer<'_>,
    now: SystemTime,
) -> Result<Fresh, OcspError> {
    let malformed = |e: der::Error| OcspError::Malformed(e.to_string());
    let response = OcspResponse::from_der(response).map_err(malformed)?;
    if response.response_status != OcspResponseStatus::Successful {
        return Err(OcspError::Unsuccessful(response.response_status));
    }
    let bytes = response
        .response_bytes
        .ok_or_else(|| OcspError::Malformed("successful without a response".into()))?;
    if bytes.response_type != const_oid::db::rfc6960::ID_PKIX_OCSP_BASIC {
        return Err(OcspError::Malformed(format!(
            "response type {} is not id-pkix-ocsp-basic",
            bytes.response_type
        )));
    }
    let signed = SignedBasic::from_der(bytes.response.as_bytes()).map_err(malformed)?;
    let tbs = signed.tbs_response_data.to_der().map_err(malformed)?;
    verify_signature(&signed, &tbs, issuer, now)?;
    let data = ResponseData::from_der(&tbs).map_err(malformed)?;
    check_data(&data, cert_id, now)
}

/// The checks of a response's content: an answer for `cert_id`, `good`, and its times.
pub(crate) fn check_data(
    data: &ResponseData,
    cert_id: &CertId,
    now: SystemTime,
) -> Result<Fresh, OcspError> {
    let single = data
        .responses
        .iter()
        .find(|r| r.cert_id == *cert_id)
        .ok_or(OcspError::NotForThisCertificate)?;
    let time = |t: &x509_ocsp::OcspGeneralizedTime| SystemTime::UNIX_EPOCH + t.0.to_unix_duration();
    match &single.cert_status {
        CertStatus::Good(_) => {}
        CertStatus::Revoked(info) => {
            return Err(OcspError::Revoked(rfc3339(time(&info.revocation_time))))
        }
        CertStatus::Unknown(_) => return Err(OcspError::Unknown),
    }
    let fresh = Fresh {
        this_update: time(&single.this_update),
        next_update: single.next_update.as_ref().map(time),
    };
    if fresh.this_update > now + CLOCK_SKEW {
        return Err(OcspError::NotYetValid(rfc3339(fresh.this_update)));
    }
    if let Some(next) = fresh.next_update.filter(|n| *n <= now) {
        return Err(OcspError::Expired(rfc3339(next)));
    }
    Ok(fresh)
}

/// The response's signature, by the issuer itself or by a certificate of the response that the issuer signed,
/// valid now, with id-kp-OCSPSigning (RFC 6960, 4.2.2.2). rustls-webpki does the certificate and signature
/// checks; algorithms are matched by their identifiers, as it does for certificates.
fn verify_signature(
    signed: &SignedBasic<'_>,
    tbs: &[u8],
    issuer: &CertificateDer<'_>,
    now: SystemTime,
) -> Result<(), OcspError> {
    let algorithms = webpki::ALL_VERIFICATION_ALGS;
    let signature = signed.signature.as_bytes().ok_or(OcspError::Signature)?;
    let algorithm = signed.signature_algorithm.value();
    let signed_by = |cert: &CertificateDer<'_>| {
        let Ok(cert) = webpki::EndEntityCert::try_from(cert) else {
            return false;
        };
        algorithms
            .iter()
            .filter(|a| a.signature_alg_id().as_ref() == algorithm)
            .any(|a| cert.verify_signature(*a, tbs, signature).is_ok())
    };
    if signed_by(issuer) {
        return Ok(());
    }
    let Ok(anchor) = webpki::anchor_from_trusted_cert(issuer) else {
        return Err(OcspError::Signature);
    };
    let now = UnixTime::since_unix_epoch(
        now.duration_since(SystemTime::UNIX_EPOCH)
            .unwrap_or_default(),
    );
    for cert in signed.certs.iter().flatten() {
        let Ok(der) = cert.to_der() else { continue };
        let der = CertificateDer::from(der);
        let Ok(responder) = webpki::EndEntityCert::try_from(&der) else {
            continue;
        };
        let certified = responder
            .verify_for_usage(
                algorithms,
                std::slice::from_ref(&anchor),
                &[],
                now,
                webpki::KeyUsage::required(OCSP_SIGNING),
                None,
                None,
            )
            .is_ok();
        if certified && signed_by(&der) {
            return Ok(());
        }
    }
    Err(OcspError::Signature)
}

/// `2026-01-02T03:04:05Z`, for log lines and errors.
fn rfc3339(t: SystemTime) -> String {
    let secs = t
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or_default();
    match der::DateTime::from_unix_duration(Duration::from_secs(secs)) {
        Ok(d) => format!(
            "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}Z",
            d.year(),
            d.month(),
            d.day(),
            d.hour(),
            d.minutes(),
            d.seconds()
        ),
        Err(_) => format!("{secs} s after 1970"),
    }
}

/// POST the request to the responder and read its answer.
async fn post(target: &Target) -> Result<Vec<u8>, OcspError> {
    use http_body_util::BodyExt;
    let uri = &target.uri;
    let authority = uri.authority().map_or("", |a| a.as_str());
    let path = uri.path_and_query().map_or("/", |p| p.as_str());
    let request = http::Request::post(path)
        .header(http::header::HOST, authority)
        .header(http::header::CONTENT_TYPE, "application/ocsp-request")
        .header(http::header::ACCEPT, "application/ocsp-response")
        .body(ferry_http::full(target.request.clone()))
        .map_err(|e| OcspError::Http(e.to_string()))?;
    let response = target.client.send(request).await.map_err(|e| match e {
        ferry_http::client::ClientError::Connect { source, .. } => OcspError::Connect(source),
        e => OcspError::Http(format!(
            "{e}: {}",
            std::error::Error::source(&e).map_or(String::new(), |s| s.to_string())
        )),
    })?;
    if response.status() != http::StatusCode::OK {
        return Err(OcspError::HttpStatus(response.status().as_u16()));
    }
    let body = http_body_util::Limited::new(response.into_body(), MAX_RESPONSE)
        .collect()
        .await
        .map_err(|e| OcspError::Http(format!("reading the response: {e}")))?
        .to_bytes();
    Ok(body.to_vec())
}

/// Fetch and check one response.
async fn fetch(target: &Target) -> Result<(Vec<u8>, Fresh), OcspError> {
    let der = tokio::time::timeout(FETCH_TIMEOUT, post(target))
        .await
        .map_err(|_| OcspError::Timeout(FETCH_TIMEOUT))??;
    let fresh = check(&der, &target.cert_id, &target.issuer, SystemTime::now())?;
    Ok((der, fresh))
}

/// A site's certificate with the response stapled now.
#[derive(Debug)]
struct Slot {
    current: RwLock<Arc<CertifiedKey>>,
}

impl Slot {
    fn get(&self) -> Arc<CertifiedKey> {
        match self.current.read() {
            Ok(k) => k.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    /// Staple `response` to new handshakes (`None`: staple nothing).
    fn staple(&self, response: Option<Vec<u8>>) {
        let mut key = CertifiedKey::clone(&self.get());
        key.ocsp = response;
        match self.current.write() {
            Ok(mut k) => *k = Arc::new(key),
            Err(poisoned) => *poisoned.into_inner() = Arc::new(key),
        }
    }
}

/// The certificate resolver of a site whose responses are fetched: the certified key as the fetcher left it.
#[derive(Debug)]
pub(crate) struct Stapled(Arc<Slot>);

impl ResolvesServerCert for Stapled {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.0.get())
    }
}

/// A certificate whose responses are fetched, for as long as some sites hold it: dropping the last one stops
/// its task.
#[derive(Debug)]
pub(crate) struct Stapling {
    slot: Arc<Slot>,
    _stop: oneshot::Sender<()>,
}

impl Stapling {
    /// The resolver for the site's rustls configuration.
    pub(crate) fn resolver(&self) -> Arc<dyn ResolvesServerCert> {
        Arc::new(Stapled(self.slot.clone()))
    }
}

/// The live [`Stapling`]s by certificate chain and responder, so that sites built again share them.
static LIVE: Mutex<Option<HashMap<Vec<u8>, Weak<Stapling>>>> = Mutex::new(None);

/// Stapling of fetched responses for `key` (loaded from `file`), or `None` with a warning when its responses
/// cannot be fetched (no issuer in the chain, no responder). The task runs on the current Tokio runtime; without
/// one (`ferry config check`), only the checks are made.
pub(crate) fn start(
    key: CertifiedKey,
    responder: Option<&str>,
    file: &Path,
) -> Option<Arc<Stapling>> {
    let target = match Target::new(&key.cert, responder, file) {
        Ok(t) => t,
        Err(e) => {
            tracing::warn!(
                file = %file.display(),
                "OCSP stapling is on but this certificate is served without it: {e}"
            );
            return None;
        }
    };
    let runtime = tokio::runtime::Handle::try_current().ok()?;
    let mut id: Vec<u8> = key
        .cert
        .iter()
        .flat_map(|c| c.as_ref().iter().copied())
        .collect();
    id.extend(b"\0");
    id.extend(target.url.as_bytes());
    let mut live = match LIVE.lock() {
        Ok(l) => l,
        Err(poisoned) => poisoned.into_inner(),
    };
    let live = live.get_or_insert_with(HashMap::new);
    live.retain(|_, s| s.strong_count() > 0);
    if let Some(running) = live.get(&id).and_then(Weak::upgrade) {
        return Some(running);
    }
    let slot = Arc::new(Slot {
        current: RwLock::new(Arc::new(key)),
    });
    let (stop, stopped) = oneshot::channel();
    runtime.spawn(run(slot.clone(), target, stopped));
    let stapling = Arc::new(Stapling { slot, _stop: stop });
    live.insert(id, Arc::downgrade(&stapling));
    Some(stapling)
}

/// Fetch, staple and refresh until `stop` is dropped.
async fn run(slot: Arc<Slot>, target: Target, mut stop: oneshot::Receiver<()>) {
    let file = target.file.display().to_string();
    let mut retry = RETRY_MIN;
    // the nextUpdate of the response stapled now
    let mut expires: Option<SystemTime> = None;
    loop {
        let fetched = tokio::select! {
            _ = &mut stop => return,
            f = fetch(&target) => f,
        };
        let wait = match fetched {
            Ok((der, fresh)) => {
                slot.staple(Some(der));
                expires = fresh.next_update;
                retry = RETRY_MIN;
                let refresh = fresh.refresh_in(SystemTime::now());
                tracing::info!(
                    file,
                    responder = %target.url,
                    next_update = %fresh.next_update.map(rfc3339).unwrap_or_else(|| "none".into()),
                    refresh_in = ?refresh,
                    "OCSP response fetched: stapled"
                );
                refresh
            }
            Err(e @ OcspError::Revoked(_)) => {
                slot.staple(None);
                expires = None;
                retry = RETRY_MIN;
                tracing::error!(
                    file,
                    responder = %target.url,
                    "OCSP: {e}: no response is stapled; replace the certificate"
                );
                REFRESH_WITHOUT_NEXT_UPDATE
            }
            Err(e) => {
                let wait = retry;
                retry = (retry * 2).min(RETRY_MAX);
                tracing::warn!(
                    file,
                    responder = %target.url,
                    retry_in = ?wait,
                    stapled = expires.is_some(),
                    "OCSP fetch failed: {e}"
                );
                wait
            }
        };
        let fetch_at = tokio::time::Instant::now() + wait;
        loop {
            // the response in use stops being stapled at its nextUpdate, if that comes before the next fetch
            let expiry = expires.map(|e| {
                tokio::time::Instant::now()
                    + e.duration_since(SystemTime::now()).unwrap_or_default()
            });
            let (until, expiring) = match expiry {
                Some(at) if at < fetch_at => (at, true),
                _ => (fetch_at, false),
            };
            tokio::select! {
                _ = &mut stop => return,
                _ = tokio::time::sleep_until(until) => {}
            }
            if !expiring {
                break;
            }
            slot.staple(None);
            expires = None;
            tracing::warn!(
                file,
                responder = %target.url,
                "OCSP response expired (its nextUpdate passed) before a new one was fetched: no longer stapled"
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rcgen::{
        BasicConstraints, CertificateParams, CustomExtension, DnType, IsCa, KeyPair,
        SerialNumber as RcSerial,
    };
    use x509_ocsp::{OcspGeneralizedTime, ResponderId, SingleResponse, Version};

    struct Pki {
        ca: rcgen::Certificate,
        ca_key: KeyPair,
        leaf: rcgen::Certificate,
    }

    /// A CA and a leaf whose AIA names `http://127.0.0.1:8888/ocsp`.
    fn pki() -> Pki {
        let ca_key = KeyPair::generate().expect("key");
        let mut p = CertificateParams::new(Vec::<String>::new()).expect("params");
        p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        p.distinguished_name.push(DnType::CommonName, "test ca");
        let ca = p.self_signed(&ca_key).expect("ca");
        let key = KeyPair::generate().expect("key");
        let mut p = CertificateParams::new(vec!["localhost".to_owned()]).expect("params");
        p.serial_number = Some(RcSerial::from_slice(&[0x10, 0x01]));
        // AuthorityInfoAccess ::= SEQUENCE OF AccessDescription { id-ad-ocsp, [6] IA5String }, written as
        // bytes here because rcgen has no AIA setting (test data only)
        let url = b"http://127.0.0.1:8888/ocsp";
        let mut desc = vec![
            0x06, 0x08, 0x2b, 0x06, 0x01, 0x05, 0x05, 0x07, 0x30, 0x01, 0x86,
        ];
        desc.push(url.len() as u8);
        desc.extend(url);
        let mut access = vec![0x30, desc.len() as u8];
        access.extend(desc);
        let mut aia = vec![0x30, access.len() as u8];
        aia.extend(access);
        p.custom_extensions = vec![CustomExtension::from_oid_content(
            &[1, 3, 6, 1, 5, 5, 7, 1, 1],
            aia,
        )];
        let leaf = p.signed_by(&key, &ca, &ca_key).expect("leaf");
        Pki { ca, ca_key, leaf }
    }

    fn chain(p: &Pki) -> Vec<CertificateDer<'static>> {
        vec![p.leaf.der().clone(), p.ca.der().clone()]
    }

    #[test]
    fn the_request_names_the_certificate_by_its_issuer_and_serial() {
        use sha1::Digest;
        let p = pki();
        let target = Target::new(&chain(&p), None, Path::new("leaf.pem")).expect("target");
        assert_eq!(target.url, "http://127.0.0.1:8888/ocsp");
        let request = x509_ocsp::OcspRequest::from_der(&target.request).expect("decodes");
        assert!(request.optional_signature.is_none());
        let [one] = request.tbs_request.request_list.as_slice() else {
            panic!("one request: {request:?}")
        };
        let id = &one.req_cert;
        assert_eq!(id, &target.cert_id);
        assert_eq!(id.hash_algorithm.oid, const_oid::db::rfc5912::ID_SHA_1);
        assert_eq!(id.serial_number.as_bytes(), &[0x10, 0x01]);
        let ca = Certificate::from_der(p.ca.der()).expect("ca");
        let name = sha1::Sha1::digest(ca.tbs_certificate.subject.to_der().expect("der"));
        assert_eq!(id.issuer_name_hash.as_bytes(), name.as_slice());
        let key = sha1::Sha1::digest(
            ca.tbs_certificate
                .subject_public_key_info
                .subject_public_key
                .raw_bytes(),
        );
        assert_eq!(id.issuer_key_hash.as_bytes(), key.as_slice());

        // the override wins over the AIA; only http:// responders
        let t =
            Target::new(&chain(&p), Some("http://ocsp.test:81/x"), Path::new("l")).expect("target");
        assert_eq!(t.uri.port_u16(), Some(81));
        assert!(matches!(
            Target::new(&chain(&p), Some("https://ocsp.test/"), Path::new("l")),
            Err(OcspError::NotHttp(_))
        ));
        // without the issuer, or with another certificate in its place, or without a responder: nothing to fetch
        assert!(matches!(
            Target::new(&chain(&p)[..1], None, Path::new("l")),
            Err(OcspError::NoIssuer)
        ));
        assert!(matches!(
            Target::new(
                &[p.leaf.der().clone(), p.leaf.der().clone()],
                None,
                Path::new("l")
            ),
            Err(OcspError::WrongIssuer)
        ));
        assert!(matches!(
            Target::new(
                &[p.ca.der().clone(), p.ca.der().clone()],
                None,
                Path::new("l")
            ),
            Err(OcspError::NoResponder)
        ));
    }

    fn at(t: SystemTime) -> OcspGeneralizedTime {
        OcspGeneralizedTime(
            der::asn1::GeneralizedTime::from_unix_duration(Duration::from_secs(
                t.duration_since(SystemTime::UNIX_EPOCH)
                    .expect("after")
                    .as_secs(),
            ))
            .expect("time"),
        )
    }

    fn data(
        id: &CertId,
        status: CertStatus,
        this: SystemTime,
        next: Option<SystemTime>,
    ) -> ResponseData {
        ResponseData {
            version: Version::V1,
            responder_id: ResponderId::ByKey(der::asn1::OctetString::new(vec![1; 20]).expect("id")),
            produced_at: at(this),
            responses: vec![SingleResponse {
                cert_id: id.clone(),
                cert_status: status,
                this_update: at(this),
                next_update: next.map(at),
                single_extensions: None,
            }],
            response_extensions: None,
        }
    }

    /// A DER OCSPResponse of `data`, signed by `key` (ECDSA P-256 with SHA-256).
    fn signed(data: &ResponseData, key: &KeyPair, certs: Option<Vec<Certificate>>) -> Vec<u8> {
        let tbs = data.to_der().expect("der");
        let rng = ring::rand::SystemRandom::new();
        let signer = ring::signature::EcdsaKeyPair::from_pkcs8(
            &ring::signature::ECDSA_P256_SHA256_ASN1_SIGNING,
            &key.serialize_der(),
            &rng,
        )
        .expect("ring key");
        let signature = signer.sign(&rng, &tbs).expect("sign");
        let basic = x509_ocsp::BasicOcspResponse {
            tbs_response_data: data.clone(),
            signature_algorithm: spki_alg(const_oid::db::rfc5912::ECDSA_WITH_SHA_256),
            signature: der::asn1::BitString::from_bytes(signature.as_ref()).expect("bits"),
            certs,
        };
        OcspResponse::successful(basic)
            .expect("response")
            .to_der()
            .expect("der")
    }

    fn spki_alg(oid: const_oid::ObjectIdentifier) -> x509_cert::spki::AlgorithmIdentifierOwned {
        x509_cert::spki::AlgorithmIdentifierOwned {
            oid,
            parameters: None,
        }
    }

    #[test]
    fn a_good_response_signed_by_the_issuer_is_stapled_and_others_are_not() {
        let p = pki();
        let target = Target::new(&chain(&p), None, Path::new("leaf.pem")).expect("target");
        let id = &target.cert_id;
        let issuer = p.ca.der();
        let now = SystemTime::now();
        let day = Duration::from_secs(86_400);
        let good = signed(
            &data(id, CertStatus::good(), now, Some(now + day)),
            &p.ca_key,
            None,
        );
        let fresh = check(&good, id, issuer, now).expect("good");
        assert!(fresh.next_update.is_some());
        // refreshed at half of the validity
        let refresh = fresh.refresh_in(now);
        assert!(
            refresh > day / 2 - Duration::from_secs(2) && refresh <= day / 2,
            "{refresh:?}"
        );
        // and not later than its nextUpdate allows
        assert!(matches!(
            check(&good, id, issuer, now + day + Duration::from_secs(1)),
            Err(OcspError::Expired(_))
        ));

        // signed by another key: refused
        let stranger = KeyPair::generate().expect("key");
        let forged = signed(&data(id, CertStatus::good(), now, None), &stranger, None);
        assert!(matches!(
            check(&forged, id, issuer, now),
            Err(OcspError::Signature)
        ));
        // the bytes as signed: a flipped byte in the signed part fails
        let mut tampered = good.clone();
        let i = tampered.len() / 3;
        tampered[i] ^= 1;
        assert!(check(&tampered, id, issuer, now).is_err());

        // revoked, unknown, another certificate, too far in the future
        let revoked = CertStatus::revoked(x509_ocsp::RevokedInfo {
            revocation_time: at(now - day),
            revocation_reason: None,
        });
        let r = signed(&data(id, revoked, now, Some(now + day)), &p.ca_key, None);
        assert!(matches!(
            check(&r, id, issuer, now),
            Err(OcspError::Revoked(_))
        ));
        let u = signed(&data(id, CertStatus::unknown(), now, None), &p.ca_key, None);
        assert!(matches!(
            check(&u, id, issuer, now),
            Err(OcspError::Unknown)
        ));
        let mut other = id.clone();
        other.serial_number = x509_cert::serial_number::SerialNumber::from(7u32);
        let o = signed(
            &data(&other, CertStatus::good(), now, None),
            &p.ca_key,
            None,
        );
        assert!(matches!(
            check(&o, id, issuer, now),
            Err(OcspError::NotForThisCertificate)
        ));
        let later = now + CLOCK_SKEW + Duration::from_secs(60);
        let f = signed(&data(id, CertStatus::good(), later, None), &p.ca_key, None);
        assert!(matches!(
            check(&f, id, issuer, now),
            Err(OcspError::NotYetValid(_))
        ));
        // within the skew it passes; without nextUpdate it is fetched again in an hour
        let soon = signed(
            &data(id, CertStatus::good(), now + Duration::from_secs(60), None),
            &p.ca_key,
            None,
        );
        assert_eq!(
            check(&soon, id, issuer, now).expect("skew").refresh_in(now),
            REFRESH_WITHOUT_NEXT_UPDATE
        );

        // an unsuccessful status, and bytes that are not a response
        let try_later = OcspResponse::try_later().to_der().expect("der");
        assert!(matches!(
            check(&try_later, id, issuer, now),
            Err(OcspError::Unsuccessful(OcspResponseStatus::TryLater))
        ));
        assert!(matches!(
            check(b"<html>", id, issuer, now),
            Err(OcspError::Malformed(_))
        ));
    }

    #[test]
    fn a_delegated_responder_needs_the_issuers_signature_and_ocsp_signing() {
        let p = pki();
        let target = Target::new(&chain(&p), None, Path::new("leaf.pem")).expect("target");
        let id = &target.cert_id;
        let now = SystemTime::now();
        let responder = |eku: bool, signer: (&rcgen::Certificate, &KeyPair)| {
            let key = KeyPair::generate().expect("key");
            let mut params = CertificateParams::new(Vec::<String>::new()).expect("params");
            params
                .distinguished_name
                .push(DnType::CommonName, "ocsp responder");
            if eku {
                params.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::OcspSigning];
            }
            let cert = params
                .signed_by(&key, signer.0, signer.1)
                .expect("responder");
            (Certificate::from_der(cert.der()).expect("parse"), key)
        };
        let body = data(id, CertStatus::good(), now, None);
        let (cert, key) = responder(true, (&p.ca, &p.ca_key));
        let ok = signed(&body, &key, Some(vec![cert]));
        check(&ok, id, p.ca.der(), now).expect("delegated responder");
        let (cert, key) = responder(false, (&p.ca, &p.ca_key));
        let no_eku = signed(&body, &key, Some(vec![cert]));
        assert!(matches!(
            check(&no_eku, id, p.ca.der(), now),
            Err(OcspError::Signature)
        ));
        let other_ca = pki();
        let (cert, key) = responder(true, (&other_ca.ca, &other_ca.ca_key));
        let foreign = signed(&body, &key, Some(vec![cert]));
        assert!(matches!(
            check(&foreign, id, p.ca.der(), now),
            Err(OcspError::Signature)
        ));
    }

    #[test]
    fn rfc3339_times() {
        assert_eq!(
            rfc3339(SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000)),
            "2023-11-14T22:13:20Z"
        );
    }
}
