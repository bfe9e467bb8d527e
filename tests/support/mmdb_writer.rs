//! A tiny MaxMind DB (binary format 2.0) writer for tests: pure `std`, no
//! dependencies, no `unsafe`. Include it with
//! `#[cfg(test)] #[path = "…/mmdb_writer.rs"] mod mmdb_writer;`.
//!
//! ```ignore
//! let mut w = MmdbWriter::new("GeoLite2-Country", 6);
//! w.insert(("49.44.0.0".parse().unwrap(), 16), Record::GeoIp2Country {
//!     iso_code: "IN".into(), registered_iso_code: None });
//! std::fs::write(path, w.to_bytes())?;
//! ```
//!
//! File layout: a search tree with 32-bit records (8 bytes per node, root is
//! node 0), the 16 zero bytes of the data-section separator, the data section
//! (each distinct record encoded once, no pointers), then the marker
//! `\xAB\xCD\xEFMaxMind.com` and the metadata map (binary_format_major_version
//! 2, minor 0, build_epoch, database_type, description {"en": …}, ip_version,
//! languages ["en"], node_count, record_size 32).
//!
//! Semantics:
//! * `ip_version` 6: an IPv4 network `a.b.c.d/n` is stored as `::a.b.c.d/(96+n)`,
//!   the IPv4-compatible subtree `::/96` where MaxMind DB readers look up IPv4
//!   addresses (MaxMind's own layout). No `::ffff:0:0/96` (IPv4-mapped) or
//!   `2002::/16` (6to4) aliases are written, so `::ffff:a.b.c.d` is *not*
//!   found, just like in the embedded ip-location-db file.
//! * `ip_version` 4: inserting an IPv6 network panics (misuse of a test helper).
//! * Inserts apply in order and each overwrites its whole range: a later, more
//!   specific network wins for its range while the rest of an earlier,
//!   enclosing network keeps its record; a later, *less* specific network
//!   replaces everything inside it. Host bits past the prefix are ignored.
//! * build_epoch defaults to 1_700_000_000 (2023-11-14T22:13:20Z).
#![allow(dead_code)]

use std::collections::HashMap;
use std::net::IpAddr;

/// A value of the MaxMind DB data section (type number in brackets).
#[derive(Clone, Debug, PartialEq)]
pub enum Value {
    /// map (7); keys are UTF-8 strings, order is kept.
    Map(Vec<(String, Value)>),
    /// array (11).
    Array(Vec<Value>),
    /// UTF-8 string (2).
    Str(String),
    /// bytes (4).
    Bytes(Vec<u8>),
    /// boolean (14).
    Bool(bool),
    /// uint16 (5).
    U16(u16),
    /// uint32 (6).
    U32(u32),
    /// uint64 (9).
    U64(u64),
    /// uint128 (10).
    U128(u128),
    /// int32 (8).
    I32(i32),
    /// double (3).
    F64(f64),
    /// float (15).
    F32(f32),
}

/// A record to store for a network.
#[derive(Clone, Debug, PartialEq)]
pub enum Record {
    /// GeoIP2/GeoLite2 shape: `{"country":{"iso_code":..},"registered_country":{"iso_code":..}}`
    /// (`registered_country` is left out when `registered_iso_code` is `None`).
    GeoIp2Country {
        /// `country.iso_code`
        iso_code: String,
        /// `registered_country.iso_code`
        registered_iso_code: Option<String>,
    },
    /// ip-location-db shape: `{"country_code":..}`.
    IpLocationDb {
        /// `country_code`
        country_code: String,
    },
    /// Any value, stored as is.
    Raw(Value),
}

fn s(text: &str) -> Value {
    Value::Str(text.to_string())
}

fn iso(code: String) -> Value {
    Value::Map(vec![("iso_code".to_string(), Value::Str(code))])
}

