//! The jump pod's image, and why it is that one.
//!
//! Order: an explicit image (`--image`, the target's `image`) is used as
//! given, with no registry call; else an explicit registry (`--registry`,
//! the target's `registry`): the newest version tag of its dbsnap image,
//! and a failure there is an error (the user asked for that registry);
//! else the app's own registry — the parent of the app container's image,
//! or of the value of the environment variable the target names in
//! `image_repository_env` (a plain `value` in the pod template, never a
//! Secret) — whose failure only falls back; else [`DEFAULT_IMAGE`].
//! Docker Hub is never searched for a dbsnap image unless named with
//! `--registry`.
//!
//! [`plan`] and [`decide`] are pure; [`resolve`] adds the one registry
//! lookup between them.

pub mod auth;
pub mod http;
pub mod reference;
pub mod registry;
pub mod version;

use serde_json::Value as Json;

use reference::{ImageRef, Registry};
use registry::{Found, RegistryError, RegistryOptions};

use crate::hint;
use crate::hint::{Hint, Setting};

/// The image a jump pod uses when nothing better is found: Debian-based
/// (glibc, so a copy of dbsnap runs in it) with PostgreSQL 18's client
/// tools and a shell.
pub const DEFAULT_IMAGE: &str = "postgres:18-bookworm";

/// The name of dbsnap's image in a registry, unless configured.
pub const DEFAULT_IMAGE_NAME: &str = "dbsnap";

/// A setting and where it was given (`--image`, `the target's image`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Given {
    pub value: String,
    pub from: String,
}

/// What the image is chosen from.
#[derive(Debug, Clone)]
pub struct ImageRequest {
    /// An explicit image: used as is.
    pub image: Option<Given>,
    /// An explicit registry (`HOST[:PORT][/PATH]`) to take dbsnap's image from.
    pub registry: Option<Given>,
    /// The image's name under a registry path (default [`DEFAULT_IMAGE_NAME`]).
    pub image_name: String,
    /// An environment variable of the app's container whose value is the
    /// app's image repository (instead of the container's image).
    pub repository_env: Option<String>,
    /// How to talk to the registry.
    pub options: RegistryOptions,
}

/// The image chosen and the reason, for the user.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Resolved {
    pub image: String,
    pub reason: String,
}

impl Resolved {
    /// `jump pod image IMAGE (REASON)`.
    pub fn line(&self) -> String {
        format!("jump pod image {} ({})", self.image, self.reason)
    }
}

/// Why no image could be chosen.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ImageError {
    /// A setting is malformed (a configuration error).
    #[error("{message}")]
    Setting { message: String, hint: Hint },
    /// The registry the user named failed.
    #[error("{message}")]
    Registry { message: String, hint: Hint },
}

/// A registry lookup to make, and what its outcome means.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lookup {
    pub registry: Registry,
    /// The repository of dbsnap's image in it.
    pub repository: String,
    /// How the registry was found, for the reason (`from --registry`).
    pub found: String,
    /// Whether a failure is an error (the user named the registry) rather
    /// than a fallback.
    pub strict: bool,
}

impl Lookup {
    fn image(&self) -> String {
        format!("{}/{}", self.registry.host, self.repository)
    }
}

/// The first step of the order: an image, or a registry to look in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Plan {
    Use(Resolved),
    Look(Lookup),
}

/// Decides, from the settings and the app's workload (JSON), what to use
/// or where to look. Only a malformed `--registry` is an error.
pub fn plan(request: &ImageRequest, workload: &Json, container: &str) -> Result<Plan, ImageError> {
    if let Some(image) = &request.image {
        return Ok(Plan::Use(Resolved {
            image: image.value.clone(),
            reason: format!("from {}", image.from),
        }));
    }
    if let Some(given) = &request.registry {
        let registry = Registry::parse(&given.value).map_err(|e| ImageError::Setting {
            message: format!("{} {}: {e}", given.from, given.value),
            hint: hint![
                "e.g. ",
                Setting::Registry,
                " registry.example.com:5000/team; plain HTTP is allowed by ",
                Setting::ForceInsecure
            ],
        })?;
        return Ok(Plan::Look(Lookup {
            repository: registry.repository(&request.image_name),
            registry,
            found: format!("from {}", given.from),
            strict: true,
        }));
    }
    let app = crate::jump::app_container(workload, container);
    let (text, origin) = match &request.repository_env {
        Some(var) => match plain_env(&app, var) {
            Some(value) => (value.clone(), format!("from ${var} = {value}")),
            None => {
                return Ok(fallback(format!(
                    "the app's container has no plain value for ${var}"
                )))
            }
        },
        None => match app["image"].as_str() {
            Some(image) => (image.to_string(), format!("from its image {image}")),
            None => return Ok(fallback("the app's container names no image".into())),
        },
    };
    let registry = match app_registry(&text) {
        Ok(r) if r.is_docker_hub() => {
            return Ok(fallback(format!(
                "the app's image is on Docker Hub ({origin})"
            )))
        }
        Ok(r) => r,
        Err(e) => return Ok(fallback(format!("cannot read the app's registry: {e}"))),
    };
    Ok(Plan::Look(Lookup {
        repository: registry.repository(&request.image_name),
        found: format!("in the app's registry {}, {origin}", registry.display()),
        registry,
        strict: false,
    }))
}

