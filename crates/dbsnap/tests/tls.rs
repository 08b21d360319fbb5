//! libpq sslmode semantics over rustls, end to end (dbsnap's own
//! connections and pg_dump's): a server that accepts only TLS, a CA-signed
//! certificate for "localhost", and every mode that should or should not
//! connect.

mod common;

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Command;

use common::{run_json, Home};
use dbsnap_test_support::{Cluster, SUPERUSER_PASSWORD};

fn openssl(dir: &Path, args: &[&str]) {
    let out = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()
        .expect("run openssl");
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A CA, a server certificate for DNS name `localhost` signed by it, and an unrelated CA.
fn make_certs(dir: &Path) {
    openssl(
        dir,
        &[
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "30",
            "-subj",
            "/CN=dbsnap test CA",
            "-keyout",
            "ca.key",
            "-out",
            "ca.crt",
        ],
    );
    openssl(
        dir,
        &[
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "30",
            "-subj",
            "/CN=other CA",
            "-keyout",
            "other.key",
            "-out",
            "other.crt",
        ],
    );
    openssl(
        dir,
        &[
            "req",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-subj",
            "/CN=localhost",
            "-keyout",
            "server.key",
            "-out",
            "server.csr",
        ],
    );
    std::fs::write(dir.join("ext.cnf"), "subjectAltName=DNS:localhost\nbasicConstraints=CA:FALSE\nkeyUsage=digitalSignature,keyEncipherment\nextendedKeyUsage=serverAuth\n").unwrap();
    openssl(
        dir,
        &[
            "x509",
            "-req",
            "-in",
            "server.csr",
            "-CA",
            "ca.crt",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-days",
            "30",
            "-extfile",
            "ext.cnf",
            "-out",
            "server.crt",
        ],
    );
}

#[test]
fn sslmodes_behave_like_libpq() {
    let certs = tempfile::tempdir().unwrap();
    std::fs::set_permissions(certs.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    make_certs(certs.path());
    let key = certs.path().join("server.key");
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600)).unwrap();
    if nix::unistd::Uid::effective().is_root() {
        let pg = nix::unistd::User::from_name("postgres")
            .unwrap()
            .expect("postgres user");
        std::os::unix::fs::chown(&key, Some(pg.uid.as_raw()), Some(pg.gid.as_raw())).unwrap();
    }
    let cluster = Cluster::start_with(
        15,
        &[
            "ssl = on",
            &format!(
                "ssl_cert_file = '{}'",
                certs.path().join("server.crt").display()
            ),
            &format!("ssl_key_file = '{}'", key.display()),
        ],
    );
    cluster.create_db("app");
    cluster.psql(
        "app",
        "CREATE TABLE t AS SELECT g FROM generate_series(1, 100) g",
    );
    // TLS only: plain connections are rejected by the server.
    cluster.set_hba(
        "hostssl all all 127.0.0.1/32 scram-sha-256\nhostnossl all all 127.0.0.1/32 reject\n",
    );
    let home = Home::new();
    let ca = certs.path().join("ca.crt");
    let other = certs.path().join("other.crt");
    let conn = |host: &str, mode: &str, root: Option<&Path>| {
        let mut s = format!("host={host} port={} user=postgres password={SUPERUSER_PASSWORD} dbname=app sslmode={mode}", cluster.port);
        if let Some(r) = root {
            s.push_str(&format!(" sslrootcert={}", r.display()));
        }
        s
    };
    let cases: Vec<(String, bool)> = vec![
        (conn("localhost", "disable", None), false),
        (conn("localhost", "allow", None), true),
        (conn("localhost", "prefer", None), true),
        (conn("localhost", "require", None), true),
        (conn("localhost", "verify-ca", Some(&ca)), true),
        (conn("localhost", "verify-ca", Some(&other)), false),
        (conn("127.0.0.1", "verify-ca", Some(&ca)), true),
        (conn("localhost", "verify-full", Some(&ca)), true),
        (conn("127.0.0.1", "verify-full", Some(&ca)), false),
        (conn("localhost", "verify-full", Some(&other)), false),
        // libpq: an explicit root certificate makes require check the chain.
        (conn("localhost", "require", Some(&other)), false),
    ];
    for (c, ok) in cases {
        let mut cmd = home.dbsnap();
        cmd.arg("create")
            .arg("--pg-bin")
            .arg(cluster.bin_dir())
            .arg("-d")
            .arg(&c);
        let (code, v, err) = run_json(&mut cmd);
        let shown = c.replace(SUPERUSER_PASSWORD, "***");
        if ok {
            assert_eq!(code, 0, "{shown} should connect: {err}");
            assert_eq!(v["ok"], true);
        } else {
            assert_ne!(code, 0, "{shown} should not connect");
            assert!([3, 4].contains(&code), "{shown}: exit {code}: {err}");
        }
    }
    // verify-ca without a root certificate is refused up front, with a hint.
    let mut cmd = home.dbsnap();
    cmd.env("HOME", home.path())
        .arg("create")
        .arg("-d")
        .arg(conn("localhost", "verify-ca", None));
    let (code, _, err) = run_json(&mut cmd);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("sslrootcert"), "{err}");
}
