//! Kernel parameters under `<proc-root>/sys`: the curated set an incident needs first, any keys or
//! globs asked for, and diffs between snapshots.
//!
//! Changing values lives in [`journal`]: every write is recorded before it happens and undone
//! afterwards. This module only reads.

pub mod journal;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use crate::error::{Result, SnapError};
use crate::proc_root::ProcRoot;
use crate::records::SysctlRecord;

/// Keys read by every snapshot: the ones that decide how a host copes with many short connections.
pub const INCIDENT_KEYS: &[&str] = &[
    "net.core.somaxconn",
    "net.core.netdev_max_backlog",
    "net.core.rmem_max",
    "net.core.wmem_max",
    "net.ipv4.tcp_max_syn_backlog",
    "net.ipv4.tcp_syncookies",
    "net.ipv4.tcp_synack_retries",
    "net.ipv4.tcp_syn_retries",
    "net.ipv4.tcp_fin_timeout",
    "net.ipv4.tcp_tw_reuse",
    "net.ipv4.tcp_max_tw_buckets",
    "net.ipv4.tcp_max_orphans",
    "net.ipv4.tcp_orphan_retries",
    "net.ipv4.ip_local_port_range",
    "net.ipv4.ip_local_reserved_ports",
    "net.ipv4.tcp_keepalive_time",
    "net.ipv4.tcp_keepalive_intvl",
    "net.ipv4.tcp_keepalive_probes",
    "net.ipv4.tcp_rmem",
    "net.ipv4.tcp_wmem",
    "net.ipv4.tcp_mem",
    "net.ipv4.tcp_slow_start_after_idle",
    "net.ipv4.tcp_congestion_control",
    "net.ipv4.tcp_abort_on_overflow",
    "net.netfilter.nf_conntrack_max",
    "net.netfilter.nf_conntrack_tcp_timeout_time_wait",
    "net.netfilter.nf_conntrack_tcp_timeout_established",
    "fs.file-max",
    "fs.nr_open",
    "vm.swappiness",
];

/// Reads the curated set plus `patterns` (exact keys or globs such as `net.ipv4.tcp_*`), sorted by
/// key, each key once.
///
/// Curated keys the kernel does not have (conntrack without its module) are skipped; an exact key
/// that was asked for and does not exist is [`SnapError::UnknownKey`]. Unreadable keys matched by a
/// glob (write-only ones such as `net.ipv4.route.flush`) are skipped.
pub fn read_incident_set(root: &ProcRoot, patterns: &[String]) -> Result<Vec<(String, String)>> {
    let mut values = BTreeMap::new();
    for key in INCIDENT_KEYS {
        if let Some(value) = read_optional(root, key)? {
            values.insert((*key).to_owned(), value);
        }
    }
    for (key, value) in read_patterns(root, patterns)? {
        values.insert(key, value);
    }
    Ok(values.into_iter().collect())
}

/// Reads exactly `patterns` (exact keys or globs), sorted by key.
pub fn read_patterns(root: &ProcRoot, patterns: &[String]) -> Result<Vec<(String, String)>> {
    let mut values = BTreeMap::new();
    for pattern in patterns {
        if is_glob(pattern) {
            for (key, path) in expand_glob(root, pattern) {
                if let Ok(text) = std::fs::read_to_string(&path) {
                    values.insert(key, normalize_value(&text));
                }
            }
        } else {
            let key = normalize_key(pattern)?;
            let value = read(root, &key)?;
            values.insert(key, value);
        }
    }
    Ok(values.into_iter().collect())
}

/// Reads one key; a missing key is [`SnapError::UnknownKey`].
pub fn read(root: &ProcRoot, key: &str) -> Result<String> {
    let path = key_path(root, key)?;
    match std::fs::read_to_string(&path) {
        Ok(text) => Ok(normalize_value(&text)),
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => {
            Err(SnapError::UnknownKey { key: key.to_owned(), path })
        }
        Err(source) => Err(SnapError::Read { path, source }),
    }
}

fn read_optional(root: &ProcRoot, key: &str) -> Result<Option<String>> {
    match read(root, key) {
        Ok(value) => Ok(Some(value)),
        Err(SnapError::UnknownKey { .. }) => Ok(None),
        Err(err) => Err(err),
    }
}

