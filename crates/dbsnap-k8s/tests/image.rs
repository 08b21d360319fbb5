//! The jump pod image's registry lookup against a real registry (Debian's
//! `docker-registry`, distribution 2.8): version tags over several pages,
//! basic and bearer-token authentication with the logins `docker login`
//! leaves, TLS trust, and `--force-insecure` for an untrusted certificate
//! or a plain HTTP registry.
//!
//! Distribution 2.8 ignores `?n=` and always returns every tag in one
//! answer, so paging is tested against a small responder here that pages
//! as the OCI distribution spec says (`n`, `last`, a relative `Link`).

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use dbsnap_k8s::hint::Setting;
use dbsnap_k8s::image::reference::Registry as RegistryRef;
use dbsnap_k8s::image::registry::{newest_semver_tag, Found, RegistryError, RegistryOptions};
use dbsnap_test_support::registry::{Auth, Registry, PASSWORD, USER};

const TAGS: &[&str] = &[
    "1.2.0",
    "1.10.0",
    "1.9.3",
    "latest",
    "v1.10.1-rc1",
    "main-abc",
];

/// Options whose environment holds only `vars` (no real login or CA leaks in).
fn options(vars: &[(&str, &Path)]) -> RegistryOptions {
    let env: HashMap<String, String> = vars
        .iter()
        .map(|(k, v)| (k.to_string(), v.display().to_string()))
        .collect();
    RegistryOptions {
        env: Arc::new(move |name| env.get(name).cloned()),
        ..RegistryOptions::default()
    }
}

async fn newest(
    registry: &Registry,
    repository: &str,
    options: &RegistryOptions,
) -> Result<Found, RegistryError> {
    let r = RegistryRef::parse(registry.host()).unwrap();
    newest_semver_tag(&r, repository, options).await
}

/// A registry of `auth` with `tags` of `repository`, and options that
/// trust its CA and read logins from an empty `DOCKER_CONFIG` directory
/// (returned, with the temporary directory holding it).
fn with_logins(
    auth: Auth,
    repository: &str,
    tags: &[&str],
) -> (Registry, RegistryOptions, PathBuf, tempfile::TempDir) {
    let registry = Registry::builder()
        .auth(auth)
        .tags(repository, tags)
        .start();
    let home = tempfile::tempdir().unwrap();
    let docker = home.path().join("docker");
    let o = options(&[
        ("SSL_CERT_FILE", registry.ca_file()),
        ("DOCKER_CONFIG", &docker),
    ]);
    (registry, o, docker, home)
}

#[tokio::test]
async fn the_newest_version_tag_is_found_with_a_basic_login() {
    let (registry, o, docker, _home) = with_logins(Auth::Basic, "team/dbsnap", TAGS);
    registry.write_docker_config(&docker, USER, PASSWORD);
    let found = newest(&registry, "team/dbsnap", &o).await.unwrap();
    assert_eq!(
        found,
        Found {
            tag: "1.10.0".into(),
            prerelease: false,
            tags: TAGS.len()
        }
    );
}

#[tokio::test]
async fn a_missing_or_wrong_login_is_named_without_the_password() {
    let (registry, o, docker, _home) = with_logins(Auth::Basic, "dbsnap", &["1.0.0"]);
    let e = newest(&registry, "dbsnap", &o).await.unwrap_err();
    assert_eq!(
        e.to_string(),
        format!(
            "{} wants a login for dbsnap and none was found",
            registry.host()
        )
    );
    assert!(
        e.hint().to_string().contains("docker login"),
        "{}",
        e.hint()
    );

    registry.write_docker_config(&docker, USER, "Not-The-Password-1");
    let e = newest(&registry, "dbsnap", &o).await.unwrap_err();
    let text = format!("{e}\n{}", e.hint());
    assert!(
        text.contains(&format!(
            "refused the login from {}",
            docker.join("config.json").display()
        )),
        "{text}"
    );
    assert!(
        !text.contains("Not-The-Password-1") && !text.contains(USER),
        "{text}"
    );

    registry.write_docker_config(&docker, USER, PASSWORD);
    assert_eq!(newest(&registry, "dbsnap", &o).await.unwrap().tag, "1.0.0");
}

