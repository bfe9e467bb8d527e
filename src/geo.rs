//! Geolocation: IP address -> country, from declared overrides first, then a MaxMind-format
//! database (GeoIP2/GeoLite2 Country or City, or the ip-location-db `country_code` schema).
//! Pure lookups; must not import socket or HTTP code.

use std::fmt;
use std::net::IpAddr;
use std::path::{Path, PathBuf};

use ipnet::IpNet;
use serde::Deserialize;

use crate::guard;

/// The database compiled into the binary: ip-location-db "geo-whois-asn-country"
/// (RIR delegation + whois/ASN data, CC BY 4.0; see `geo/README.md`).
static EMBEDDED_DB: &[u8] = include_bytes!("../geo/geo-whois-asn-country.mmdb");

/// ISO 3166-1 alpha-2 codes currently assigned, two letters each, concatenated.
const ISO_3166_ALPHA2: &str = "ADAEAFAGAIALAMAOAQARASATAUAWAXAZBABBBDBEBFBGBHBIBJBLBMBNBOBQBRBSBTBVBWBYBZ\
CACCCDCFCGCHCICKCLCMCNCOCRCUCVCWCXCYCZDEDJDKDMDODZECEEEGEHERESETFIFJFKFMFOFRGAGBGDGEGFGGGHGIGLGMGNGPGQGRGSGTGUGWGY\
HKHMHNHRHTHUIDIEILIMINIOIQIRISITJEJMJOJPKEKGKHKIKMKNKPKRKWKYKZLALBLCLILKLRLSLTLULVLYMAMCMDMEMFMGMHMKMLMMMNMOMPMQMRMSMTMUMVMWMXMYMZ\
NANCNENFNGNINLNONPNRNUNZOMPAPEPFPGPHPKPLPMPNPRPSPTPWPYQARERORSRURWSASBSCSDSESGSHSISJSKSLSMSNSOSRSSSTSVSXSYSZ\
TCTDTFTGTHTJTKTLTMTNTOTRTTTVTWTZUAUGUMUSUYUZVAVCVEVGVIVNVUWFWSYEYTZAZMZW";

/// A network declared to be in a country, overriding the database (and the address guard).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GeoOverride {
    /// The declared network.
    pub net: IpNet,
    /// The country it is declared to be in.
    pub country: Country,
}

/// An ISO 3166-1 alpha-2 country code, upper case.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Country([u8; 2]);

/// Where a country answer came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GeoSource {
    /// A `geo.overrides` entry.
    Override,
    /// The mmdb database.
    Database,
    /// The policy's declared residency for the destination host.
    Declared,
}

/// The answer for one address. `country` is `None` when neither source knows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Located {
    /// The country, if known.
    pub country: Option<Country>,
    /// Which source answered (`Database` also when it had no record).
    pub source: GeoSource,
}

/// Loading or reading the database failed.
#[derive(Debug, thiserror::Error)]
pub enum GeoError {
    /// The file could not be read.
    #[error("cannot read geo database {path}: {source}")]
    Read {
        /// The path.
        path: PathBuf,
        /// IO error.
        #[source]
        source: std::io::Error,
    },
    /// The bytes are not a MaxMind DB.
    #[error("geo database {origin} is not a valid MaxMind DB ({detail}); download a fresh copy (geo/refresh.sh or geoipupdate)")]
    Corrupt {
        /// Path or `embedded`.
        origin: String,
        /// Reader's message.
        detail: String,
    },
    /// A lookup failed inside the database (corrupt record).
    #[error("geo lookup failed: {0}")]
    Lookup(String),
}

/// Facts about the loaded database, printed at start and exported as an info metric.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GeoInfo {
    /// `database_type` from the metadata (e.g. `GeoLite2-Country`).
    pub database_type: String,
    /// Build time, seconds since the Unix epoch.
    pub build_epoch: u64,
    /// The file's path, or `embedded`.
    pub origin: String,
}

