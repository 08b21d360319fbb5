//! The in-cluster route: dbsnap runs in a pod of the cluster (a CronJob of
//! the Helm chart), so the app's database servers are reachable as they
//! are from the app: no jump pod, no tunnel. What discovery found in the
//! app's pod template says which databases; their secrets come from
//! dbsnap's own environment, under the names the app uses (the chart gives
//! the job those variables from the app's Secret, as the app gets them):
//!
//! - a URL variable (`DATABASE_URL`, `*_DB_URL`, ...): the whole URL, from
//!   dbsnap's variable of that name;
//! - a `POSTGRES_*`, `PG*` or `DB_*` group: host, port, database and role
//!   as discovered, the password from dbsnap's variable of the group's
//!   password name (`POSTGRES_PASSWORD`, ...).
//!
//! No Secret is read through the API.

use dbsnap_pg::{ConnInfo, PgError, Resolver};

use crate::cluster::K8sError;
use crate::discover::{
    connection_key, database_key, password_variable, Discovered, Discovery, Value,
};
use crate::route::Database;

/// The standard place of a pod's service account token.
pub const TOKEN_PATH: &str = "/var/run/secrets/kubernetes.io/serviceaccount/token";

/// Servers are told apart by address and role.
type ServerKey = (Vec<String>, Vec<u16>, String, String);

fn key(info: &ConnInfo) -> ServerKey {
    let ports = (0..info.hosts.len().max(1)).map(|i| info.port(i)).collect();
    (
        info.hosts.clone(),
        ports,
        info.user.clone(),
        info.dbname.clone(),
    )
}

/// Straight to the app's servers, the passwords from this process's
/// environment.
#[derive(Debug)]
pub struct DirectRoute {
    label: String,
    passwords: Vec<(ServerKey, String)>,
}

