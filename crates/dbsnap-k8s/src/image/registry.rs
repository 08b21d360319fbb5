//! Reading a repository's tags from a registry's OCI distribution API
//! (`GET /v2/<repository>/tags/list`, paged by `?n=` and the `Link:
//! <...>; rel="next"` header) and picking the newest version tag.
//!
//! Authentication as container runtimes do it: anonymous first; on a
//! `401` the `WWW-Authenticate` challenge says how — `Basic` (the login
//! from the credential files) or `Bearer` (a token from the named realm,
//! asked for with that login if there is one, anonymously otherwise).
//! The whole lookup is bounded in time, so an unreachable registry never
//! hangs a run.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use hyper::{header, StatusCode};
use percent_encoding::{utf8_percent_encode, NON_ALPHANUMERIC};

use super::auth::{self, Challenge, Credentials};
use super::http::{HttpError, Response, Transport, Url};
use super::reference::Registry;
use super::version;
use crate::hint;
use crate::hint::{Hint, Setting};

/// Pages read at most (a guard against a registry whose `next` never ends).
const MAX_PAGES: usize = 10_000;

/// The environment a lookup reads (credential files, `SSL_CERT_FILE`).
pub type Env = Arc<dyn Fn(&str) -> Option<String> + Send + Sync>;

/// How to talk to a registry.
#[derive(Clone)]
pub struct RegistryOptions {
    /// `--force-insecure`: accept an unverified certificate, and plain
    /// HTTP when the registry does not speak TLS.
    pub force_insecure: bool,
    /// Tags asked for per page (`?n=`); `None` lets the registry choose.
    pub page_size: Option<u32>,
    /// Bound on the whole lookup (every page, the token, the retries).
    pub timeout: Duration,
    /// Bound on each connection (TCP and TLS handshake).
    pub connect_timeout: Duration,
    /// Environment variables (the process's, or a test's).
    pub env: Env,
}

impl Default for RegistryOptions {
    fn default() -> Self {
        RegistryOptions {
            force_insecure: false,
            page_size: None,
            timeout: Duration::from_secs(10),
            connect_timeout: Duration::from_secs(5),
            env: Arc::new(|name| std::env::var(name).ok()),
        }
    }
}

impl std::fmt::Debug for RegistryOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RegistryOptions")
            .field("force_insecure", &self.force_insecure)
            .field("page_size", &self.page_size)
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}

/// A registry lookup that failed. Messages name the host and repository,
/// never a credential.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RegistryError {
    #[error("cannot reach the registry: {detail}")]
    Unreachable { detail: String },
    #[error("{host} does not speak TLS (a plain HTTP registry?)")]
    NotTls { host: String },
    #[error("{host}'s TLS certificate is not accepted: {detail}")]
    Untrusted { host: String, detail: String },
    #[error("{host}'s TLS certificate is for {names}, not for {name}")]
    WrongName {
        host: String,
        name: String,
        names: String,
    },
    #[error("TLS with {host} failed: {detail}")]
    Tls { host: String, detail: String },
    #[error("{url} is plain HTTP")]
    PlainHttp { url: String },
    #[error("{host} wants a login for {repository} and none was found")]
    NoLogin { host: String, repository: String },
    #[error("{host} refused the login from {} for {repository}", file.display())]
    LoginRefused {
        host: String,
        repository: String,
        file: PathBuf,
    },
    #[error("{host} denies access to {repository} (403)")]
    Denied { host: String, repository: String },
    #[error("{host} has no repository {repository} (404)")]
    NotFound { host: String, repository: String },
    #[error("{host}/{repository} has no version tag (of {count} tags)")]
    NoVersionTag {
        host: String,
        repository: String,
        count: usize,
    },
    #[error("{host} did not answer within {} s", secs)]
    Timeout { host: String, secs: u64 },
    #[error("unexpected answer from {host}: {detail}")]
    Protocol { host: String, detail: String },
    #[error("{0}")]
    Credentials(String),
    #[error("the token service {realm} refused: {detail}")]
    Token { realm: String, detail: String },
}

