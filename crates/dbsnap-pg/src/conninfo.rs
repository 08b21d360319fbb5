//! libpq-compatible connection settings.
//!
//! Parses `postgres://` URIs and `key=value` strings, then fills what is
//! missing the way libpq does: service file entries (`service`/`PGSERVICE`),
//! then `PG*` environment variables, then defaults; the password comes from
//! the string, `PGPASSWORD`, or the password file (`PGPASSFILE`,
//! `~/.pgpass`). This module never prints a password: [`ConnInfo`]'s `Debug`
//! and [`ConnInfo::display`] redact it.

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};

use thiserror::Error;

/// Keywords we accept, as libpq spells them.
const KEYWORDS: &[&str] = &[
    "host",
    "hostaddr",
    "port",
    "dbname",
    "user",
    "password",
    "passfile",
    "sslmode",
    "sslrootcert",
    "sslcert",
    "sslkey",
    "application_name",
    "fallback_application_name",
    "connect_timeout",
    "service",
    "options",
    "target_session_attrs",
    "channel_binding",
    "keepalives",
    "keepalives_idle",
    "client_encoding",
];

/// Environment variables libpq reads, by keyword.
const ENV: &[(&str, &str)] = &[
    ("host", "PGHOST"),
    ("hostaddr", "PGHOSTADDR"),
    ("port", "PGPORT"),
    ("dbname", "PGDATABASE"),
    ("user", "PGUSER"),
    ("password", "PGPASSWORD"),
    ("passfile", "PGPASSFILE"),
    ("sslmode", "PGSSLMODE"),
    ("sslrootcert", "PGSSLROOTCERT"),
    ("sslcert", "PGSSLCERT"),
    ("sslkey", "PGSSLKEY"),
    ("application_name", "PGAPPNAME"),
    ("connect_timeout", "PGCONNECT_TIMEOUT"),
    ("options", "PGOPTIONS"),
    ("target_session_attrs", "PGTARGETSESSIONATTRS"),
    ("channel_binding", "PGCHANNELBINDING"),
    ("client_encoding", "PGCLIENTENCODING"),
];

/// A connection string that could not be understood.
#[derive(Debug, Error)]
pub enum ConnInfoError {
    /// Syntax error in a URI or key=value string.
    #[error("invalid connection string: {0}\nhint: use postgres://user@host:port/dbname or 'host=... dbname=...'")]
    Syntax(String),
    /// A keyword libpq does not know.
    #[error("invalid connection option \"{0}\"\nhint: see the libpq documentation for connection keywords")]
    UnknownKeyword(String),
    /// A value out of range.
    #[error("invalid value for {key}: \"{value}\"{hint}")]
    BadValue {
        /// Keyword.
        key: String,
        /// Offending value.
        value: String,
        /// Extra hint text, starting with a newline.
        hint: String,
    },
    /// The named service is in no service file.
    #[error("definition of service \"{0}\" not found\nhint: define it in ~/.pg_service.conf or the file named by PGSERVICEFILE")]
    ServiceNotFound(String),
}

/// TLS modes, as libpq's `sslmode`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum SslMode {
    /// Never TLS.
    Disable,
    /// Plain first, TLS if the server insists.
    Allow,
    /// TLS if the server offers it.
    Prefer,
    /// TLS, certificate not checked (checked as verify-ca if a root cert exists).
    Require,
    /// TLS, certificate chain checked.
    VerifyCa,
    /// TLS, chain and host name checked.
    VerifyFull,
}

impl SslMode {
    fn parse(s: &str) -> Result<Self, ConnInfoError> {
        Ok(match s {
            "disable" => SslMode::Disable,
            "allow" => SslMode::Allow,
            "prefer" => SslMode::Prefer,
            "require" => SslMode::Require,
            "verify-ca" => SslMode::VerifyCa,
            "verify-full" => SslMode::VerifyFull,
            _ => {
                return Err(ConnInfoError::BadValue {
                    key: "sslmode".into(),
                    value: s.into(),
                    hint: "\nhint: one of disable, allow, prefer, require, verify-ca, verify-full"
                        .into(),
                })
            }
        })
    }