/// The file behind a key: `net.ipv4.tcp_rmem` -> `<root>/sys/net/ipv4/tcp_rmem`.
///
/// Like sysctl(8), a key may use `/` as separator, which is how names containing dots are written
/// (`net/ipv4/conf/eth0.100/forwarding`).
pub fn key_path(root: &ProcRoot, key: &str) -> Result<PathBuf> {
    let key = normalize_key(key)?;
    let relative = if key.contains('/') { key } else { key.replace('.', "/") };
    Ok(root.path("sys").join(relative))
}

/// Checks a key and returns it in dotted form when it had no dots in names.
fn normalize_key(key: &str) -> Result<String> {
    let invalid = |reason| SnapError::InvalidKey { key: key.to_owned(), reason };
    if key.is_empty() {
        return Err(invalid("empty key"));
    }
    if !key.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '/' | '_' | '-')) {
        return Err(invalid("keys contain only letters, digits, '.', '/', '_' and '-'"));
    }
    let separator = if key.contains('/') { '/' } else { '.' };
    if key.split(separator).any(|part| part.is_empty() || part == "..") {
        return Err(invalid("empty or '..' component"));
    }
    Ok(key.trim_start_matches('/').to_owned())
}

/// Values as sysctl(8) prints them: runs of whitespace (the kernel uses tabs) become one space.
pub(crate) fn normalize_value(text: &str) -> String {
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}

fn is_glob(pattern: &str) -> bool {
    pattern.contains(['*', '?'])
}

/// All keys (with their files) under `<root>/sys` matching `pattern`, walking only below its
/// literal prefix.
fn expand_glob(root: &ProcRoot, pattern: &str) -> Vec<(String, PathBuf)> {
    let literal: Vec<&str> = pattern.split('.').take_while(|part| !is_glob(part)).collect();
    let start = literal.iter().fold(root.path("sys"), |dir, part| dir.join(part));
    let mut keys = Vec::new();
    walk_keys(&start, &literal.join("."), &mut keys);
    keys.retain(|(key, _)| glob_match(pattern.as_bytes(), key.as_bytes()));
    keys.sort();
    keys
}

fn walk_keys(dir: &Path, prefix: &str, keys: &mut Vec<(String, PathBuf)>) {
    let Ok(entries) = std::fs::read_dir(dir) else { return };
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let key = if prefix.is_empty() { name } else { format!("{prefix}.{name}") };
        match entry.file_type() {
            Ok(kind) if kind.is_dir() => walk_keys(&entry.path(), &key, keys),
            Ok(_) => keys.push((key, entry.path())),
            Err(_) => {}
        }
    }
}

/// `*` matches any run of characters (dots included, so `net.ipv4.*` is everything below),
/// `?` one character.
fn glob_match(pattern: &[u8], text: &[u8]) -> bool {
    let (mut p, mut t) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while t < text.len() {
        if p < pattern.len() && (pattern[p] == b'?' || pattern[p] == text[t]) {
            p += 1;
            t += 1;
        } else if p < pattern.len() && pattern[p] == b'*' {
            star = Some((p, t));
            p += 1;
        } else if let Some((star_p, star_t)) = star {
            p = star_p + 1;
            t = star_t + 1;
            star = Some((star_p, star_t + 1));
        } else {
            return false;
        }
    }
    pattern[p..].iter().all(|&c| c == b'*')
}

/// One key that differs between two snapshots.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct SysctlChange {
    pub key: String,
    /// Value in the first snapshot (`None`: the key was not recorded there).
    pub before: Option<String>,
    /// Value in the second snapshot.
    pub after: Option<String>,
}

/// Keys whose value differs between `before` and `after`, sorted by key.
pub fn diff(before: &[(String, String)], after: &[(String, String)]) -> Vec<SysctlChange> {
    let before: BTreeMap<&str, &str> =
        before.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let after: BTreeMap<&str, &str> = after.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let mut keys: Vec<&str> = before.keys().chain(after.keys()).copied().collect();
    keys.sort_unstable();
    keys.dedup();
    keys.into_iter()
        .filter(|key| before.get(key) != after.get(key))
        .map(|key| SysctlChange {
            key: key.to_owned(),
            before: before.get(key).map(|v| (*v).to_owned()),
            after: after.get(key).map(|v| (*v).to_owned()),
        })
        .collect()
}