impl RegistryError {
    /// What the user can do about it.
    pub fn hint(&self) -> Hint {
        const LOGIN_FILES: &str = "dbsnap reads the logins of docker login and podman login ($REGISTRY_AUTH_FILE, $XDG_RUNTIME_DIR/containers/auth.json, ~/.config/containers/auth.json, $DOCKER_CONFIG/config.json or ~/.docker/config.json)";
        match self {
            RegistryError::Unreachable { .. } | RegistryError::Timeout { .. } => {
                "check the registry's host and port, and that this machine reaches it".into()
            }
            RegistryError::NotTls { .. } | RegistryError::PlainHttp { .. } => {
                hint![Setting::ForceInsecure, " allows plain HTTP for this registry (the Kubernetes API stays verified)"]
            }
            RegistryError::Untrusted { host, .. } => hint![
                format!("add the registry's CA to SSL_CERT_FILE or /etc/docker/certs.d/{host}/ca.crt, or accept its certificate unverified with "),
                Setting::ForceInsecure
            ],
            RegistryError::WrongName { name, names, .. } => hint![
                format!("name the registry by a name its certificate holds ({names}), or reissue the certificate with {name} in its subjectAltName; "),
                Setting::ForceInsecure,
                " accepts it unverified"
            ],
            RegistryError::Tls { .. } => {
                hint!["check the registry's TLS setup; ", Setting::ForceInsecure, " accepts an unverified certificate, or plain HTTP"]
            }
            RegistryError::NoLogin { host, .. } => format!("log in first (docker login {host}); {LOGIN_FILES}").into(),
            RegistryError::LoginRefused { host, .. } => {
                format!("log in again (docker login {host}): the stored login is wrong or expired").into()
            }
            RegistryError::Denied { .. } => "ask for pull access to the repository".into(),
            RegistryError::NotFound { .. } | RegistryError::NoVersionTag { .. } => {
                hint!["push or mirror a dbsnap image there with a version tag (see docs/KUBERNETES.md), or name an image with ", Setting::Image]
            }
            RegistryError::Protocol { .. } => {
                "check that the address is a registry (OCI distribution API at /v2/)".into()
            }
            RegistryError::Credentials(_) => format!("fix or remove the file; {LOGIN_FILES}").into(),
            RegistryError::Token { .. } => "check the login for the registry (docker login)".into(),
        }
    }
}

/// The tag chosen and how many tags the repository has.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Found {
    /// The newest version tag.
    pub tag: String,
    /// Whether it is a pre-release (no release tag exists).
    pub prerelease: bool,
    /// Tags listed, all pages together.
    pub tags: usize,
}

/// The newest version tag of `repository` in `registry` (see
/// [`version::newest`] for what counts as a version).
pub async fn newest_semver_tag(
    registry: &Registry,
    repository: &str,
    options: &RegistryOptions,
) -> Result<Found, RegistryError> {
    let host = registry.api_host().to_string();
    let tags = tokio::time::timeout(options.timeout, list_tags(&host, repository, options))
        .await
        .map_err(|_| RegistryError::Timeout {
            host: host.clone(),
            secs: options.timeout.as_secs(),
        })??;
    let newest =
        version::newest(tags.iter().map(String::as_str)).ok_or(RegistryError::NoVersionTag {
            host,
            repository: repository.to_string(),
            count: tags.len(),
        })?;
    Ok(Found {
        tag: newest.tag,
        prerelease: newest.prerelease,
        tags: tags.len(),
    })
}

/// Every tag of `repository`, page after page.
pub async fn list_tags(
    host: &str,
    repository: &str,
    options: &RegistryOptions,
) -> Result<Vec<String>, RegistryError> {
    let mut session = Session {
        transport: Transport::new(
            host,
            options.force_insecure,
            options.connect_timeout,
            &*options.env,
        ),
        host,
        repository,
        options,
        authorization: None,
    };
    let mut url = Url {
        secure: true,
        host: host.to_string(),
        path: match options.page_size {
            Some(n) => format!("/v2/{repository}/tags/list?n={n}"),
            None => format!("/v2/{repository}/tags/list"),
        },
    };
    let mut tags = Vec::new();
    for _ in 0..MAX_PAGES {
        let response = session.get(&url).await?;
        let page: TagPage =
            serde_json::from_slice(&response.body).map_err(|e| RegistryError::Protocol {
                host: host.to_string(),
                detail: format!("the tag list is not JSON: {e}"),
            })?;
        tags.extend(page.tags.unwrap_or_default());
        let next = response
            .header(header::LINK)
            .and_then(next_link)
            .and_then(|next| url.join(&next));
        match next {
            Some(next) => url = next,
            None => return Ok(tags),
        }
    }
    Err(RegistryError::Protocol {
        host: host.to_string(),
        detail: format!("the tag list has more than {MAX_PAGES} pages"),
    })
}