    /// libpq spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            SslMode::Disable => "disable",
            SslMode::Allow => "allow",
            SslMode::Prefer => "prefer",
            SslMode::Require => "require",
            SslMode::VerifyCa => "verify-ca",
            SslMode::VerifyFull => "verify-full",
        }
    }
}

/// Where the process gets its environment and home directory from; tests
/// substitute their own.
pub trait Env {
    /// An environment variable.
    fn var(&self, name: &str) -> Option<String>;
    /// The user's home directory.
    fn home(&self) -> Option<PathBuf> {
        self.var("HOME").map(PathBuf::from)
    }
}

/// The real process environment.
pub struct ProcessEnv;

impl Env for ProcessEnv {
    fn var(&self, name: &str) -> Option<String> {
        std::env::var(name).ok().filter(|v| !v.is_empty())
    }
}

impl Env for BTreeMap<String, String> {
    fn var(&self, name: &str) -> Option<String> {
        self.get(name).cloned()
    }
}

/// Fully resolved connection settings for one database.
#[derive(Clone, PartialEq, Eq)]
pub struct ConnInfo {
    /// Hosts: names, IP addresses, or absolute socket directories.
    pub hosts: Vec<String>,
    /// Optional numeric addresses, parallel to `hosts`.
    pub hostaddrs: Vec<String>,
    /// Ports, parallel to `hosts` (one port applies to all).
    pub ports: Vec<u16>,
    /// Database name.
    pub dbname: String,
    /// Role name.
    pub user: String,
    /// Password, if any source gave one. Never displayed.
    pub password: Option<String>,
    /// TLS mode.
    pub sslmode: SslMode,
    /// Root certificate file (or `system`).
    pub sslrootcert: Option<String>,
    /// Client certificate file.
    pub sslcert: Option<String>,
    /// Client key file.
    pub sslkey: Option<String>,
    /// application_name.
    pub application_name: Option<String>,
    /// Connect timeout, seconds (0: none).
    pub connect_timeout: Option<u64>,
    /// Server options (`-c name=value ...`).
    pub options: Option<String>,
    /// target_session_attrs as given.
    pub target_session_attrs: Option<String>,
    /// channel_binding as given.
    pub channel_binding: Option<String>,
}

impl fmt::Debug for ConnInfo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ConnInfo")
            .field("hosts", &self.hosts)
            .field("ports", &self.ports)
            .field("dbname", &self.dbname)
            .field("user", &self.user)
            .field("password", &self.password.as_ref().map(|_| "<redacted>"))
            .field("sslmode", &self.sslmode)
            .finish_non_exhaustive()
    }
}

impl ConnInfo {
    /// Parses `s` and resolves it against the process environment.
    pub fn resolve(s: &str) -> Result<ConnInfo, ConnInfoError> {
        Self::resolve_with(s, &ProcessEnv)
    }

    /// Parses `s` and resolves it against `env` as libpq would.
    pub fn resolve_with(s: &str, env: &dyn Env) -> Result<ConnInfo, ConnInfoError> {
        let mut params = parse(s)?;
        // Service file values fill what the string left unset.
        let service = params
            .get("service")
            .cloned()
            .or_else(|| env.var("PGSERVICE"));
        if let Some(service) = service {
            for (k, v) in lookup_service(&service, env)? {
                params.entry(k).or_insert(v);
            }
        }
        for (key, var) in ENV {
            if !params.contains_key(*key) {
                if let Some(v) = env.var(var) {
                    params.insert((*key).to_string(), v);
                }
            }
        }
        Self::from_params(params, env)
    }

