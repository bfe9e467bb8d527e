#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]
//! What geolocating one destination address costs: a declared network (`geo.overrides`,
//! as `bench/run.sh` declares its loopback upstream) against a lookup in the embedded
//! ip-location-db database, which is what a production destination takes.

use std::hint::black_box;
use std::net::IpAddr;

use criterion::{criterion_group, criterion_main, Criterion};
use sima::config::GeoOverride;
use sima::geo::{Country, GeoDb, Locator};

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
    // Public addresses in several registries, v4 and v6: partner APIs, CDNs, clouds.
    let public: Vec<IpAddr> = [
        "8.8.8.8",
        "14.139.1.1",
        "52.95.116.1",
        "104.16.132.229",
        "2001:4860:4860::8888",
        "2404:6800:4009:80b::200e",
    ]
    .iter()
    .map(|s| s.parse().unwrap())
    .collect();
    for ip in &public {
        assert!(
            loc.locate(*ip).unwrap().country.is_some(),
            "{ip} not in the database"
        );
    }
    g.bench_function("database", |b| {
        let mut i = 0;
        b.iter(|| {
            i = (i + 1) % public.len();
            loc.locate(black_box(public[i]))
        })
    });
    g.finish();
}

criterion_group!(benches, geo);
criterion_main!(benches);