#[tokio::test]
async fn bearer_tokens_come_from_the_registrys_token_service() {
    let (registry, o, docker, _home) =
        with_logins(Auth::Token, "forge/dbsnap", &["2.0.0", "2.1.0-rc1"]);

    // Anonymous: the token grants nothing, the registry still says 401.
    let e = newest(&registry, "forge/dbsnap", &o).await.unwrap_err();
    assert!(
        matches!(e, RegistryError::NoLogin { .. }),
        "{e:?}\n{}",
        registry.log()
    );
    assert_eq!(registry.token_requests(), (1, 0));

    registry.write_docker_config(&docker, USER, PASSWORD);
    let found = newest(&registry, "forge/dbsnap", &o).await.unwrap();
    assert_eq!(found.tag, "2.0.0", "{}", registry.log());
    assert_eq!(registry.token_requests(), (2, 1));
}

#[tokio::test]
async fn an_untrusted_certificate_needs_force_insecure() {
    let registry = Registry::builder().tags("dbsnap", &["1.0.0"]).start();
    let other = tempfile::tempdir().unwrap();
    let empty = other.path().join("no-ca.pem");
    std::fs::write(&empty, "").unwrap();
    let mut o = options(&[("SSL_CERT_FILE", &empty)]);
    let e = newest(&registry, "dbsnap", &o).await.unwrap_err();
    assert!(matches!(e, RegistryError::Untrusted { .. }), "{e:?}");
    assert!(
        e.to_string().contains("TLS certificate is not accepted: its certificate is not signed by a trusted certificate authority"),
        "{e}"
    );
    assert!(
        e.hint().settings().eq([Setting::ForceInsecure]),
        "{}",
        e.hint()
    );

    o.force_insecure = true;
    assert_eq!(newest(&registry, "dbsnap", &o).await.unwrap().tag, "1.0.0");

    // Trusted through SSL_CERT_FILE, no flag needed.
    let o = options(&[("SSL_CERT_FILE", registry.ca_file())]);
    assert_eq!(newest(&registry, "dbsnap", &o).await.unwrap().tag, "1.0.0");
}

#[tokio::test]
async fn a_plain_http_registry_needs_force_insecure() {
    let registry = Registry::builder()
        .tls(false)
        .tags("dbsnap", &["0.9.0", "1.0.0-rc.1", "1.0.0-rc.2"])
        .start();
    let mut o = options(&[]);
    let e = newest(&registry, "dbsnap", &o).await.unwrap_err();
    assert_eq!(
        e.to_string(),
        format!(
            "{} does not speak TLS (a plain HTTP registry?)",
            registry.host()
        )
    );
    assert!(
        e.hint().settings().eq([Setting::ForceInsecure]),
        "{}",
        e.hint()
    );

    o.force_insecure = true;
    o.page_size = Some(1);
    let found = newest(&registry, "dbsnap", &o).await.unwrap();
    assert_eq!(found.tag, "0.9.0");
    assert!(!found.prerelease);
}

#[tokio::test]
async fn a_prerelease_is_chosen_only_when_there_is_no_release() {
    let registry = Registry::builder()
        .tls(false)
        .tags(
            "dbsnap",
            &["latest", "1.0.0-rc.1", "1.0.0-rc.10", "1.0.0-rc.2"],
        )
        .start();
    let mut o = options(&[]);
    o.force_insecure = true;
    let found = newest(&registry, "dbsnap", &o).await.unwrap();
    assert_eq!(
        (found.tag.as_str(), found.prerelease),
        ("1.0.0-rc.10", true)
    );
}