/// The registry and path an app's image (or image repository) sits in;
/// a bare host (`registry.example.com:5000`) is taken as the registry.
fn app_registry(text: &str) -> Result<Registry, String> {
    let text = text.trim();
    if !text.contains('/') && (text.contains('.') || text.contains(':')) && !text.contains('@') {
        if let Ok(r) = Registry::parse(text) {
            if r.host.contains('.') || r.host.starts_with("localhost") {
                return Ok(r);
            }
        }
    }
    ImageRef::parse(text).map(|r| r.parent())
}

/// A plain `value` of the container's `env` (never `valueFrom`).
fn plain_env(container: &Json, name: &str) -> Option<String> {
    container["env"]
        .as_array()?
        .iter()
        .find(|v| v["name"] == name)?
        .get("value")?
        .as_str()
        .map(String::from)
}

fn fallback(why: String) -> Plan {
    Plan::Use(Resolved {
        image: DEFAULT_IMAGE.into(),
        reason: format!("fallback: {why}"),
    })
}

/// What a lookup's outcome means: the image found, the fallback with the
/// failure as its reason, or (for a registry the user named) an error.
pub fn decide(
    lookup: &Lookup,
    outcome: Result<Found, RegistryError>,
) -> Result<Resolved, ImageError> {
    match outcome {
        Ok(found) => {
            let kind = if found.prerelease {
                "newest pre-release tag (there is no release tag)"
            } else {
                "newest version tag"
            };
            Ok(Resolved {
                image: format!("{}:{}", lookup.image(), found.tag),
                reason: format!("{kind} of {}, {}", lookup.image(), lookup.found),
            })
        }
        Err(e) if lookup.strict => Err(ImageError::Registry {
            message: format!(
                "cannot choose the jump pod image {}: {}: {e}",
                lookup.found,
                lookup.image()
            ),
            hint: e
                .hint()
                .then(hint!["; or name an image with ", Setting::Image]),
        }),
        Err(e) => Ok(Resolved {
            image: DEFAULT_IMAGE.into(),
            reason: format!("fallback: {}: {e}", lookup.image()),
        }),
    }
}