/// Reads the sysctls stored in a snapshot JSON file: the output of `peel snap --format json` or
/// `peel sysctl get --format json` (an object with a `sysctls` array of `{key, value}`), or a bare
/// array of `{key, value}`.
pub fn load_snapshot_file(path: &Path) -> Result<Vec<(String, String)>> {
    let bad = |message: String| SnapError::SnapshotFile { path: path.to_owned(), message };
    let text = crate::proc_root::read_path(path)?;
    let json: serde_json::Value =
        serde_json::from_str(&text).map_err(|err| bad(err.to_string()))?;
    let list = match &json {
        serde_json::Value::Array(items) => items,
        serde_json::Value::Object(map) => match map.get("sysctls") {
            Some(serde_json::Value::Array(items)) => items,
            _ => return Err(bad("no \"sysctls\" array (is this a peel snapshot?)".to_owned())),
        },
        _ => return Err(bad("expected an object or an array".to_owned())),
    };
    let mut values = Vec::with_capacity(list.len());
    for (index, item) in list.iter().enumerate() {
        let key = item.get("key").and_then(|v| v.as_str());
        let value = item.get("value").and_then(|v| v.as_str());
        match (key, value) {
            (Some(key), Some(value)) => values.push((key.to_owned(), value.to_owned())),
            _ => return Err(bad(format!("sysctls[{index}] lacks a string \"key\" or \"value\""))),
        }
    }
    Ok(values)
}

/// Turns `(key, value)` pairs into records of snapshot `snap_id`.
pub fn to_records(snap_id: u64, values: &[(String, String)]) -> Vec<SysctlRecord> {
    values
        .iter()
        .map(|(key, value)| SysctlRecord { snap_id, key: key.clone(), value: value.clone() })
        .collect()
}

/// Splits `key=value` (the value may contain spaces and `=`).
pub fn parse_assignment(arg: &str) -> Result<(String, String)> {
    let Some((key, value)) = arg.split_once('=') else {
        return Err(SnapError::InvalidAssignment { arg: arg.to_owned() });
    };
    let key = normalize_key(key.trim())?;
    Ok((key, normalize_value(value)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn glob_matching() {
        let cases = [
            ("net.ipv4.*", "net.ipv4.tcp_rmem", true),
            ("net.ipv4.*", "net.ipv4.conf.all.forwarding", true),
            ("net.ipv4.*", "net.ipv6.conf.all.forwarding", false),
            ("net.ipv4.tcp_keepalive_*", "net.ipv4.tcp_keepalive_time", true),
            ("net.ipv4.tcp_keepalive_*", "net.ipv4.tcp_fin_timeout", false),
            ("net.core.?omaxconn", "net.core.somaxconn", true),
            ("*.somaxconn", "net.core.somaxconn", true),
            ("net.*.somaxconn", "net.core.rmem_max", false),
        ];
        for (pattern, key, expected) in cases {
            assert_eq!(
                glob_match(pattern.as_bytes(), key.as_bytes()),
                expected,
                "{pattern} vs {key}"
            );
        }
    }

    #[test]
    fn keys_are_checked() {
        assert!(normalize_key("net.core.somaxconn").is_ok());
        assert!(normalize_key("net/ipv4/conf/eth0.100/forwarding").is_ok());
        for bad in
            ["", "net..core", "net.core.", "../etc/passwd", "net/../../etc", "net.core.x y", "a;b"]
        {
            assert!(matches!(normalize_key(bad), Err(SnapError::InvalidKey { .. })), "{bad:?}");
        }
    }

    #[test]
    fn assignments_and_values() {
        assert_eq!(
            parse_assignment("net.ipv4.ip_local_port_range=1024   65000").ok(),
            Some(("net.ipv4.ip_local_port_range".to_owned(), "1024 65000".to_owned()))
        );
        assert!(matches!(
            parse_assignment("net.core.somaxconn"),
            Err(SnapError::InvalidAssignment { .. })
        ));
        assert_eq!(normalize_value("4096\t131072\t6291456\n"), "4096 131072 6291456");
    }

    #[test]
    fn diff_reports_changed_added_removed() {
        let a = vec![
            ("a".to_owned(), "1".to_owned()),
            ("b".to_owned(), "2".to_owned()),
            ("c".to_owned(), "3".to_owned()),
        ];
        let b = vec![
            ("a".to_owned(), "1".to_owned()),
            ("b".to_owned(), "5".to_owned()),
            ("d".to_owned(), "4".to_owned()),
        ];
        let changes = diff(&a, &b);
        let keys: Vec<(&str, Option<&str>, Option<&str>)> = changes
            .iter()
            .map(|c| (c.key.as_str(), c.before.as_deref(), c.after.as_deref()))
            .collect();
        assert_eq!(
            keys,
            vec![("b", Some("2"), Some("5")), ("c", Some("3"), None), ("d", None, Some("4"))]
        );
    }
}