enum Bytes {
    Static(&'static [u8]),
    Owned(Vec<u8>),
}

/// An opened database.
pub struct GeoDb {
    reader: maxminddb::Reader<Bytes>,
    info: GeoInfo,
    recent: RecentV4,
}

/// Answers for recently looked-up IPv4 addresses. Egress goes to few destinations, over
/// and over; a walk of the tree, a decode and the code's validation cost about 1,500
/// instructions, a hit here a few. Direct-mapped, one atomic word per entry: the address,
/// a filled bit, a found bit and the two letters. A database never changes under its
/// readers (a new file is a new `GeoDb`), so an entry never goes stale.
struct RecentV4(Box<[std::sync::atomic::AtomicU64]>);

impl RecentV4 {
    const SLOTS: usize = 4096;
    const FILLED: u64 = 1 << 31;
    const FOUND: u64 = 1 << 30;

    fn new() -> RecentV4 {
        RecentV4(
            (0..Self::SLOTS)
                .map(|_| std::sync::atomic::AtomicU64::new(0))
                .collect(),
        )
    }

    fn slot(&self, ip: u32) -> Option<&std::sync::atomic::AtomicU64> {
        // Fibonacci hashing: neighbouring addresses spread over the table.
        let i = (ip.wrapping_mul(0x9E37_79B9) >> 20) as usize;
        self.0.get(i % Self::SLOTS)
    }

    fn get(&self, ip: u32) -> Option<Option<Country>> {
        let word = self.slot(ip)?.load(std::sync::atomic::Ordering::Relaxed);
        if word & Self::FILLED == 0 || (word >> 32) as u32 != ip {
            return None;
        }
        if word & Self::FOUND == 0 {
            return Some(None);
        }
        Some(Some(Country([(word >> 8) as u8, word as u8])))
    }

    fn put(&self, ip: u32, country: Option<Country>) {
        let mut word = (u64::from(ip) << 32) | Self::FILLED;
        if let Some(Country([a, b])) = country {
            word |= Self::FOUND | (u64::from(a) << 8) | u64::from(b);
        }
        if let Some(slot) = self.slot(ip) {
            slot.store(word, std::sync::atomic::Ordering::Relaxed);
        }
    }
}

/// Overrides plus database: what the request path asks.
pub struct Locator {
    overrides: Vec<GeoOverride>,
    db: GeoDb,
}

#[derive(Deserialize)]
struct Record<'a> {
    #[serde(borrow)]
    country: Option<IsoCode<'a>>,
    #[serde(borrow)]
    registered_country: Option<IsoCode<'a>>,
    country_code: Option<&'a str>,
}

#[derive(Deserialize)]
struct IsoCode<'a> {
    iso_code: Option<&'a str>,
}

// === impl Country ===

impl Country {
    /// India, the default home country.
    pub const IN: Country = Country(*b"IN");

    /// Parses an assigned ISO 3166-1 alpha-2 code, any case. `None` for anything else.
    pub fn parse(s: &str) -> Option<Country> {
        let b = s.as_bytes();
        if b.len() != 2 || !b.iter().all(u8::is_ascii_alphabetic) {
            return None;
        }
        let code = [b[0].to_ascii_uppercase(), b[1].to_ascii_uppercase()];
        ISO_3166_ALPHA2
            .as_bytes()
            .chunks_exact(2)
            .any(|c| c == code)
            .then_some(Country(code))
    }

    /// The two-letter code.
    pub fn as_str(&self) -> &str {
        // Only ASCII letters are ever stored.
        std::str::from_utf8(&self.0).unwrap_or("ZZ")
    }
}

impl fmt::Display for Country {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl fmt::Debug for Country {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl GeoSource {
    /// Label for logs and `sima geo lookup`.
    pub fn as_str(&self) -> &'static str {
        match self {
            GeoSource::Override => "override",
            GeoSource::Database => "database",
            GeoSource::Declared => "declared",
        }
    }
}

impl AsRef<[u8]> for Bytes {
    fn as_ref(&self) -> &[u8] {
        match self {
            Bytes::Static(b) => b,
            Bytes::Owned(v) => v,
        }
    }
}

// === impl GeoDb ===

impl GeoDb {
    /// The database compiled into the binary.
    pub fn embedded() -> Result<GeoDb, GeoError> {
        GeoDb::from_bytes(Bytes::Static(EMBEDDED_DB), "embedded".into())
    }