    fn from_params(
        mut p: BTreeMap<String, String>,
        env: &dyn Env,
    ) -> Result<ConnInfo, ConnInfoError> {
        let split = |v: &str| {
            v.split(',')
                .map(|s| s.trim().to_string())
                .collect::<Vec<_>>()
        };
        let mut hosts = p.get("host").map(|h| split(h)).unwrap_or_default();
        let hostaddrs = p.get("hostaddr").map(|h| split(h)).unwrap_or_default();
        if hosts.is_empty() || hosts.iter().all(|h| h.is_empty()) {
            hosts = if hostaddrs.is_empty() {
                vec![default_socket_dir()]
            } else {
                vec![String::new(); hostaddrs.len()]
            };
        }
        let ports = match p.get("port") {
            Some(v) => split(v)
                .iter()
                .map(|s| {
                    if s.is_empty() {
                        return Ok(5432);
                    }
                    s.parse::<u16>().ok().filter(|p| *p > 0).ok_or_else(|| {
                        ConnInfoError::BadValue {
                            key: "port".into(),
                            value: s.clone(),
                            hint: String::new(),
                        }
                    })
                })
                .collect::<Result<Vec<_>, _>>()?,
            None => vec![5432],
        };
        if ports.len() != 1 && ports.len() != hosts.len() {
            return Err(ConnInfoError::Syntax(format!(
                "could not match {} port numbers to {} hosts",
                ports.len(),
                hosts.len()
            )));
        }
        let user = match p.remove("user") {
            Some(u) => u,
            None => env
                .var("USER")
                .or_else(|| env.var("LOGNAME"))
                .unwrap_or_else(|| "postgres".into()),
        };
        let dbname = p.remove("dbname").unwrap_or_else(|| user.clone());
        let sslmode = SslMode::parse(p.get("sslmode").map(String::as_str).unwrap_or("prefer"))?;
        let connect_timeout =
            match p.get("connect_timeout") {
                Some(v) => Some(v.trim().parse::<i64>().map(|t| t.max(0) as u64).map_err(
                    |_| ConnInfoError::BadValue {
                        key: "connect_timeout".into(),
                        value: v.clone(),
                        hint: String::new(),
                    },
                )?),
                None => None,
            };
        let mut info = ConnInfo {
            hosts,
            hostaddrs,
            ports,
            dbname,
            user,
            password: p.remove("password"),
            sslmode,
            sslrootcert: p.remove("sslrootcert"),
            sslcert: p.remove("sslcert"),
            sslkey: p.remove("sslkey"),
            application_name: p
                .remove("application_name")
                .or_else(|| p.remove("fallback_application_name")),
            connect_timeout,
            options: p.remove("options"),
            target_session_attrs: p.remove("target_session_attrs"),
            channel_binding: p.remove("channel_binding"),
        };
        if info.password.is_none() {
            let passfile = p
                .remove("passfile")
                .map(PathBuf::from)
                .or_else(|| env.home().map(|h| h.join(".pgpass")));
            if let Some(file) = passfile {
                info.password = password_from_file(&file, &info);
            }
        }
        Ok(info)
    }

    /// Port for host number `i`.
    pub fn port(&self, i: usize) -> u16 {
        *self.ports.get(i).unwrap_or(&self.ports[0])
    }

    /// `host:port` (comma separated for several hosts): the server, without
    /// user or database.
    pub fn server(&self) -> String {
        self.hosts
            .iter()
            .enumerate()
            .map(|(i, h)| format!("{h}:{}", self.port(i)))
            .collect::<Vec<_>>()
            .join(",")
    }

    /// `user@host:port/dbname`, safe to print (no password).
    pub fn display(&self) -> String {
        let hosts: Vec<String> = self
            .hosts
            .iter()
            .enumerate()
            .map(|(i, h)| {
                let h = if h.is_empty() {
                    self.hostaddrs.get(i).cloned().unwrap_or_default()
                } else {
                    h.clone()
                };
                format!("{h}:{}", self.port(i))
            })
            .collect();
        format!("{}@{}/{}", self.user, hosts.join(","), self.dbname)
    }

