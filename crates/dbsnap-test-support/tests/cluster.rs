use dbsnap_test_support::{versions, Cluster};

#[test]
fn clusters_start_for_every_version_under_test() {
    for v in versions() {
        let c = Cluster::start(v);
        let out = c.psql("postgres", "SHOW server_version_num");
        assert_eq!(out.trim().parse::<u32>().unwrap() / 10000, v);
    }
}