#[tokio::test]
async fn missing_repositories_tagless_ones_and_closed_ports_are_named() {
    let registry = Registry::builder()
        .tls(false)
        .tags("dbsnap", &["latest", "main-abc"])
        .start();
    let mut o = options(&[]);
    o.force_insecure = true;
    let e = newest(&registry, "forge/dbsnap", &o).await.unwrap_err();
    assert_eq!(
        e.to_string(),
        format!("{} has no repository forge/dbsnap (404)", registry.host())
    );
    let e = newest(&registry, "dbsnap", &o).await.unwrap_err();
    assert_eq!(
        e.to_string(),
        format!("{}/dbsnap has no version tag (of 2 tags)", registry.host())
    );

    let closed = format!("127.0.0.1:{}", dbsnap_test_support::free_port());
    let r = RegistryRef::parse(&closed).unwrap();
    let e = newest_semver_tag(&r, "dbsnap", &o).await.unwrap_err();
    assert!(
        e.to_string()
            .starts_with(&format!("cannot reach the registry: {closed}: ")),
        "{e}"
    );
}

/// Serves `/v2/dbsnap/tags/list` page by page (sorted tags, `n` and
/// `last` as the OCI spec has them, a relative `Link` to the next page);
/// returns its address and the paths asked for.
fn paging_responder(tags: Vec<String>) -> (String, Arc<std::sync::Mutex<Vec<String>>>) {
    use std::io::{BufRead, BufReader, Write};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let host = listener.local_addr().unwrap().to_string();
    let seen = Arc::new(std::sync::Mutex::new(Vec::new()));
    let log = seen.clone();
    std::thread::spawn(move || {
        let mut sorted = tags;
        sorted.sort();
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { return };
            let mut reader = BufReader::new(stream.try_clone().unwrap());
            let mut raw = Vec::new();
            let _ = reader.read_until(b'\n', &mut raw);
            let line = String::from_utf8_lossy(&raw).into_owned();
            if !line.starts_with("GET ") {
                continue; // a TLS ClientHello: hang up, as some servers do
            }
            while reader.read_line(&mut String::new()).unwrap_or(0) > 2 {}
            let path = line.split_whitespace().nth(1).unwrap_or("").to_string();
            log.lock().unwrap().push(path.clone());
            let param = |key: &str| {
                path.split_once('?').and_then(|(_, q)| {
                    q.split('&')
                        .find_map(|kv| kv.strip_prefix(&format!("{key}=")).map(String::from))
                })
            };
            let n: usize = param("n")
                .and_then(|n| n.parse().ok())
                .unwrap_or(usize::MAX);
            let rest: Vec<&String> = match param("last") {
                Some(last) => sorted.iter().filter(|t| **t > last).collect(),
                None => sorted.iter().collect(),
            };
            let page: Vec<&String> = rest.iter().take(n).copied().collect();
            let link = match page.last() {
                Some(last) if rest.len() > n => {
                    format!("Link: </v2/dbsnap/tags/list?last={last}&n={n}>; rel=\"next\"\r\n")
                }
                _ => String::new(),
            };
            let body = serde_json::json!({"name": "dbsnap", "tags": page}).to_string();
            let _ = write!(
                stream,
                "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n{link}Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            );
        }
    });
    (host, seen)
}

#[tokio::test]
async fn tags_are_read_page_by_page_following_the_link_header() {
    let tags: Vec<String> = (0..25)
        .map(|i| format!("1.{i}.0"))
        .chain(["latest".to_string(), "v1.24.1-rc1".to_string()])
        .collect();
    let (host, seen) = paging_responder(tags);
    let mut o = options(&[]);
    o.force_insecure = true;
    o.page_size = Some(10);
    let r = RegistryRef::parse(&host).unwrap();
    let found = newest_semver_tag(&r, "dbsnap", &o).await.unwrap();
    assert_eq!(
        found,
        Found {
            tag: "1.24.0".into(),
            prerelease: false,
            tags: 27
        }
    );
    let paths = seen.lock().unwrap().clone();
    let pages: Vec<&String> = paths
        .iter()
        .filter(|p| p.starts_with("/v2/dbsnap/tags/list"))
        .collect();
    assert_eq!(pages.len(), 3, "{paths:?}");
    assert_eq!(pages[0], "/v2/dbsnap/tags/list?n=10");
}
