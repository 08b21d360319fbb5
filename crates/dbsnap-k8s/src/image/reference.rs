//! Registry and image references as people write them, parsed without any
//! I/O: `HOST[:PORT][/PATH]` for `--registry`, and image references such
//! as `registry.example.com:5000/team/core-api:1.2@sha256:...` or Docker
//! Hub's short names (`postgres:18` is `docker.io/library/postgres:18`).

/// Docker Hub's name in image references.
pub const DOCKER_HUB: &str = "docker.io";
/// The host that serves Docker Hub's distribution API.
const DOCKER_HUB_API: &str = "registry-1.docker.io";

/// A registry and a path in it, under which images are looked for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Registry {
    /// `HOST[:PORT]` as written (`docker.io` for Docker Hub).
    pub host: String,
    /// Path inside the registry, without leading or trailing `/` (may be
    /// empty).
    pub path: String,
}

impl Registry {
    /// Parses `HOST[:PORT][/PATH]` (a trailing `/` is allowed; a scheme is
    /// not: whether plain HTTP is allowed is a setting of its own).
    pub fn parse(text: &str) -> Result<Registry, String> {
        let text = text.trim().trim_end_matches('/');
        if text.contains("://") {
            return Err(format!(
                "\"{text}\" has a scheme; give HOST[:PORT][/PATH] without one"
            ));
        }
        let (host, path) = text.split_once('/').unwrap_or((text, ""));
        check_host(host)?;
        check_path(path, text)?;
        Ok(Registry {
            host: host.to_ascii_lowercase(),
            path: path.to_string(),
        })
    }

    /// Whether this is Docker Hub.
    pub fn is_docker_hub(&self) -> bool {
        is_docker_hub_host(&self.host)
    }

    /// The host whose distribution API serves this registry.
    pub fn api_host(&self) -> &str {
        if self.is_docker_hub() {
            DOCKER_HUB_API
        } else {
            &self.host
        }
    }

    /// The repository of image `name` under this registry's path (Docker
    /// Hub's official images live under `library/`).
    pub fn repository(&self, name: &str) -> String {
        match (
            self.path.as_str(),
            self.is_docker_hub() && !name.contains('/'),
        ) {
            ("", true) => format!("library/{name}"),
            ("", false) => name.to_string(),
            (path, _) => format!("{path}/{name}"),
        }
    }

    /// `HOST[/PATH]`, as a user would write it.
    pub fn display(&self) -> String {
        if self.path.is_empty() {
            self.host.clone()
        } else {
            format!("{}/{}", self.host, self.path)
        }
    }
}

/// An image reference, split into its parts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageRef {
    /// `HOST[:PORT]` (`docker.io` when the reference names none).
    pub host: String,
    /// The repository (`library/postgres` for Docker Hub's `postgres`).
    pub repository: String,
    /// The tag, if written.
    pub tag: Option<String>,
    /// The digest (`sha256:...`), if written.
    pub digest: Option<String>,
}

impl ImageRef {
    /// Parses an image reference the way container runtimes do: the first
    /// component is a registry host when it has a `.` or `:` or is
    /// `localhost`; otherwise the image is on Docker Hub.
    pub fn parse(text: &str) -> Result<ImageRef, String> {
        let text = text.trim();
        let (name, digest) = match text.split_once('@') {
            Some((name, digest)) if digest.contains(':') => (name, Some(digest.to_string())),
            Some(_) => return Err(format!("\"{text}\" has a malformed digest")),
            None => (text, None),
        };
        let last_slash = name.rfind('/').map_or(0, |i| i + 1);
        let (name, tag) = match name[last_slash..].rfind(':') {
            Some(i) => (
                &name[..last_slash + i],
                Some(name[last_slash + i + 1..].to_string()),
            ),
            None => (name, None),
        };
        if tag.as_deref().is_some_and(|t| !valid_tag(t)) {
            return Err(format!("\"{text}\" has a malformed tag"));
        }
        let (host, repository) = match name.split_once('/') {
            Some((first, rest)) if looks_like_host(first) => (first.to_ascii_lowercase(), rest),
            _ => (DOCKER_HUB.to_string(), name),
        };
        check_host(&host)?;
        check_path(repository, text)?;
        if repository.is_empty() {
            return Err(format!("\"{text}\" names no repository"));
        }
        let repository = if is_docker_hub_host(&host) && !repository.contains('/') {
            format!("library/{repository}")
        } else {
            repository.to_string()
        };
        Ok(ImageRef {
            host,
            repository,
            tag,
            digest,
        })
    }