#[derive(serde::Deserialize)]
struct TagPage {
    tags: Option<Vec<String>>,
}

/// The target of `Link: <...>; rel="next"`.
fn next_link(header: &str) -> Option<String> {
    header.split(',').find_map(|link| {
        let (target, params) = link.split_once(';')?;
        let is_next = params.split(';').any(|p| {
            let p = p.trim().replace(' ', "");
            p == "rel=\"next\"" || p == "rel=next"
        });
        let target = target.trim().strip_prefix('<')?.strip_suffix('>')?;
        is_next.then(|| target.to_string())
    })
}

/// Requests to one registry for one repository, authenticated once a
/// challenge asked for it.
struct Session<'a> {
    transport: Transport,
    host: &'a str,
    repository: &'a str,
    options: &'a RegistryOptions,
    authorization: Option<String>,
}

impl Session<'_> {
    /// `GET url`, answering one `401` challenge; any other status than
    /// `200` is an error.
    async fn get(&mut self, url: &Url) -> Result<Response, RegistryError> {
        let mut response = self.send(url, self.authorization.clone()).await?;
        let mut credentials = None;
        if response.status == StatusCode::UNAUTHORIZED && self.authorization.is_none() {
            let challenge =
                Challenge::parse(response.header(header::WWW_AUTHENTICATE).unwrap_or(""));
            credentials = self.credentials()?;
            self.authorization = Some(self.authorize(&challenge, credentials.as_ref()).await?);
            response = self.send(url, self.authorization.clone()).await?;
        }
        match response.status {
            StatusCode::OK => Ok(response),
            StatusCode::UNAUTHORIZED => Err(self.unauthorized(credentials.or(self.credentials()?))),
            StatusCode::FORBIDDEN => Err(RegistryError::Denied {
                host: self.host.to_string(),
                repository: self.repository.to_string(),
            }),
            StatusCode::NOT_FOUND => Err(RegistryError::NotFound {
                host: self.host.to_string(),
                repository: self.repository.to_string(),
            }),
            other => Err(RegistryError::Protocol {
                host: self.host.to_string(),
                detail: format!("{} answered {other}", url.path),
            }),
        }
    }

    async fn send(
        &self,
        url: &Url,
        authorization: Option<String>,
    ) -> Result<Response, RegistryError> {
        self.transport
            .get(url, authorization.as_deref())
            .await
            .map_err(|e| transport_error(e, url))
    }

    fn credentials(&self) -> Result<Option<Credentials>, RegistryError> {
        let files = auth::credential_files(&*self.options.env);
        auth::lookup(self.host, &files).map_err(RegistryError::Credentials)
    }

    fn unauthorized(&self, credentials: Option<Credentials>) -> RegistryError {
        match credentials {
            Some(c) => RegistryError::LoginRefused {
                host: self.host.to_string(),
                repository: self.repository.to_string(),
                file: c.source,
            },
            None => RegistryError::NoLogin {
                host: self.host.to_string(),
                repository: self.repository.to_string(),
            },
        }
    }

    /// The `Authorization` value the challenge asks for.
    async fn authorize(
        &self,
        challenge: &Challenge,
        credentials: Option<&Credentials>,
    ) -> Result<String, RegistryError> {
        match challenge {
            Challenge::Basic => credentials
                .map(Credentials::basic)
                .ok_or_else(|| self.unauthorized(None)),
            Challenge::Bearer {
                realm,
                service,
                scope,
            } => {
                let scope = scope
                    .clone()
                    .unwrap_or_else(|| format!("repository:{}:pull", self.repository));
                self.token(realm, service.as_deref(), &scope, credentials)
                    .await
                    .map(|t| format!("Bearer {t}"))
            }
            Challenge::Other(header) => Err(RegistryError::Protocol {
                host: self.host.to_string(),
                detail: format!("unsupported authentication \"{header}\""),
            }),
        }
    }

    /// A token from the realm (docker's token protocol).
    async fn token(
        &self,
        realm: &str,
        service: Option<&str>,
        scope: &str,
        credentials: Option<&Credentials>,
    ) -> Result<String, RegistryError> {
        let refused = |detail: String| RegistryError::Token {
            realm: realm.to_string(),
            detail,
        };
        let mut url = Url::parse(realm).ok_or_else(|| refused("not an http(s) URL".into()))?;
        let encode = |v: &str| utf8_percent_encode(v, NON_ALPHANUMERIC).to_string();
        let mut query = format!("scope={}", encode(scope));
        if let Some(service) = service {
            query = format!("service={}&{query}", encode(service));
        }
        url.path = format!(
            "{}{}{query}",
            url.path,
            if url.path.contains('?') { "&" } else { "?" }
        );
        let response = self.send(&url, credentials.map(Credentials::basic)).await?;
        if response.status == StatusCode::UNAUTHORIZED {
            return Err(self.unauthorized(credentials.cloned()));
        }
        if response.status != StatusCode::OK {
            return Err(refused(format!("answered {}", response.status)));
        }
        #[derive(serde::Deserialize)]
        struct Token {
            token: Option<String>,
            access_token: Option<String>,
        }
        let token: Token = serde_json::from_slice(&response.body)
            .map_err(|e| refused(format!("the answer is not a token: {e}")))?;
        token
            .token
            .or(token.access_token)
            .filter(|t| !t.is_empty())
            .ok_or_else(|| refused("the answer holds no token".into()))
    }
}