    /// A libpq `key=value` string for child programs (pg_dump), without the
    /// password: that goes through a password file, never through argv.
    pub fn to_libpq_string_without_password(&self) -> String {
        let mut parts = Vec::new();
        let mut push = |k: &str, v: &str| parts.push(format!("{k}={}", quote_value(v)));
        push("host", &self.hosts.join(","));
        if !self.hostaddrs.is_empty() {
            push("hostaddr", &self.hostaddrs.join(","));
        }
        push(
            "port",
            &self
                .ports
                .iter()
                .map(u16::to_string)
                .collect::<Vec<_>>()
                .join(","),
        );
        push("dbname", &self.dbname);
        push("user", &self.user);
        push("sslmode", self.sslmode.as_str());
        for (k, v) in [
            ("sslrootcert", &self.sslrootcert),
            ("sslcert", &self.sslcert),
            ("sslkey", &self.sslkey),
            ("application_name", &self.application_name),
            ("options", &self.options),
            ("target_session_attrs", &self.target_session_attrs),
            ("channel_binding", &self.channel_binding),
        ] {
            if let Some(v) = v {
                push(k, v);
            }
        }
        if let Some(t) = self.connect_timeout {
            push("connect_timeout", &t.to_string());
        }
        parts.join(" ")
    }

    /// The same settings for another database on the same server.
    pub fn with_dbname(&self, dbname: &str) -> ConnInfo {
        ConnInfo {
            dbname: dbname.to_string(),
            ..self.clone()
        }
    }

    /// True if every host is a Unix socket directory.
    pub fn is_unix_socket(&self, i: usize) -> bool {
        self.hosts
            .get(i)
            .is_some_and(|h| h.starts_with('/') || h.starts_with('@'))
            && self.hostaddrs.get(i).is_none_or(|a| a.is_empty())
    }
}

fn default_socket_dir() -> String {
    // Debian and most distributions build libpq with this directory; upstream uses /tmp.
    if Path::new("/var/run/postgresql").is_dir() {
        "/var/run/postgresql".into()
    } else {
        "/tmp".into()
    }
}

fn quote_value(v: &str) -> String {
    if !v.is_empty() && !v.contains([' ', '\'', '\\', '\t', '\n']) {
        return v.to_string();
    }
    let mut s = String::from("'");
    for c in v.chars() {
        if c == '\'' || c == '\\' {
            s.push('\\');
        }
        s.push(c);
    }
    s.push('\'');
    s
}

/// Parses a URI or key=value connection string into raw keyword values.
pub fn parse(s: &str) -> Result<BTreeMap<String, String>, ConnInfoError> {
    let t = s.trim();
    if t.starts_with("postgres://") || t.starts_with("postgresql://") {
        parse_uri(t)
    } else if !t.contains('=') && !t.is_empty() {
        // A bare word is a database name, as psql and pg_dump accept.
        Ok(BTreeMap::from([("dbname".to_string(), t.to_string())]))
    } else {
        parse_kv(t)
    }
}

fn check_keyword(k: &str) -> Result<(), ConnInfoError> {
    if KEYWORDS.contains(&k) {
        Ok(())
    } else {
        Err(ConnInfoError::UnknownKeyword(k.to_string()))
    }
}

fn parse_kv(s: &str) -> Result<BTreeMap<String, String>, ConnInfoError> {
    let mut out = BTreeMap::new();
    let mut chars = s.chars().peekable();
    loop {
        while chars.peek().is_some_and(|c| c.is_whitespace()) {
            chars.next();
        }
        if chars.peek().is_none() {
            break;
        }
        let mut key = String::new();
        while let Some(&c) = chars.peek() {
            if c == '=' || c.is_whitespace() {
                break;
            }
            key.push(c);
            chars.next();
        }
        while chars.peek().is_some_and(|c| c.is_whitespace()) {
            chars.next();
        }
        if chars.next() != Some('=') {
            return Err(ConnInfoError::Syntax(format!(
                "missing \"=\" after \"{key}\""
            )));
        }
        while chars.peek().is_some_and(|c| c.is_whitespace()) {
            chars.next();
        }
        let mut value = String::new();
        if chars.peek() == Some(&'\'') {
            chars.next();
            let mut closed = false;
            while let Some(c) = chars.next() {
                match c {
                    '\\' => value.extend(chars.next()),
                    '\'' => {
                        closed = true;
                        break;
                    }
                    c => value.push(c),
                }
            }
            if !closed {
                return Err(ConnInfoError::Syntax("unterminated quoted string".into()));
            }
        } else {
            while let Some(&c) = chars.peek() {
                if c.is_whitespace() {
                    break;
                }
                chars.next();
                if c == '\\' {
                    value.extend(chars.next());
                } else {
                    value.push(c);
                }
            }
        }
        check_keyword(&key)?;
        out.insert(key, value);
    }
    Ok(out)
}