    /// The registry and path the repository sits in
    /// (`registry.example.com/forge` for `registry.example.com/forge/api:2`).
    pub fn parent(&self) -> Registry {
        let path = self
            .repository
            .rsplit_once('/')
            .map_or("", |(parent, _)| parent);
        Registry {
            host: self.host.clone(),
            path: path.to_string(),
        }
    }
}

fn is_docker_hub_host(host: &str) -> bool {
    matches!(host, DOCKER_HUB | "index.docker.io" | DOCKER_HUB_API)
}

fn looks_like_host(component: &str) -> bool {
    component.contains('.') || component.contains(':') || component == "localhost"
}

fn check_host(host: &str) -> Result<(), String> {
    let (name, port) = match host.rsplit_once(':') {
        Some((name, port)) if !name.ends_with(':') => (name, Some(port)),
        _ => (host, None),
    };
    let name_ok = !name.is_empty()
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-.[]:".contains(c));
    let port_ok = port.is_none_or(|p| p.parse::<u16>().is_ok_and(|p| p > 0));
    if name_ok && port_ok {
        Ok(())
    } else {
        Err(format!("\"{host}\" is not a registry host (HOST[:PORT])"))
    }
}

fn check_path(path: &str, text: &str) -> Result<(), String> {
    let component_ok = |c: &str| {
        !c.is_empty()
            && c.chars()
                .all(|ch| ch.is_ascii_lowercase() || ch.is_ascii_digit() || "._-".contains(ch))
    };
    if path.is_empty() || path.split('/').all(component_ok) {
        Ok(())
    } else {
        Err(format!(
            "\"{text}\": repository paths are lower-case letters, digits and . _ - between slashes"
        ))
    }
}

fn valid_tag(tag: &str) -> bool {
    !tag.is_empty()
        && tag.len() <= 128
        && !tag.starts_with(['.', '-'])
        && tag
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "_.-".contains(c))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn image(text: &str) -> (String, String, Option<String>, Option<String>) {
        let r = ImageRef::parse(text).unwrap();
        (r.host, r.repository, r.tag, r.digest)
    }

    #[test]
    fn image_references_are_split_like_container_runtimes_do() {
        let digest = "sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";
        assert_eq!(
            image(&format!(
                "registry.example.com:5000/team/core-api:1.2@{digest}"
            )),
            (
                "registry.example.com:5000".into(),
                "team/core-api".into(),
                Some("1.2".into()),
                Some(digest.into())
            )
        );
        assert_eq!(
            image("postgres:18"),
            (
                "docker.io".into(),
                "library/postgres".into(),
                Some("18".into()),
                None
            )
        );
        assert_eq!(
            image("bitnami/postgresql"),
            ("docker.io".into(), "bitnami/postgresql".into(), None, None)
        );
        assert_eq!(
            image("localhost/app"),
            ("localhost".into(), "app".into(), None, None)
        );
        assert_eq!(
            image("127.0.0.1:5000/app:v2"),
            (
                "127.0.0.1:5000".into(),
                "app".into(),
                Some("v2".into()),
                None
            )
        );
        assert!(ImageRef::parse("registry.example.com/").is_err());
        assert!(ImageRef::parse("Registry.example.com/Team/app").is_err());
        assert!(ImageRef::parse("app:bad tag").is_err());
    }

    #[test]
    fn the_parent_of_an_image_is_where_dbsnap_looks_for_its_own() {
        let app = ImageRef::parse("registry.example.com/forge/core-api:2.1").unwrap();
        assert_eq!(app.parent().display(), "registry.example.com/forge");
        assert_eq!(
            app.parent().repository("dbsnap"),
            "forge/dbsnap".to_string()
        );
        let flat = ImageRef::parse("registry.example/core-api:1.0").unwrap();
        assert_eq!(flat.parent().display(), "registry.example");
        assert_eq!(flat.parent().repository("dbsnap"), "dbsnap");
        assert!(ImageRef::parse("postgres:17")
            .unwrap()
            .parent()
            .is_docker_hub());
    }

    #[test]
    fn registries_are_host_port_and_path() {
        let r = Registry::parse("registry.example.com:5000/team/tools/").unwrap();
        assert_eq!(r.host, "registry.example.com:5000");
        assert_eq!(r.path, "team/tools");
        assert_eq!(r.api_host(), "registry.example.com:5000");
        assert_eq!(r.repository("dbsnap"), "team/tools/dbsnap");
        let hub = Registry::parse("docker.io").unwrap();
        assert_eq!(hub.api_host(), "registry-1.docker.io");
        assert_eq!(hub.repository("dbsnap"), "library/dbsnap");
        assert!(Registry::parse("https://registry.example.com")
            .unwrap_err()
            .contains("has a scheme"));
        assert!(Registry::parse("registry.example.com:99999").is_err());
        assert!(Registry::parse("").is_err());
    }
}
