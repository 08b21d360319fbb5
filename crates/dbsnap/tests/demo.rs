//! The README's first command runs `dbsnap demo`: it must work with no
//! server running beforehand, and clean up after itself.

mod common;

use common::{run, run_json, Home};

#[test]
fn demo_takes_lists_and_verifies_a_snapshot_then_cleans_up() {
    let home = Home::new();
    let (code, v, err) = run_json(home.dbsnap().args(["demo", "--rows", "2000"]));
    assert_eq!(code, 0, "{err}\n{v}");
    assert_eq!(v["verify"]["ok"], true);
    assert_eq!(v["create"]["consistency"]["consistent_cut"], true);
    let dbs: Vec<&str> = v["create"]["databases"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["name"].as_str().unwrap())
        .collect();
    assert_eq!(dbs, ["app-core", "app-backend"]);
    assert_eq!(
        v["create"]["databases"][0]["schema_version"],
        "20260301120000"
    );
    assert_eq!(v["list"].as_array().unwrap().len(), 1);
    assert_eq!(v["kept"], false);
    let dir = std::path::PathBuf::from(v["dir"].as_str().unwrap());
    assert!(
        !dir.exists(),
        "demo directory left behind: {}",
        dir.display()
    );

    // --keep keeps the server and the files, and says how to stop it.
    let keep_dir = home.path().join("kept");
    let (code, out, err) = run(home
        .dbsnap()
        .args(["demo", "--keep", "--rows", "100", "--dir"])
        .arg(&keep_dir));
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("stop the server with:"), "{out}");
    let stop = out
        .lines()
        .find_map(|l| l.strip_prefix("stop the server with: "))
        .unwrap()
        .to_string();
    assert!(
        std::fs::read_dir(keep_dir.join("snapshots"))
            .unwrap()
            .count()
            == 1
    );
    // Stop it as the server user (the demo ran it as postgres when root).
    let data = stop
        .split(" -D ")
        .nth(1)
        .unwrap()
        .trim_end_matches(" stop")
        .to_string();
    let pg_ctl = stop.split(" -D ").next().unwrap().to_string();
    let st = if nix::unistd::Uid::effective().is_root() {
        std::process::Command::new("runuser")
            .args(["-u", "postgres", "--"])
            .arg(&pg_ctl)
            .args(["-D", &data, "-m", "immediate", "stop"])
            .status()
    } else {
        std::process::Command::new(&pg_ctl)
            .args(["-D", &data, "-m", "immediate", "stop"])
            .status()
    };
    assert!(st.unwrap().success());
}