impl DirectRoute {
    /// The databases of `discovery`, with their settings from `env` (this
    /// process's environment); a variable the app's database needs and
    /// `env` lacks is an error naming it and where the app takes it from.
    pub fn open(
        discovery: &Discovery,
        label: &str,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<(DirectRoute, Vec<Database>), K8sError> {
        let mut route = DirectRoute {
            label: label.to_string(),
            passwords: Vec::new(),
        };
        // Each database's settings from this pod, or what it lacks; one the
        // app names twice (a URL and a group) needs only one of them.
        let settings: Vec<Result<ConnInfo, K8sError>> = discovery
            .databases
            .iter()
            .map(|d| own_settings(d, env))
            .collect();
        let reached: Vec<String> = settings.iter().flatten().map(connection_key).collect();
        let mut found: Vec<Database> = Vec::new();
        for (d, s) in discovery.databases.iter().zip(settings) {
            let info = match s {
                Ok(info) => info,
                Err(_) if database_key(d).is_some_and(|k| reached.contains(&k)) => continue,
                Err(e) => return Err(e),
            };
            let name = info.to_libpq_string_without_password();
            if found.iter().any(|f| f.name == name) {
                continue;
            }
            if let Some(p) = &info.password {
                route.passwords.push((key(&info), p.clone()));
            }
            found.push(Database {
                name,
                source: d.source.clone(),
                origins: d
                    .origins
                    .iter()
                    .map(|o| format!("{o}; in this pod: {}", own_variable(&d.source)))
                    .collect(),
            });
        }
        Ok((route, found))
    }
}

/// A discovered database's settings from this pod's environment `env`.
fn own_settings(
    d: &Discovered,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<ConnInfo, K8sError> {
    let Some(password_var) = password_variable(&d.source) else {
        // A URL variable: the whole URL is ours under its name.
        let Some(url) = env(&d.source) else {
            return Err(missing(
                &d.source,
                d.secret_url.as_ref().or(d.password.as_ref()),
            ));
        };
        if !(url.starts_with("postgres://") || url.starts_with("postgresql://")) {
            // Never echoed: it may hold the password.
            return Err(K8sError::new(
                format!(
                    "{} in dbsnap's environment is not a postgres:// or postgresql:// URL",
                    d.source
                ),
                "give the job the app's own value of it",
            ));
        }
        return here(&url, &d.source);
    };
    let connection = d.connection.as_deref().ok_or_else(|| {
        K8sError::new(
            format!("{}: the database's settings are not all known", d.source),
            "map the database in the target",
        )
    })?;
    let mut info = here(connection, &d.source)?;
    if let Some(where_) = &d.password {
        match env(password_var) {
            Some(p) => info.password = Some(p),
            None => return Err(missing(password_var, Some(where_))),
        }
    }
    Ok(info)
}

/// The variable of this pod a database's secret comes from.
fn own_variable(source: &str) -> String {
    password_variable(source).unwrap_or(source).to_string()
}

/// Connection settings from `s` (a value of this pod's environment),
/// libpq's environment aside for the password: the one `s` holds or the
/// app's password variable gives, never a `PGPASSWORD` meant for another
/// database. A parse error never quotes `s` (it may hold the password).
fn here(s: &str, source: &str) -> Result<ConnInfo, K8sError> {
    ConnInfo::resolve_with(s, &without_password_env()).map_err(|_| {
        K8sError::new(
            format!("{source} in dbsnap's environment is not a connection string dbsnap can read"),
            "give the job the app's own value of it",
        )
    })
}

/// This process's environment without libpq's password sources.
fn without_password_env() -> std::collections::BTreeMap<String, String> {
    std::env::vars()
        .filter(|(k, _)| k != "PGPASSWORD" && k != "PGPASSFILE")
        .collect()
}

fn missing(var: &str, from: Option<&Value>) -> K8sError {
    let whence = match from {
        Some(Value::Secret { name, key }) => {
            format!(" (the app takes it from Secret {name}, key {key})")
        }
        Some(Value::InSpec(v)) => format!(" (the app's pod template sets {v})"),
        _ => String::new(),
    };
    K8sError::new(
        format!(
            "dbsnap runs in the cluster and reaches the app's databases directly, but {var} is not in its environment{whence}"
        ),
        format!(
            "give the job {var} as the app has it (the Helm chart: app.env, e.g. valueFrom.secretKeyRef), \
             or run with --via jump to go through a jump pod instead"
        ),
    )
}

impl Resolver for DirectRoute {
    fn route(&self) -> &str {
        &self.label
    }

    /// Settings as libpq makes them here, with the password this pod's
    /// environment gave the database.
    fn resolve(&self, named: &str) -> Result<ConnInfo, PgError> {
        let mut info = ConnInfo::resolve(named).map_err(PgError::from)?;
        let k = key(&info);
        let server = |s: &ServerKey| (s.0.clone(), s.1.clone(), s.2.clone());
        // The route's own password first (libpq's PGPASSWORD may be meant
        // for another database); the same server and role lend theirs to
        // another database (a drill's scratch copy).
        if let Some((_, p)) = self
            .passwords
            .iter()
            .find(|(s, _)| *s == k)
            .or_else(|| self.passwords.iter().find(|(s, _)| server(s) == server(&k)))
        {
            info.password = Some(p.clone());
        }
        Ok(info)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn discovery(dbs: Vec<Discovered>) -> Discovery {
        Discovery {
            container: "api".into(),
            databases: dbs,
            notes: vec![],
        }
    }

    #[test]
    fn urls_and_passwords_come_from_this_pods_environment() {
        let d = discovery(vec![
            Discovered {
                source: "DATABASE_URL".into(),
                connection: None,
                password: None,
                origins: vec!["DATABASE_URL from secret app".into()],
                secret_url: Some(Value::Secret {
                    name: "app".into(),
                    key: "url".into(),
                }),
            },
            Discovered {
                source: "POSTGRES_*".into(),
                connection: Some("host=db.ns port=5433 dbname=crm user=crm".into()),
                password: Some(Value::Secret {
                    name: "crm".into(),
                    key: "pw".into(),
                }),
                origins: vec![],
                secret_url: None,
            },
        ]);
        let env = |name: &str| match name {
            "DATABASE_URL" => Some("postgres://core:s3cret@core-db:5432/core".to_string()),
            "POSTGRES_PASSWORD" => Some("crm-pw".to_string()),
            _ => None,
        };
        let (route, found) = DirectRoute::open(&d, "k8s-direct:ns/deploy/api", &env).unwrap();
        assert_eq!(found.len(), 2);
        assert!(!found[0].name.contains("s3cret"), "{}", found[0].name);
        let core = route.resolve(&found[0].name).unwrap();
        assert_eq!(core.password.as_deref(), Some("s3cret"));
        let crm = route.resolve(&found[1].name).unwrap();
        assert_eq!(crm.password.as_deref(), Some("crm-pw"));
        // A scratch database on the same server, as the same role.
        let scratch = route
            .resolve(
                &core
                    .with_dbname("__dbsnap_drill_x_0")
                    .to_libpq_string_without_password(),
            )
            .unwrap();
        assert_eq!(scratch.password.as_deref(), Some("s3cret"));
        assert_eq!(route.route(), "k8s-direct:ns/deploy/api");

        // Another scheme is refused without its value (it may hold the password).
        let odd = |name: &str| (name == "DATABASE_URL").then(|| "mysql://u:leak@h/db".to_string());
        let e = DirectRoute::open(&d, "x", &odd).unwrap_err();
        assert!(!e.message.contains("leak"), "{}", e.message);

        // A variable the pod lacks is named, with where the app takes it from.
        let e = DirectRoute::open(&d, "x", &|_| None).unwrap_err();
        assert!(
            e.message.contains("DATABASE_URL is not in its environment")
                && e.message.contains("Secret app, key url"),
            "{}",
            e.message
        );
    }
}