    /// Reads a database file.
    pub fn open(path: &Path) -> Result<GeoDb, GeoError> {
        let bytes = std::fs::read(path).map_err(|source| GeoError::Read {
            path: path.to_owned(),
            source,
        })?;
        GeoDb::from_bytes(Bytes::Owned(bytes), path.display().to_string())
    }

    /// Opens a database held in memory (tests write small ones).
    pub fn from_vec(bytes: Vec<u8>, origin: &str) -> Result<GeoDb, GeoError> {
        GeoDb::from_bytes(Bytes::Owned(bytes), origin.to_owned())
    }

    fn from_bytes(bytes: Bytes, origin: String) -> Result<GeoDb, GeoError> {
        let corrupt = |detail: String| GeoError::Corrupt {
            origin: origin.clone(),
            detail,
        };
        // The file is untrusted input: a sample lookup walks the tree and decodes a record
        // so most corruption fails the load (or reload), not requests. (`Reader::verify`
        // also rejects valid files with an empty description map, as the embedded one has.)
        // The reader is kept from taking the process down on inputs it did not expect.
        let opened = std::panic::catch_unwind(move || {
            let reader = maxminddb::Reader::from_source(bytes)?;
            let mut probes = vec![IpAddr::from([1, 1, 1, 1])];
            if reader.metadata().ip_version == 6 {
                probes.push(IpAddr::from([0x2400, 0, 0, 0, 0, 0, 0, 1]));
            }
            for probe in probes {
                reader
                    .lookup(probe)
                    .and_then(|r| r.decode::<Record<'_>>())?;
            }
            Ok::<_, maxminddb::MaxMindDbError>(reader)
        });
        let reader = match opened {
            Ok(Ok(r)) => r,
            Ok(Err(e)) => return Err(corrupt(e.to_string())),
            Err(_) => return Err(corrupt("the reader failed on malformed data".into())),
        };
        let info = GeoInfo {
            database_type: reader.metadata().database_type.clone(),
            build_epoch: reader.metadata().build_epoch,
            origin,
        };
        Ok(GeoDb {
            reader,
            info,
            recent: RecentV4::new(),
        })
    }

    /// Facts about this database.
    pub fn info(&self) -> &GeoInfo {
        &self.info
    }

    /// The country the database records for `ip`: `country`, then `registered_country`,
    /// then `country_code`.
    pub fn lookup(&self, ip: IpAddr) -> Result<Option<Country>, GeoError> {
        let IpAddr::V4(v4) = ip else {
            return self.lookup_uncached(ip);
        };
        let key = u32::from(v4);
        if let Some(known) = self.recent.get(key) {
            return Ok(known);
        }
        // Failures are not remembered: they are reported every time.
        let found = self.lookup_uncached(ip)?;
        self.recent.put(key, found);
        Ok(found)
    }

    fn lookup_uncached(&self, ip: IpAddr) -> Result<Option<Country>, GeoError> {
        let reader = std::panic::AssertUnwindSafe(&self.reader);
        let rec: Option<Record<'_>> =
            std::panic::catch_unwind(|| reader.lookup(ip).and_then(|r| r.decode()))
                .map_err(|_| GeoError::Lookup("the reader failed on malformed data".into()))?
                .map_err(|e| GeoError::Lookup(e.to_string()))?;
        let Some(rec) = rec else { return Ok(None) };
        let code = rec
            .country
            .and_then(|c| c.iso_code)
            .or(rec.registered_country.and_then(|c| c.iso_code))
            .or(rec.country_code);
        Ok(code.and_then(Country::parse))
    }
}

// === impl Locator ===

impl Locator {
    /// Combines declared overrides with a database.
    pub fn new(overrides: Vec<GeoOverride>, db: GeoDb) -> Locator {
        Locator { overrides, db }
    }

    /// The database's facts.
    pub fn info(&self) -> &GeoInfo {
        self.db.info()
    }

