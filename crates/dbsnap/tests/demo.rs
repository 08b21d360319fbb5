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
    // The kept platform can be snapshotted again with the printed command.
    let again = out
        .lines()
        .find_map(|l| l.strip_prefix("snapshot it again with: "))
        .unwrap()
        .to_string();
    let pgpass = again
        .split_whitespace()
        .next()
        .unwrap()
        .strip_prefix("PGPASSFILE=")
        .unwrap()
        .to_string();
    let config = again
        .split(" --config ")
        .nth(1)
        .unwrap()
        .split_whitespace()
        .next()
        .unwrap()
        .to_string();
    let (code, v, err) = run_json(
        home.dbsnap()
            .env("PGPASSFILE", &pgpass)
            .args(["--config", &config, "create", "--target", "demo"]),
    );
    assert_eq!(code, 0, "{err}");
    assert_eq!(v["databases"].as_array().unwrap().len(), 2);
    assert!(
        std::fs::read_dir(keep_dir.join("snapshots"))
            .unwrap()
            .count()
            == 2
    );
    // Stop it with the printed command.
    let st = std::process::Command::new("sh")
        .arg("-c")
        .arg(format!("{stop} -m immediate"))
        .status();
    assert!(st.unwrap().success());
}

#[test]
fn a_dir_that_is_a_file_is_refused_before_a_server_starts() {
    let home = Home::new();
    let file = home.path().join("a-file");
    std::fs::write(&file, "mine").unwrap();
    let (code, v, err) = run_json(home.dbsnap().arg("demo").arg("--dir").arg(&file));
    assert_eq!(code, 2, "{v}\n{err}");
    assert!(
        err.contains(&format!(
            "--dir {}: is a file, not a directory",
            file.display()
        )) && err.contains("hint:"),
        "{err}"
    );
    assert_eq!(std::fs::read(&file).unwrap(), b"mine");
}