/// The jump pod's image for the app's `workload` (JSON) and its
/// `container`, and the reason.
pub async fn resolve(
    request: &ImageRequest,
    workload: &Json,
    container: &str,
) -> Result<Resolved, ImageError> {
    match plan(request, workload, container)? {
        Plan::Use(resolved) => Ok(resolved),
        Plan::Look(lookup) => {
            let outcome =
                registry::newest_semver_tag(&lookup.registry, &lookup.repository, &request.options)
                    .await;
            if let Err(e) = &outcome {
                tracing::info!(registry = %lookup.registry.display(), error = %e, "registry lookup failed");
            }
            decide(&lookup, outcome)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn request() -> ImageRequest {
        ImageRequest {
            image: None,
            registry: None,
            image_name: DEFAULT_IMAGE_NAME.into(),
            repository_env: None,
            options: RegistryOptions::default(),
        }
    }

    fn app(image: &str) -> Json {
        json!({"spec": {"template": {"spec": {"containers": [
            {"name": "sidecar", "image": "docker.io/envoyproxy/envoy:v1"},
            {"name": "api", "image": image, "env": [
                {"name": "FORGE_API_IMAGE_REPOSITORY", "value": "registry.example.com/forge/api"},
                {"name": "FROM_SECRET", "valueFrom": {"secretKeyRef": {"name": "s", "key": "k"}}}
            ]}
        ]}}}})
    }

    fn given(value: &str, from: &str) -> Option<Given> {
        Some(Given {
            value: value.into(),
            from: from.into(),
        })
    }

    fn look(p: Plan) -> Lookup {
        match p {
            Plan::Look(l) => l,
            Plan::Use(r) => panic!("expected a lookup, got {r:?}"),
        }
    }

    fn used(p: Plan) -> Resolved {
        match p {
            Plan::Use(r) => r,
            Plan::Look(l) => panic!("expected an image, got {l:?}"),
        }
    }

    #[test]
    fn an_explicit_image_wins_without_a_registry_call() {
        let mut r = request();
        r.image = given("my/image:1", "--image");
        r.registry = given("registry.example.com", "--registry");
        let chosen =
            used(plan(&r, &app("registry.example.com/forge/core-api:2.1"), "api").unwrap());
        assert_eq!(chosen.line(), "jump pod image my/image:1 (from --image)");
    }

    #[test]
    fn an_explicit_registry_is_looked_in_and_its_failure_is_an_error() {
        let mut r = request();
        r.registry = given("registry.example.com:5000/team", "--registry");
        r.image_name = "tools/dbsnap".into();
        let l = look(plan(&r, &app("postgres:17"), "api").unwrap());
        assert_eq!(l.repository, "team/tools/dbsnap");
        assert!(l.strict);
        let chosen = decide(
            &l,
            Ok(Found {
                tag: "1.4.2".into(),
                prerelease: false,
                tags: 3,
            }),
        )
        .unwrap();
        assert_eq!(
            chosen.line(),
            "jump pod image registry.example.com:5000/team/tools/dbsnap:1.4.2 (newest version tag of registry.example.com:5000/team/tools/dbsnap, from --registry)"
        );
        let e = decide(
            &l,
            Err(RegistryError::NotTls {
                host: "registry.example.com:5000".into(),
            }),
        )
        .unwrap_err();
        let ImageError::Registry { message, hint } = e else {
            panic!("{e:?}")
        };
        assert!(message.contains("from --registry"), "{message}");
        assert!(
            hint.settings().eq([Setting::ForceInsecure, Setting::Image]),
            "{hint}"
        );

        r.registry = given("https://registry.example.com", "the target's registry");
        assert!(matches!(
            plan(&r, &app("x"), "api"),
            Err(ImageError::Setting { .. })
        ));
    }

    #[test]
    fn the_apps_registry_is_tried_and_its_failure_falls_back() {
        let r = request();
        let l = look(plan(&r, &app("registry.example.com/forge/core-api:2.1"), "api").unwrap());
        assert_eq!(l.registry.display(), "registry.example.com/forge");
        assert_eq!(l.repository, "forge/dbsnap");
        assert!(!l.strict);
        let chosen = decide(
            &l,
            Ok(Found {
                tag: "1.0.0-rc1".into(),
                prerelease: true,
                tags: 1,
            }),
        )
        .unwrap();
        assert_eq!(
            chosen.line(),
            "jump pod image registry.example.com/forge/dbsnap:1.0.0-rc1 (newest pre-release tag (there is no release tag) of registry.example.com/forge/dbsnap, in the app's registry registry.example.com/forge, from its image registry.example.com/forge/core-api:2.1)"
        );
        let fell = decide(
            &l,
            Err(RegistryError::NotFound {
                host: "registry.example.com".into(),
                repository: "forge/dbsnap".into(),
            }),
        )
        .unwrap();
        assert_eq!(
            fell.line(),
            "jump pod image postgres:18-bookworm (fallback: registry.example.com/forge/dbsnap: registry.example.com has no repository forge/dbsnap (404))"
        );
    }

    #[test]
    fn the_repository_env_names_the_apps_registry_when_set() {
        let mut r = request();
        r.repository_env = Some("FORGE_API_IMAGE_REPOSITORY".into());
        let l = look(plan(&r, &app("mirror.local:5000/x/core-api:2"), "api").unwrap());
        assert_eq!(l.registry.display(), "registry.example.com/forge");
        assert!(
            l.found
                .contains("from $FORGE_API_IMAGE_REPOSITORY = registry.example.com/forge/api"),
            "{}",
            l.found
        );
        r.repository_env = Some("FROM_SECRET".into());
        let fell = used(plan(&r, &app("x"), "api").unwrap());
        assert_eq!(
            fell.reason,
            "fallback: the app's container has no plain value for $FROM_SECRET"
        );
    }

    #[test]
    fn docker_hub_apps_fall_back_without_a_lookup() {
        let fell = used(plan(&request(), &app("postgres:17"), "api").unwrap());
        assert_eq!(fell.image, DEFAULT_IMAGE);
        assert_eq!(
            fell.reason,
            "fallback: the app's image is on Docker Hub (from its image postgres:17)"
        );
        let fell = used(plan(&request(), &app("bad image"), "api").unwrap());
        assert!(
            fell.reason
                .starts_with("fallback: cannot read the app's registry"),
            "{}",
            fell.reason
        );
        let fell = used(plan(&request(), &json!({}), "api").unwrap());
        assert_eq!(fell.reason, "fallback: the app's container names no image");
    }

    #[test]
    fn a_bare_host_is_a_registry() {
        assert_eq!(
            app_registry("registry.example.com:5000").unwrap().display(),
            "registry.example.com:5000"
        );
        assert_eq!(
            app_registry("registry.example.com/forge/api")
                .unwrap()
                .display(),
            "registry.example.com/forge"
        );
        assert!(app_registry("postgres:17").unwrap().is_docker_hub());
    }
}