    /// The country of the most specific override containing `ip`, if any.
    pub fn override_for(&self, ip: IpAddr) -> Option<Country> {
        let ip = guard::canonical(ip);
        self.overrides
            .iter()
            .filter(|o| o.net.contains(&ip))
            .max_by_key(|o| o.net.prefix_len())
            .map(|o| o.country)
    }

    /// Locates `ip`. IPv4 addresses embedded in IPv6 (mapped, NAT64, 6to4) are located by
    /// the IPv4 address the packets really reach.
    pub fn locate(&self, ip: IpAddr) -> Result<Located, GeoError> {
        if let Some(country) = self.override_for(ip) {
            return Ok(Located {
                country: Some(country),
                source: GeoSource::Override,
            });
        }
        let country = self.db.lookup(guard::canonical(ip))?;
        Ok(Located {
            country,
            source: GeoSource::Database,
        })
    }
}

#[cfg(test)]
#[path = "../tests/support/mmdb_writer.rs"]
#[allow(dead_code, missing_docs, clippy::all)]
pub(crate) mod mmdb_writer;

#[cfg(test)]
mod tests {
    use super::*;
    use mmdb_writer::{MmdbWriter, Record as W};

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn geoip2_db() -> GeoDb {
        let mut w = MmdbWriter::new("GeoLite2-Country", 6);
        w.build_epoch(1_700_000_000);
        w.insert(
            (ip("1.0.0.0"), 8),
            W::GeoIp2Country {
                iso_code: "IN".into(),
                registered_iso_code: Some("IN".into()),
            },
        );
        w.insert(
            (ip("8.8.8.0"), 24),
            W::GeoIp2Country {
                iso_code: "US".into(),
                registered_iso_code: None,
            },
        );
        w.insert(
            (ip("2400:1000::"), 24),
            W::GeoIp2Country {
                iso_code: "IN".into(),
                registered_iso_code: None,
            },
        );
        GeoDb::from_vec(w.to_bytes(), "test").unwrap()
    }

    #[test]
    fn country_codes_are_checked() {
        assert_eq!(Country::parse("in"), Some(Country::IN));
        assert_eq!(Country::parse("US").unwrap().as_str(), "US");
        assert_eq!(Country::parse("XX"), None);
        assert_eq!(Country::parse("IND"), None);
        assert_eq!(Country::parse("I1"), None);
    }

    #[test]
    fn geoip2_schema() {
        let db = geoip2_db();
        assert_eq!(db.info().database_type, "GeoLite2-Country");
        assert_eq!(db.info().build_epoch, 1_700_000_000);
        assert_eq!(db.lookup(ip("1.2.3.4")).unwrap(), Country::parse("IN"));
        assert_eq!(db.lookup(ip("8.8.8.8")).unwrap(), Country::parse("US"));
        assert_eq!(db.lookup(ip("8.8.9.1")).unwrap(), None);
        assert_eq!(db.lookup(ip("2400:1001::1")).unwrap(), Country::parse("IN"));
    }

    #[test]
    fn registered_country_is_a_fallback() {
        let mut w = MmdbWriter::new("GeoIP2-Country", 4);
        w.insert(
            (ip("5.0.0.0"), 8),
            W::Raw(mmdb_writer::Value::Map(vec![(
                "registered_country".into(),
                mmdb_writer::Value::Map(vec![(
                    "iso_code".into(),
                    mmdb_writer::Value::Str("DE".into()),
                )]),
            )])),
        );
        let db = GeoDb::from_vec(w.to_bytes(), "t").unwrap();
        assert_eq!(db.lookup(ip("5.1.1.1")).unwrap(), Country::parse("DE"));
    }

    #[test]
    fn ip_location_db_schema() {
        let mut w = MmdbWriter::new("geo-whois-asn-country", 6);
        w.insert(
            (ip("3.0.0.0"), 8),
            W::IpLocationDb {
                country_code: "US".into(),
            },
        );
        w.insert(
            (ip("2001:4860::"), 32),
            W::IpLocationDb {
                country_code: "US".into(),
            },
        );
        let db = GeoDb::from_vec(w.to_bytes(), "t").unwrap();
        assert_eq!(db.lookup(ip("3.3.3.3")).unwrap(), Country::parse("US"));
        assert_eq!(
            db.lookup(ip("2001:4860::8888")).unwrap(),
            Country::parse("US")
        );
        assert_eq!(db.lookup(ip("4.0.0.1")).unwrap(), None);
    }