fn transport_error(e: HttpError, url: &Url) -> RegistryError {
    let host = url.host.clone();
    match e {
        HttpError::Connect(detail) => RegistryError::Unreachable { detail },
        HttpError::NotTls => RegistryError::NotTls { host },
        HttpError::Untrusted(detail) => RegistryError::Untrusted { host, detail },
        HttpError::WrongName(names) => RegistryError::WrongName {
            name: super::http::host_name(&url.host).to_string(),
            host,
            names: if names.is_empty() {
                "no host name".into()
            } else {
                names
                    .iter()
                    .map(|n| dbsnap_pg::connect::presented_name(n))
                    .collect::<Vec<_>>()
                    .join(", ")
            },
        },
        HttpError::Tls(detail) => RegistryError::Tls { host, detail },
        HttpError::PlainRefused => RegistryError::PlainHttp { url: url.display() },
        HttpError::Protocol(detail) => RegistryError::Protocol { host, detail },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_next_page_comes_from_the_link_header() {
        assert_eq!(
            next_link("</v2/forge/dbsnap/tags/list?last=1.2.0&n=2>; rel=\"next\""),
            Some("/v2/forge/dbsnap/tags/list?last=1.2.0&n=2".into())
        );
        assert_eq!(
            next_link("<https://r.example/v2/x/tags/list?last=a>; rel=\"prev\", <https://r.example/v2/x/tags/list?last=b>; rel=next"),
            Some("https://r.example/v2/x/tags/list?last=b".into())
        );
        assert_eq!(next_link("</x>; rel=\"prev\""), None);
    }

    #[test]
    fn errors_say_what_to_do() {
        let e = RegistryError::NotTls {
            host: "r.example:5000".into(),
        };
        assert!(e.hint().settings().eq([Setting::ForceInsecure]));
        let e = RegistryError::Untrusted {
            host: "r.example:5000".into(),
            detail: "UnknownIssuer".into(),
        };
        assert!(e
            .hint()
            .to_string()
            .contains("/etc/docker/certs.d/r.example:5000/ca.crt"));
        assert!(e.hint().settings().eq([Setting::ForceInsecure]));
    }
}