fn decode(s: &str) -> Result<String, ConnInfoError> {
    percent_encoding::percent_decode_str(s)
        .decode_utf8()
        .map(|c| c.into_owned())
        .map_err(|_| ConnInfoError::Syntax("invalid percent-encoded UTF-8".into()))
}

fn parse_uri(s: &str) -> Result<BTreeMap<String, String>, ConnInfoError> {
    let mut out = BTreeMap::new();
    let rest = s.split_once("://").map(|x| x.1).unwrap_or_default();
    let (rest, query) = match rest.split_once('?') {
        Some((a, b)) => (a, Some(b)),
        None => (rest, None),
    };
    let (authority, path) = match rest.find('/') {
        Some(i) => (&rest[..i], Some(&rest[i + 1..])),
        None => (rest, None),
    };
    let hostpart = match authority.rfind('@') {
        Some(i) => {
            let userinfo = &authority[..i];
            match userinfo.split_once(':') {
                Some((u, p)) => {
                    if !u.is_empty() {
                        out.insert("user".into(), decode(u)?);
                    }
                    out.insert("password".into(), decode(p)?);
                }
                None if !userinfo.is_empty() => {
                    out.insert("user".into(), decode(userinfo)?);
                }
                None => {}
            }
            &authority[i + 1..]
        }
        None => authority,
    };
    if !hostpart.is_empty() {
        let mut hosts = Vec::new();
        let mut ports = Vec::new();
        for hp in hostpart.split(',') {
            let (h, p) = if let Some(stripped) = hp.strip_prefix('[') {
                let end = stripped.find(']').ok_or_else(|| {
                    ConnInfoError::Syntax(format!("unterminated IPv6 address in \"{hp}\""))
                })?;
                let after = &stripped[end + 1..];
                (
                    stripped[..end].to_string(),
                    after.strip_prefix(':').unwrap_or(""),
                )
            } else {
                match hp.rsplit_once(':') {
                    Some((h, p)) => (decode(h)?, p),
                    None => (decode(hp)?, ""),
                }
            };
            hosts.push(h);
            ports.push(p.to_string());
        }
        out.insert("host".into(), hosts.join(","));
        if ports.iter().any(|p| !p.is_empty()) {
            out.insert("port".into(), ports.join(","));
        }
    }
    if let Some(path) = path.filter(|p| !p.is_empty()) {
        out.insert("dbname".into(), decode(path)?);
    }
    if let Some(q) = query {
        for pair in q.split('&').filter(|p| !p.is_empty()) {
            let (k, v) = pair.split_once('=').ok_or_else(|| {
                ConnInfoError::Syntax(format!("missing \"=\" in URI parameter \"{pair}\""))
            })?;
            let k = decode(k)?;
            let k = if k == "ssl" && v == "true" {
                out.insert("sslmode".into(), "require".into());
                continue;
            } else {
                k
            };
            check_keyword(&k)?;
            out.insert(k, decode(v)?);
        }
    }
    Ok(out)
}

/// Entries of `service` from the service files, in libpq's search order.
fn lookup_service(service: &str, env: &dyn Env) -> Result<BTreeMap<String, String>, ConnInfoError> {
    let mut files = Vec::new();
    match env.var("PGSERVICEFILE") {
        Some(f) => files.push(PathBuf::from(f)),
        None => files.extend(env.home().map(|h| h.join(".pg_service.conf"))),
    }
    match env.var("PGSYSCONFDIR") {
        Some(d) => files.push(Path::new(&d).join("pg_service.conf")),
        None => files.push(PathBuf::from("/etc/postgresql-common/pg_service.conf")),
    }
    for file in files {
        let Ok(text) = std::fs::read_to_string(&file) else {
            continue;
        };
        let mut in_section = false;
        let mut found = false;
        let mut out = BTreeMap::new();
        for line in text.lines() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            if let Some(name) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
                if found && in_section {
                    break;
                }
                in_section = name == service;
                found |= in_section;
                continue;
            }
            if in_section {
                let (k, v) = line.split_once('=').ok_or_else(|| {
                    ConnInfoError::Syntax(format!(
                        "syntax error in service file \"{}\": {line}",
                        file.display()
                    ))
                })?;
                let k = k.trim();
                if k == "service" {
                    return Err(ConnInfoError::Syntax(format!(
                        "nested service specifications not supported in service file \"{}\"",
                        file.display()
                    )));
                }
                check_keyword(k)?;
                out.insert(k.to_string(), v.trim().to_string());
            }
        }
        if found {
            return Ok(out);
        }
    }
    Err(ConnInfoError::ServiceNotFound(service.to_string()))
}

