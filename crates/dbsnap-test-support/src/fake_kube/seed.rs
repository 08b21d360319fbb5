//! The app a test meets in a cluster: a Deployment whose `DATABASE_URL` takes its password from a Secret.

use super::*;

/// The pieces of a `postgresql://user:password@host:port/db` URL.
pub(super) struct UrlParts {
    pub(super) user: String,
    pub(super) password: String,
    pub(super) host: String,
    pub(super) port: String,
    pub(super) database: String,
}

impl UrlParts {
    pub(super) fn parse(url: &str) -> UrlParts {
        let rest = url.split_once("://").map_or(url, |(_, rest)| rest);
        let rest = rest.split('?').next().unwrap_or(rest);
        let (authority, database) = rest.split_once('/').unwrap_or((rest, "postgres"));
        let (userinfo, hostport) = authority
            .rsplit_once('@')
            .unwrap_or(("postgres", authority));
        let (user, password) = userinfo.split_once(':').unwrap_or((userinfo, ""));
        let (host, port) = hostport.rsplit_once(':').unwrap_or((hostport, "5432"));
        UrlParts {
            user: user.into(),
            password: password.into(),
            host: host.into(),
            port: port.into(),
            database: database.into(),
        }
    }
}

pub(super) fn app_labels() -> Value {
    json!({"app": APP})
}

pub(super) fn app_secret(namespace: &str, parts: &UrlParts) -> Value {
    let encoded = base64::engine::general_purpose::STANDARD.encode(&parts.password);
    json!({
        "kind": "Secret", "apiVersion": "v1",
        "metadata": {"name": APP_SECRET, "namespace": namespace, "labels": app_labels()},
        "type": "Opaque",
        "data": {"password": encoded},
    })
}

pub(super) fn app_pod_template(parts: &UrlParts) -> Value {
    let plain = |name: &str, value: &str| json!({"name": name, "value": value});
    json!({
        "metadata": {"labels": app_labels()},
        "spec": {"containers": [{
            "name": APP,
            "image": "poolside/core-api:1.0",
            "env": [
                plain("DB_HOST", &parts.host),
                plain("DB_PORT", &parts.port),
                plain("DB_USER", &parts.user),
                plain("DB_NAME", &parts.database),
                {"name": "DB_PASSWORD", "valueFrom": {"secretKeyRef": {
                    "name": APP_SECRET, "key": "password"}}},
                plain(
                    "DATABASE_URL",
                    "postgresql://$(DB_USER):$(DB_PASSWORD)@$(DB_HOST):$(DB_PORT)/$(DB_NAME)",
                ),
                plain("LOG_LEVEL", "info"),
            ],
        }]},
    })
}

pub(super) fn app_deployment(namespace: &str, template: &Value) -> Value {
    json!({
        "kind": "Deployment", "apiVersion": "apps/v1",
        "metadata": {"name": APP, "namespace": namespace, "labels": app_labels()},
        "spec": {
            "replicas": 1,
            "selector": {"matchLabels": app_labels()},
            "template": template,
        },
    })
}

/// Labels of a seeded database's pods.
pub(super) fn database_labels(name: &str) -> Value {
    json!({"app": name, "app.kubernetes.io/name": "postgresql"})
}

/// A one-replica PostgreSQL StatefulSet, as a chart makes it.
pub(super) fn database_statefulset(name: &str) -> Value {
    json!({
        "metadata": {"name": name, "labels": database_labels(name)},
        "spec": {
            "replicas": 1,
            "serviceName": name,
            "selector": {"matchLabels": database_labels(name)},
            "template": {
                "metadata": {"labels": database_labels(name)},
                "spec": {"containers": [{
                    "name": "postgresql",
                    "image": "docker.io/library/postgres:17",
                    "ports": [{"name": "tcp-postgresql", "containerPort": DATABASE_PORT, "protocol": "TCP"}],
                }]},
            },
        },
    })
}

/// The Service in front of a seeded database.
pub(super) fn database_service(name: &str) -> Value {
    json!({
        "metadata": {"name": name, "labels": database_labels(name)},
        "spec": {
            "type": "ClusterIP",
            "clusterIP": "10.96.0.42",
            "selector": database_labels(name),
            "ports": [{"name": "tcp-postgresql", "port": DATABASE_PORT, "targetPort": "tcp-postgresql", "protocol": "TCP"}],
        },
    })
}

/// The port of a seeded database's container.
pub(super) const DATABASE_PORT: u16 = 5432;
