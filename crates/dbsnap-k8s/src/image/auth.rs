//! Registry credentials and challenges: the `WWW-Authenticate` header of a
//! `401` (`Basic realm=...` or `Bearer realm=...,service=...,scope=...`),
//! and the logins that `docker login` and `podman login` leave in their
//! credential files.
//!
//! Files, first match wins: `$REGISTRY_AUTH_FILE`,
//! `$XDG_RUNTIME_DIR/containers/auth.json`,
//! `~/.config/containers/auth.json`, then `$DOCKER_CONFIG/config.json`
//! (default `~/.docker/config.json`). Credential helpers (`credsStore`,
//! `credHelpers`) are not run. A credential is never printed, logged or
//! put in an error: [`Credentials`]' `Debug` is redacted.

use std::path::{Path, PathBuf};

use base64::Engine;

/// A user name and password for a registry.
#[derive(Clone)]
pub struct Credentials {
    username: String,
    password: String,
    /// The file they came from (for messages).
    pub source: PathBuf,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Credentials(from {})", self.source.display())
    }
}

impl Credentials {
    /// The `Authorization` header value for HTTP basic authentication.
    pub fn basic(&self) -> String {
        let pair = format!("{}:{}", self.username, self.password);
        format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode(pair)
        )
    }
}

/// What a registry's `401` asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Challenge {
    /// HTTP basic authentication.
    Basic,
    /// A token from `realm` (the docker token protocol).
    Bearer {
        realm: String,
        service: Option<String>,
        scope: Option<String>,
    },
    /// Anything else (the header as sent).
    Other(String),
}

impl Challenge {
    /// Reads a `WWW-Authenticate` header value.
    pub fn parse(header: &str) -> Challenge {
        let header = header.trim();
        let (scheme, params) = header.split_once(' ').unwrap_or((header, ""));
        let params = auth_params(params);
        let get = |key: &str| {
            params
                .iter()
                .find(|(k, _)| k.eq_ignore_ascii_case(key))
                .map(|(_, v)| v.clone())
        };
        if scheme.eq_ignore_ascii_case("basic") {
            Challenge::Basic
        } else if let (true, Some(realm)) = (scheme.eq_ignore_ascii_case("bearer"), get("realm")) {
            Challenge::Bearer {
                realm,
                service: get("service"),
                scope: get("scope"),
            }
        } else {
            Challenge::Other(header.to_string())
        }
    }
}

/// `key=value` and `key="quoted, value"` pairs separated by commas.
fn auth_params(text: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut rest = text.trim();
    while let Some((key, after)) = rest.split_once('=') {
        let key = key.trim().trim_start_matches(',').trim().to_string();
        let after = after.trim_start();
        let (value, next) = if let Some(quoted) = after.strip_prefix('"') {
            let mut value = String::new();
            let mut chars = quoted.char_indices();
            let mut end = quoted.len();
            while let Some((i, c)) = chars.next() {
                match c {
                    '\\' => value.extend(chars.next().map(|(_, c)| c)),
                    '"' => {
                        end = i + 1;
                        break;
                    }
                    c => value.push(c),
                }
            }
            (value, &quoted[end..])
        } else {
            let end = after.find(',').unwrap_or(after.len());
            (after[..end].trim().to_string(), &after[end..])
        };
        out.push((key, value));
        rest = next.trim_start().trim_start_matches(',');
    }
    out
}

/// The credential files to look in, in order, given the environment.
pub fn credential_files(env: &dyn Fn(&str) -> Option<String>) -> Vec<PathBuf> {
    let var = |name: &str| env(name).filter(|v| !v.is_empty()).map(PathBuf::from);
    let home = var("HOME");
    let mut files = Vec::new();
    files.extend(var("REGISTRY_AUTH_FILE"));
    files.extend(var("XDG_RUNTIME_DIR").map(|d| d.join("containers/auth.json")));
    files.extend(
        home.as_ref()
            .map(|h| h.join(".config/containers/auth.json")),
    );
    match var("DOCKER_CONFIG") {
        Some(dir) => files.push(dir.join("config.json")),
        None => files.extend(home.map(|h| h.join(".docker/config.json"))),
    }
    files
}

/// The login for `host` (`HOST[:PORT]`) in the first file that has one.
/// A file that exists but cannot be read or parsed is an error naming it.
pub fn lookup(host: &str, files: &[PathBuf]) -> Result<Option<Credentials>, String> {
    for file in files {
        let text = match std::fs::read_to_string(file) {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => return Err(format!("cannot read {}: {e}", file.display())),
        };
        if let Some(found) = in_file(host, &text, file)? {
            return Ok(Some(found));
        }
    }
    Ok(None)
}