/// The password for `info` from a libpq password file, if one matches.
/// Files readable by group or others are ignored, as libpq does.
fn password_from_file(file: &Path, info: &ConnInfo) -> Option<String> {
    use std::os::unix::fs::PermissionsExt;
    let meta = std::fs::metadata(file).ok()?;
    if !meta.is_file() {
        return None;
    }
    if meta.permissions().mode() & 0o077 != 0 {
        tracing::warn!(
            "password file \"{}\" has group or world access; permissions should be u=rw (0600) or less",
            file.display()
        );
        return None;
    }
    let text = std::fs::read_to_string(file).ok()?;
    let host = if info.is_unix_socket(0) {
        "localhost".to_string()
    } else if info.hosts[0].is_empty() {
        info.hostaddrs.first().cloned().unwrap_or_default()
    } else {
        info.hosts[0].clone()
    };
    let port = info.port(0).to_string();
    for line in text.lines() {
        if line.trim_start().starts_with('#') || line.trim().is_empty() {
            continue;
        }
        let fields = split_pgpass_line(line);
        if fields.len() < 5 {
            continue;
        }
        let m = |pat: &str, v: &str| pat == "*" || pat == v;
        if m(&fields[0], &host)
            && m(&fields[1], &port)
            && m(&fields[2], &info.dbname)
            && m(&fields[3], &info.user)
        {
            return Some(fields[4..].join(":"));
        }
    }
    None
}

fn split_pgpass_line(line: &str) -> Vec<String> {
    let mut fields = vec![String::new()];
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' => fields.last_mut().unwrap().extend(chars.next()),
            ':' if fields.len() < 5 => fields.push(String::new()),
            c => fields.last_mut().unwrap().push(c),
        }
    }
    fields
}

