//! Unit tests of `machineconfig`.

use super::*;

#[test]
fn contract_by_version() {
    let c = |s: &str| Contract::for_version(&TalosVersion::parse(s).expect("v"));
    assert_eq!(c("v1.9.5"), Contract::V1_10);
    assert_eq!(c("v1.11.3"), Contract::V1_10);
    assert_eq!(c("v1.12.0"), Contract::V1_12);
    assert_eq!(c("v1.13.2"), Contract::V1_12);
    assert_eq!(c("v1.14.0-alpha.0"), Contract::V1_14);
    assert_eq!(c("v1.15.0"), Contract::V1_14);
}

#[test]
fn endpoint_parsing() {
    assert_eq!(
        endpoint_host("https://198.18.0.10:6443").expect("ok"),
        "198.18.0.10"
    );
    assert_eq!(
        endpoint_host("https://cp.example/").expect("ok"),
        "cp.example"
    );
    assert_eq!(
        endpoint_host("https://[fd00::1]:6443").expect("ok"),
        "fd00::1"
    );
    for bad in [
        "198.18.0.10:6443",
        "http://1.2.3.4:6443",
        "https://",
        "https://h:x",
        "https://h:6443/path",
        "https://h:0",
    ] {
        assert!(endpoint_host(bad).is_err(), "{bad}");
    }
}

#[test]
fn names_and_macs() {
    assert!(is_dns_label("gpu-lab1"));
    assert!(!is_dns_label("Gpu"));
    assert!(!is_dns_label("-a"));
    assert!(is_mac("52:54:00:AB:cd:01"));
    assert!(!is_mac("52:54:00:ab:cd"));
    assert!(!is_mac("52-54-00-ab-cd-01"));
}