fn in_file(host: &str, text: &str, file: &Path) -> Result<Option<Credentials>, String> {
    let malformed = || format!("{} is not a valid credential file", file.display());
    let json: serde_json::Value = serde_json::from_str(text).map_err(|_| malformed())?;
    let Some(auths) = json.get("auths").and_then(|a| a.as_object()) else {
        return Ok(None);
    };
    let Some(entry) = auths
        .iter()
        .find(|(key, _)| same_registry(&key_host(key), host))
        .map(|(_, entry)| entry)
    else {
        return Ok(None);
    };
    let text_field = |name: &str| entry.get(name).and_then(|v| v.as_str()).unwrap_or("");
    let (username, password) = if !text_field("auth").is_empty() {
        let decoded = base64::engine::general_purpose::STANDARD
            .decode(text_field("auth").trim())
            .ok()
            .and_then(|bytes| String::from_utf8(bytes).ok())
            .ok_or_else(malformed)?;
        let (user, password) = decoded.split_once(':').ok_or_else(malformed)?;
        (user.to_string(), password.to_string())
    } else if !text_field("username").is_empty() {
        (
            text_field("username").to_string(),
            text_field("password").to_string(),
        )
    } else {
        return Ok(None);
    };
    Ok(Some(Credentials {
        username,
        password,
        source: file.to_path_buf(),
    }))
}

/// The host of a credential file's key (`https://host/v1/` -> `host`).
fn key_host(key: &str) -> String {
    let key = key.split_once("://").map_or(key, |(_, rest)| rest);
    key.split('/').next().unwrap_or(key).to_ascii_lowercase()
}

fn same_registry(a: &str, b: &str) -> bool {
    let hub = |h: &str| {
        matches!(
            h,
            "docker.io" | "index.docker.io" | "registry-1.docker.io" | "registry.hub.docker.com"
        )
    };
    a == b || (hub(a) && hub(b))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn challenges_are_read_from_www_authenticate() {
        assert_eq!(
            Challenge::parse("Basic realm=\"Registry Realm\""),
            Challenge::Basic
        );
        assert_eq!(
            Challenge::parse(
                "Bearer realm=\"https://auth.example.com/token\",service=\"registry.example.com\",scope=\"repository:forge/dbsnap:pull\""
            ),
            Challenge::Bearer {
                realm: "https://auth.example.com/token".into(),
                service: Some("registry.example.com".into()),
                scope: Some("repository:forge/dbsnap:pull".into()),
            }
        );
        assert_eq!(
            Challenge::parse("bearer realm=https://a/t, scope=\"repository:x:pull,push\""),
            Challenge::Bearer {
                realm: "https://a/t".into(),
                service: None,
                scope: Some("repository:x:pull,push".into()),
            }
        );
        assert!(matches!(Challenge::parse("Negotiate"), Challenge::Other(_)));
    }

    #[test]
    fn logins_come_from_the_first_file_that_has_the_host() {
        let dir = tempfile::tempdir().unwrap();
        let docker = dir.path().join("docker");
        std::fs::create_dir(&docker).unwrap();
        let auth = base64::engine::general_purpose::STANDARD.encode("ann:pw:with:colons");
        std::fs::write(
            docker.join("config.json"),
            format!(r#"{{"auths": {{"https://registry.example.com:5000/v1/": {{"auth": "{auth}"}}, "https://index.docker.io/v1/": {{"username": "hub", "password": "hubpw"}}}}}}"#),
        )
        .unwrap();
        let podman = dir.path().join("auth.json");
        std::fs::write(
            &podman,
            r#"{"auths": {"other.example.com": {"username": "bob", "password": "x"}}}"#,
        )
        .unwrap();
        let env = |name: &str| match name {
            "DOCKER_CONFIG" => Some(docker.display().to_string()),
            "REGISTRY_AUTH_FILE" => Some(podman.display().to_string()),
            _ => None,
        };
        let files = credential_files(&env);
        assert_eq!(files, vec![podman.clone(), docker.join("config.json")]);

        let found = lookup("registry.example.com:5000", &files)
            .unwrap()
            .unwrap();
        assert_eq!(
            found.basic(),
            format!(
                "Basic {}",
                base64::engine::general_purpose::STANDARD.encode("ann:pw:with:colons")
            )
        );
        assert!(!format!("{found:?}").contains("pw"), "{found:?}");
        assert_eq!(
            lookup("registry-1.docker.io", &files)
                .unwrap()
                .unwrap()
                .basic(),
            format!(
                "Basic {}",
                base64::engine::general_purpose::STANDARD.encode("hub:hubpw")
            )
        );
        assert_eq!(
            lookup("other.example.com", &files).unwrap().unwrap().source,
            podman
        );
        assert!(lookup("registry.example.com", &files).unwrap().is_none());

        std::fs::write(&podman, "{not json").unwrap();
        let e = lookup("x", &files).unwrap_err();
        assert!(
            e.contains("auth.json is not a valid credential file"),
            "{e}"
        );
    }
}