/// Escapes a value for a password-file field.
pub fn pgpass_escape(v: &str) -> String {
    v.replace('\\', "\\\\").replace(':', "\\:")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn uri_with_everything() {
        let e = env(&[("USER", "me")]);
        let c = ConnInfo::resolve_with(
            "postgresql://al%40ice:p%3Ass@db.example:6543/app%2Dcore?sslmode=verify-full&application_name=x",
            &e,
        )
        .unwrap();
        assert_eq!(c.user, "al@ice");
        assert_eq!(c.password.as_deref(), Some("p:ss"));
        assert_eq!(c.hosts, vec!["db.example"]);
        assert_eq!(c.ports, vec![6543]);
        assert_eq!(c.dbname, "app-core");
        assert_eq!(c.sslmode, SslMode::VerifyFull);
        assert_eq!(c.application_name.as_deref(), Some("x"));
        assert!(!format!("{c:?}").contains("p:ss"));
        assert!(!c.display().contains("p:ss"));
        assert!(!c.to_libpq_string_without_password().contains("p:ss"));
    }

    #[test]
    fn uri_ipv6_and_multi_host() {
        let c = ConnInfo::resolve_with("postgres://[::1]:5433,other/db", &env(&[])).unwrap();
        assert_eq!(c.hosts, vec!["::1", "other"]);
        assert_eq!(c.ports, vec![5433, 5432]);
    }

    #[test]
    fn kv_quoting_and_env_fallback() {
        let e = env(&[
            ("PGHOST", "h1"),
            ("PGPORT", "7777"),
            ("PGUSER", "u"),
            ("PGSSLMODE", "require"),
        ]);
        let c = ConnInfo::resolve_with(r"dbname='my \'db\'' password = 'a b\\c'", &e).unwrap();
        assert_eq!(c.dbname, "my 'db'");
        assert_eq!(c.password.as_deref(), Some(r"a b\c"));
        assert_eq!(c.hosts, vec!["h1"]);
        assert_eq!(c.ports, vec![7777]);
        assert_eq!(c.user, "u");
        assert_eq!(c.sslmode, SslMode::Require);
        // Round trip through the child-program form.
        let again =
            ConnInfo::resolve_with(&c.to_libpq_string_without_password(), &env(&[])).unwrap();
        assert_eq!(again.dbname, "my 'db'");
        assert_eq!(again.password, None);
    }

    #[test]
    fn explicit_beats_env_and_defaults_follow_user() {
        let e = env(&[("PGDATABASE", "envdb"), ("USER", "osuser")]);
        let c = ConnInfo::resolve_with("host=/tmp", &e).unwrap();
        assert_eq!(c.dbname, "envdb");
        assert_eq!(c.user, "osuser");
        let c = ConnInfo::resolve_with("host=/tmp", &env(&[("USER", "osuser")])).unwrap();
        assert_eq!(c.dbname, "osuser");
        assert!(c.is_unix_socket(0));
    }

    #[test]
    fn errors_name_the_problem() {
        let e = env(&[]);
        assert!(
            matches!(ConnInfo::resolve_with("hots=x", &e), Err(ConnInfoError::UnknownKeyword(k)) if k == "hots")
        );
        assert!(ConnInfo::resolve_with("sslmode=sometimes", &e)
            .unwrap_err()
            .to_string()
            .contains("verify-full"));
        assert!(ConnInfo::resolve_with("port=99999", &e).is_err());
        assert!(ConnInfo::resolve_with("dbname='x", &e).is_err());
    }

    #[test]
    fn pgpass_and_service_files() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let pass = dir.path().join("pgpass");
        std::fs::write(
            &pass,
            "# comment\nother:*:*:*:no\ndb1:5432:*:app:se\\:cret\n*:*:*:*:fallback\n",
        )
        .unwrap();
        std::fs::set_permissions(&pass, std::fs::Permissions::from_mode(0o600)).unwrap();
        let svc = dir.path().join("services");
        std::fs::write(
            &svc,
            "[other]\nhost=nope\n[mysvc]\nhost=db1\nuser=app\ndbname=core\n",
        )
        .unwrap();
        let e = env(&[
            ("PGPASSFILE", pass.to_str().unwrap()),
            ("PGSERVICEFILE", svc.to_str().unwrap()),
            ("PGHOST", "ignored-because-service-wins"),
        ]);
        let c = ConnInfo::resolve_with("service=mysvc", &e).unwrap();
        assert_eq!(
            (c.hosts[0].as_str(), c.user.as_str(), c.dbname.as_str()),
            ("db1", "app", "core")
        );
        assert_eq!(c.password.as_deref(), Some("se:cret"));
        let c = ConnInfo::resolve_with("host=zzz user=x", &e).unwrap();
        assert_eq!(c.password.as_deref(), Some("fallback"));
        // A world-readable file is ignored, as libpq does.
        std::fs::set_permissions(&pass, std::fs::Permissions::from_mode(0o644)).unwrap();
        let c = ConnInfo::resolve_with("host=zzz user=x", &e).unwrap();
        assert_eq!(c.password, None);
        let e2 = env(&[
            ("PGSERVICEFILE", svc.to_str().unwrap()),
            ("PGSYSCONFDIR", "/nonexistent"),
        ]);
        assert!(matches!(
            ConnInfo::resolve_with("service=missing", &e2),
            Err(ConnInfoError::ServiceNotFound(_))
        ));
    }

    #[test]
    fn pgpass_escaping_round_trips() {
        let line = format!("*:*:*:*:{}", pgpass_escape(r"a:b\c"));
        assert_eq!(split_pgpass_line(&line)[4], r"a:b\c");
    }
}
