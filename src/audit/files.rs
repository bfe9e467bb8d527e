//! Audit file names (`audit-YYYYMMDD-NNN.jsonl`) and listing them in order.

use super::*;

/// Parses `audit-YYYYMMDD-NNN.jsonl` into (date, index).
pub(super) fn parse_file_name(name: &str) -> Option<(u32, u32)> {
    let rest = name.strip_prefix("audit-")?.strip_suffix(".jsonl")?;
    let (date, index) = rest.split_once('-')?;
    if date.len() != 8
        || index.len() < 3
        || !date.bytes().all(|c| c.is_ascii_digit())
        || !index.bytes().all(|c| c.is_ascii_digit())
    {
        return None;
    }
    Some((date.parse().ok()?, index.parse().ok()?))
}

pub(super) fn file_name(date: u32, index: u32) -> String {
    format!("audit-{date:08}-{index:03}.jsonl")
}

/// Sort key: audit names by (date, index) numerically, after any other names.
pub(super) fn sort_key(path: &Path) -> (Option<(u32, u32)>, std::ffi::OsString) {
    let name = path.file_name().unwrap_or_default();
    (name.to_str().and_then(parse_file_name), name.to_os_string())
}

/// Audit files directly inside `dir`, oldest first.
pub(super) fn list_audit_files(dir: &Path) -> Result<Vec<(PathBuf, u32, u32)>, AuditError> {
    let entries = fs::read_dir(dir).map_err(|e| io_error("list directory", dir, &e))?;
    let mut out = Vec::new();
    for entry in entries {
        let entry = entry.map_err(|e| io_error("list directory", dir, &e))?;
        let name = entry.file_name();
        if let Some((date, index)) = name.to_str().and_then(parse_file_name) {
            out.push((entry.path(), date, index));
        }
    }
    out.sort_by_key(|(_, d, i)| (*d, *i));
    Ok(out)
}

pub(super) fn collect_files(paths: &[PathBuf]) -> Result<Vec<PathBuf>, AuditError> {
    let mut files = Vec::new();
    for p in paths {
        let meta = fs::metadata(p).map_err(|e| io_error("open", p, &e))?;
        if meta.is_dir() {
            files.extend(list_audit_files(p)?.into_iter().map(|(f, _, _)| f));
        } else {
            files.push(p.clone());
        }
    }
    files.sort_by_cached_key(|p| (sort_key(p), p.clone()));
    files.dedup();
    if files.is_empty() {
        let paths = paths
            .iter()
            .map(|p| p.display().to_string())
            .collect::<Vec<_>>()
            .join(", ");
        return Err(AuditError::NoFiles { paths });
    }
    Ok(files)
}