impl Record {
    /// The data-section value of this record.
    pub fn into_value(self) -> Value {
        match self {
            Record::GeoIp2Country {
                iso_code,
                registered_iso_code,
            } => {
                let mut m = vec![("country".to_string(), iso(iso_code))];
                if let Some(r) = registered_iso_code {
                    m.push(("registered_country".to_string(), iso(r)));
                }
                Value::Map(m)
            }
            Record::IpLocationDb { country_code } => {
                Value::Map(vec![("country_code".to_string(), Value::Str(country_code))])
            }
            Record::Raw(v) => v,
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Ptr {
    Empty,
    Node(usize),
    Data(usize), // offset in the data section
}

/// Builds a MaxMind DB in memory.
#[derive(Clone, Debug)]
pub struct MmdbWriter {
    database_type: String,
    ip_version: u16,
    build_epoch: u64,
    nodes: Vec<[Ptr; 2]>,
    data: Vec<u8>,
    dedup: HashMap<Vec<u8>, usize>,
}

impl MmdbWriter {
    /// An empty database of `database_type` (e.g. "GeoLite2-Country") for
    /// `ip_version` 4 or 6 (anything else panics).
    pub fn new(database_type: &str, ip_version: u16) -> Self {
        assert!(
            ip_version == 4 || ip_version == 6,
            "ip_version must be 4 or 6"
        );
        MmdbWriter {
            database_type: database_type.to_string(),
            ip_version,
            build_epoch: 1_700_000_000,
            nodes: vec![[Ptr::Empty; 2]],
            data: Vec::new(),
            dedup: HashMap::new(),
        }
    }

    /// Sets the metadata `build_epoch` (seconds since the Unix epoch).
    pub fn build_epoch(&mut self, epoch: u64) {
        self.build_epoch = epoch;
    }

    /// Stores `record` for the network `(address, prefix_len)`; see the
    /// module docs for the overwrite rules.
    pub fn insert(&mut self, net: (IpAddr, u8), record: Record) {
        assert!(
            self.ip_version == 6 || net.0.is_ipv4(),
            "IPv6 network {net:?} in an IPv4 database"
        );
        let (addr, width, len) = match net.0 {
            IpAddr::V4(a) if self.ip_version == 4 => {
                (u128::from(u32::from(a)), 32u32, u32::from(net.1))
            }
            IpAddr::V4(a) => (u128::from(u32::from(a)), 128, 96 + u32::from(net.1)),
            IpAddr::V6(a) => (u128::from(a), 128, u32::from(net.1)),
        };
        assert!(len <= width, "prefix length too long in {net:?}");
        let mut buf = Vec::new();
        encode(&record.into_value(), &mut buf);
        let off = match self.dedup.get(&buf) {
            Some(&off) => off,
            None => {
                let off = self.data.len();
                self.data.extend_from_slice(&buf);
                self.dedup.insert(buf, off);
                off
            }
        };
        if len == 0 {
            self.nodes[0] = [Ptr::Data(off); 2];
            return;
        }
        let mut node = 0;
        for depth in 0..len {
            let bit = ((addr >> (width - 1 - depth)) & 1) as usize;
            if depth == len - 1 {
                self.nodes[node][bit] = Ptr::Data(off);
                break;
            }
            node = match self.nodes[node][bit] {
                Ptr::Node(n) => n,
                inherited => {
                    // Split an empty or data leaf: both halves keep what it had.
                    self.nodes.push([inherited; 2]);
                    let n = self.nodes.len() - 1;
                    self.nodes[node][bit] = Ptr::Node(n);
                    n
                }
            };
        }
    }

    /// The complete database file.
    pub fn to_bytes(&self) -> Vec<u8> {
        // Number the nodes still reachable from the root, breadth first.
        let mut order = vec![0usize];
        let mut index = vec![usize::MAX; self.nodes.len()];
        index[0] = 0;
        let mut i = 0;
        while i < order.len() {
            for p in self.nodes[order[i]] {
                if let Ptr::Node(n) = p {
                    index[n] = order.len();
                    order.push(n);
                }
            }
            i += 1;
        }
        let count = order.len();
        let mut out = Vec::with_capacity(count * 8 + 16 + self.data.len() + 256);
        for &n in &order {
            for p in self.nodes[n] {
                let v = match p {
                    Ptr::Empty => count,
                    Ptr::Node(c) => index[c],
                    Ptr::Data(off) => count + 16 + off,
                };
                out.extend_from_slice(&(v as u32).to_be_bytes());
            }
        }
        out.extend_from_slice(&[0u8; 16]);
        out.extend_from_slice(&self.data);
        out.extend_from_slice(b"\xAB\xCD\xEFMaxMind.com");
        let meta = Value::Map(vec![
            ("binary_format_major_version".into(), Value::U16(2)),
            ("binary_format_minor_version".into(), Value::U16(0)),
            ("build_epoch".into(), Value::U64(self.build_epoch)),
            ("database_type".into(), s(&self.database_type)),
            (
                "description".into(),
                Value::Map(vec![("en".into(), s("Sima test database"))]),
            ),
            ("ip_version".into(), Value::U16(self.ip_version)),
            ("languages".into(), Value::Array(vec![s("en")])),
            ("node_count".into(), Value::U32(count as u32)),
            ("record_size".into(), Value::U16(32)),
        ]);
        encode(&meta, &mut out);
        out
    }
}

/// Control byte(s): type, then (for types > 7) the extended-type byte, then size bytes.
fn control(out: &mut Vec<u8>, typ: u8, size: usize) {
    let (small, ext): (u8, Vec<u8>) = match size {
        0..=28 => (size as u8, vec![]),
        29..=284 => (29, vec![(size - 29) as u8]),
        285..=65_820 => (30, ((size - 285) as u16).to_be_bytes().to_vec()),
        _ => (31, ((size - 65_821) as u32).to_be_bytes()[1..].to_vec()),
    };
    out.push(if typ <= 7 { typ << 5 } else { 0 } | small);
    if typ > 7 {
        out.push(typ - 7);
    }
    out.extend_from_slice(&ext);
}

fn uint(out: &mut Vec<u8>, typ: u8, n: u128) {
    let bytes = n.to_be_bytes();
    let skip = bytes.iter().take_while(|b| **b == 0).count();
    control(out, typ, 16 - skip);
    out.extend_from_slice(&bytes[skip..]);
}

fn encode(v: &Value, out: &mut Vec<u8>) {
    match v {
        Value::Str(t) => {
            control(out, 2, t.len());
            out.extend_from_slice(t.as_bytes());
        }
        Value::F64(f) => {
            control(out, 3, 8);
            out.extend_from_slice(&f.to_be_bytes());
        }
        Value::Bytes(b) => {
            control(out, 4, b.len());
            out.extend_from_slice(b);
        }
        Value::U16(n) => uint(out, 5, u128::from(*n)),
        Value::U32(n) => uint(out, 6, u128::from(*n)),
        Value::Map(m) => {
            control(out, 7, m.len());
            for (k, val) in m {
                control(out, 2, k.len());
                out.extend_from_slice(k.as_bytes());
                encode(val, out);
            }
        }
        Value::I32(n) => {
            control(out, 8, 4);
            out.extend_from_slice(&n.to_be_bytes());
        }
        Value::U64(n) => uint(out, 9, u128::from(*n)),
        Value::U128(n) => uint(out, 10, *n),
        Value::Array(a) => {
            control(out, 11, a.len());
            for val in a {
                encode(val, out);
            }
        }
        Value::Bool(b) => control(out, 14, usize::from(*b)),
        Value::F32(f) => {
            control(out, 15, 4);
            out.extend_from_slice(&f.to_be_bytes());
        }
    }
}
