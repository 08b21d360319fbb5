//! `fake-kube --kubeconfig FILE [--postgres URL]`: runs the fake Kubernetes
//! API server on its own, writes a kubeconfig for it, seeds the namespace
//! `poolside` with an app Deployment (`core-api`) whose `DATABASE_URL`
//! points at the given PostgreSQL with its password in a Secret, and serves
//! until killed — for pointing kubectl and dbsnap at it by hand.

use std::collections::BTreeMap;
use std::path::PathBuf;

use dbsnap_pg::ConnInfo;
use dbsnap_test_support::fake_kube::FakeKube;

fn main() {
    let mut args = std::env::args().skip(1);
    let (mut kubeconfig, mut postgres) = (None, None);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--kubeconfig" => kubeconfig = args.next().map(PathBuf::from),
            "--postgres" => postgres = args.next(),
            other => {
                eprintln!("fake-kube: unknown argument {other}\nusage: fake-kube --kubeconfig FILE [--postgres URL]");
                std::process::exit(2);
            }
        }
    }
    let Some(kubeconfig) = kubeconfig else {
        eprintln!("usage: fake-kube --kubeconfig FILE [--postgres URL]");
        std::process::exit(2);
    };
    let url = postgres.unwrap_or_else(|| "postgres://app:app@127.0.0.1:5432/core".into());
    let info = match ConnInfo::resolve_with(&url, &BTreeMap::<String, String>::new()) {
        Ok(i) => i,
        Err(e) => {
            eprintln!("fake-kube: --postgres {url}: {e}");
            std::process::exit(2);
        }
    };
    let kube = FakeKube::start();
    kube.seed_app(
        "poolside",
        info.hosts
            .first()
            .map(String::as_str)
            .unwrap_or("127.0.0.1"),
        info.port(0),
        &info.dbname,
        info.password.as_deref().unwrap_or_default(),
    );
    kube.write_kubeconfig(&kubeconfig, "poolside");
    println!("fake Kubernetes API at {}", kube.url);
    println!(
        "kubeconfig: {} (context fake, namespace poolside)",
        kubeconfig.display()
    );
    println!("seeded: deploy/core-api (2 replicas), secret/core-db (the password)");
    println!(
        "try: kubectl --kubeconfig {} get deploy",
        kubeconfig.display()
    );
    loop {
        std::thread::sleep(std::time::Duration::from_secs(3600));
    }
}
