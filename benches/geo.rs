#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]
//! What geolocating one destination address costs: a declared network (`geo.overrides`,
//! as `bench/run.sh` declares its loopback upstream) against the embedded ip-location-db
//! database, which is what a production destination takes: an IPv4 address seen before
//! (answered from the database's table of recent answers), a new one, and IPv6.

use std::hint::black_box;
use std::net::IpAddr;

use criterion::{criterion_group, criterion_main, Criterion};
use sima::geo::{Country, GeoDb, GeoOverride, Locator};

fn locator(overrides: Vec<GeoOverride>) -> Locator {
    Locator::new(overrides, GeoDb::embedded().expect("embedded database"))
}

fn geo(c: &mut Criterion) {
    let declared = vec![GeoOverride {
        net: "127.0.0.0/8".parse().unwrap(),
        country: Country::parse("US").unwrap(),
    }];
    let loc = locator(declared);
    let mut g = c.benchmark_group("locate");
    let loopback: IpAddr = "127.0.0.1".parse().unwrap();
    g.bench_function("override", |b| b.iter(|| loc.locate(black_box(loopback))));
    // Public addresses in several registries: partner APIs, CDNs, clouds.
    let v4: Vec<IpAddr> = ["8.8.8.8", "14.139.1.1", "52.95.116.1", "104.16.132.229"]
        .iter()
        .map(|s| s.parse().unwrap())
        .collect();
    let v6: Vec<IpAddr> = ["2001:4860:4860::8888", "2404:6800:4009:80b::200e"]
        .iter()
        .map(|s| s.parse().unwrap())
        .collect();
    for ip in v4.iter().chain(&v6) {
        assert!(
            loc.locate(*ip).unwrap().country.is_some(),
            "{ip} not in the database"
        );
    }
    // The usual case: destinations seen before (IPv4 answers are remembered per database).
    g.bench_function("database, IPv4 seen before", |b| {
        let mut i = 0;
        b.iter(|| {
            i = (i + 1) % v4.len();
            loc.locate(black_box(v4[i]))
        })
    });
    // A new address each time: the walk of the tree and the decode.
    g.bench_function("database, IPv4 new", |b| {
        let mut n: u32 = 0x0800_0000;
        b.iter(|| {
            n = n.wrapping_add(0x9E37_79B9) | 0x0100_0000;
            loc.locate(black_box(IpAddr::from(n.to_be_bytes())))
        })
    });
    g.bench_function("database, IPv6", |b| {
        let mut i = 0;
        b.iter(|| {
            i = (i + 1) % v6.len();
            loc.locate(black_box(v6[i]))
        })
    });
    g.finish();
}

criterion_group!(benches, geo);
criterion_main!(benches);