    #[test]
    fn corrupt_database_is_a_clear_error() {
        let err = GeoDb::from_vec(b"not an mmdb at all".to_vec(), "bad.mmdb")
            .err()
            .unwrap();
        let msg = err.to_string();
        assert!(
            msg.contains("bad.mmdb") && msg.contains("not a valid MaxMind DB"),
            "{msg}"
        );
        let mut bytes = geoip2_db_bytes();
        let cut = bytes.len() / 3;
        bytes.drain(0..cut);
        assert!(GeoDb::from_vec(bytes, "cut.mmdb").is_err());
    }

    fn geoip2_db_bytes() -> Vec<u8> {
        let mut w = MmdbWriter::new("GeoLite2-Country", 6);
        w.insert(
            (ip("1.0.0.0"), 8),
            W::GeoIp2Country {
                iso_code: "IN".into(),
                registered_iso_code: None,
            },
        );
        w.to_bytes()
    }

    #[test]
    fn overrides_win_most_specific_first() {
        let ov = vec![
            GeoOverride {
                net: "8.0.0.0/8".parse().unwrap(),
                country: Country::IN,
            },
            GeoOverride {
                net: "8.8.8.0/24".parse().unwrap(),
                country: Country::parse("SG").unwrap(),
            },
        ];
        let loc = Locator::new(ov, geoip2_db());
        let a = loc.locate(ip("8.8.8.8")).unwrap();
        assert_eq!(a.country, Country::parse("SG"));
        assert_eq!(a.source, GeoSource::Override);
        let b = loc.locate(ip("8.1.1.1")).unwrap();
        assert_eq!(b.country, Some(Country::IN));
        let c = loc.locate(ip("1.1.1.1")).unwrap();
        assert_eq!(
            (c.country, c.source),
            (Some(Country::IN), GeoSource::Database)
        );
    }

    #[test]
    fn mapped_and_nat64_addresses_locate_by_their_ipv4() {
        let loc = Locator::new(Vec::new(), geoip2_db());
        assert_eq!(
            loc.locate(ip("::ffff:8.8.8.8")).unwrap().country,
            Country::parse("US")
        );
        assert_eq!(
            loc.locate(ip("64:ff9b::808:808")).unwrap().country,
            Country::parse("US")
        );
        assert_eq!(
            loc.locate(ip("2002:0808:0808::1")).unwrap().country,
            Country::parse("US")
        );
    }

    #[test]
    fn embedded_database_opens_and_knows_india() {
        let db = GeoDb::embedded().unwrap();
        assert_eq!(db.info().origin, "embedded");
        // 14.139.0.0/16 is ERNET India's block (NKN); it has been Indian since the 2000s.
        assert_eq!(db.lookup(ip("14.139.1.1")).unwrap(), Some(Country::IN));
    }

    proptest::proptest! {
        // The recent-answers table only ever returns what the database says, whatever
        // addresses share its slots and however often they come back.
        #[test]
        fn remembered_answers_are_the_database_answers(
            addrs in proptest::collection::vec(proptest::prelude::any::<u32>(), 1..64),
            repeats in 1usize..4,
        ) {
            let db = GeoDb::embedded().unwrap();
            let mut probes: Vec<IpAddr> = addrs.iter().map(|&a| IpAddr::from(a.to_be_bytes())).collect();
            // Known answers too, not only addresses the database has nothing for.
            probes.extend([ip("14.139.1.1"), ip("8.8.8.8"), ip("10.0.0.1")]);
            for _ in 0..repeats {
                for &p in &probes {
                    proptest::prop_assert_eq!(
                        db.lookup(p).unwrap(),
                        db.lookup_uncached(p).unwrap(),
                        "{}", p
                    );
                }
            }
        }
    }
}
