//! Redaction of text on its way into an evidence archive: step logs, and the URLs, paths and
//! command lines stored in a database. Captures are cut in [`crate::redact`]; this is the same
//! policy for everything that is not a packet:
//!
//! - URL paths are replaced by consistent pseudonyms (`/redacted-7`): one [`PathMap`] maps each
//!   path the same way in `exchanges.path`, `load_requests.url`, step logs, step messages and
//!   command lines, so "the slow endpoint" is still one endpoint everywhere. Query strings and
//!   fragments are dropped (they carry tokens, e-mail addresses, ids). The map is saved outside the
//!   archive, like the IP map, so the owner can map back and the recipient cannot.
//! - `Authorization`, `Proxy-Authorization`, `Cookie` and `Set-Cookie` header values are masked.
//! - With IP pseudonymization, every IPv4 address in the text (and the host of every URL) goes
//!   through the same [`IpMap`] as the captures and the database's address columns.

use std::collections::BTreeMap;
use std::fs;
use std::net::{IpAddr, Ipv4Addr};
use std::path::{Path, PathBuf};

use crate::error::{Result, StoreError};
use crate::redact::IpMap;

/// Header names whose values are masked (lower case).
const MASKED_HEADERS: &[&str] = &["authorization", "proxy-authorization", "cookie", "set-cookie"];
/// Request methods whose following token is a path.
const METHODS: &[&str] =
    &["GET", "POST", "PUT", "DELETE", "HEAD", "OPTIONS", "PATCH", "CONNECT", "TRACE"];
/// Pseudonym prefix.
const PATH_PREFIX: &str = "/redacted-";

/// A consistent mapping of URL paths to pseudonyms (`/redacted-1`, `/redacted-2`, ...).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PathMap {
    forward: BTreeMap<String, String>,
    next: u64,
}

impl PathMap {
    /// Loads a map saved by [`PathMap::save`], or an empty map if the file does not exist.
    pub fn load(path: &Path) -> Result<PathMap> {
        let text = match fs::read_to_string(path) {
            Ok(text) => text,
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => return Ok(PathMap::default()),
            Err(err) => return Err(StoreError::Io { path: path.to_path_buf(), source: err }),
        };
        let map_err = |reason: String| StoreError::IpMap { path: path.to_path_buf(), reason };
        let forward: BTreeMap<String, String> =
            serde_json::from_str(&text).map_err(|err| map_err(err.to_string()))?;
        let mut next = 0;
        for pseudo in forward.values() {
            let number = pseudo
                .strip_prefix(PATH_PREFIX)
                .and_then(|number| number.parse::<u64>().ok())
                .ok_or_else(|| map_err(format!("'{pseudo}' is not a path pseudonym")))?;
            next = next.max(number);
        }
        Ok(PathMap { forward, next })
    }

    /// Saves the map as a JSON object `{ "real path": "pseudonym" }`, mode 0600, atomically.
    pub fn save(&self, path: &Path) -> Result<()> {
        let text = serde_json::to_string_pretty(&self.forward).map_err(|err| {
            StoreError::IpMap { path: path.to_path_buf(), reason: err.to_string() }
        })?;
        crate::archive::write_file_atomically(path, text.as_bytes())
    }

    /// The pseudonym of a path (without query); `/` and `*` say nothing and stay as they are.
    pub fn pseudonym(&mut self, path: &str) -> String {
        if path.is_empty() || path == "/" || path == "*" {
            return path.to_string();
        }
        if let Some(pseudo) = self.forward.get(path) {
            return pseudo.clone();
        }
        self.next += 1;
        let pseudo = format!("{PATH_PREFIX}{}", self.next);
        self.forward.insert(path.to_string(), pseudo.clone());
        pseudo
    }

    /// Paths mapped so far.
    pub fn len(&self) -> usize {
        self.forward.len()
    }

    /// Whether no path is mapped yet.
    pub fn is_empty(&self) -> bool {
        self.forward.is_empty()
    }
}

/// Where the path map goes by default: next to the archive, never inside it.
pub fn default_path_map_path(archive: &Path) -> PathBuf {
    let mut name = archive.as_os_str().to_os_string();
    name.push(".pathmap.json");
    PathBuf::from(name)
}

/// The maps one archive's redaction uses.
#[derive(Debug)]
pub struct Scrubber<'a> {
    pub paths: &'a mut PathMap,
    /// Set when IP addresses are pseudonymized too.
    pub ips: Option<&'a mut IpMap>,
}

impl Scrubber<'_> {
    /// A request path (`/orders/42?token=x`): the path's pseudonym, the query dropped.
    pub fn path(&mut self, value: &str) -> String {
        let end = value.find(['?', '#']).unwrap_or(value.len());
        self.paths.pseudonym(&value[..end])
    }

    /// A URL (`http://10.0.0.2:8000/orders/42?x=1`): scheme and port kept, the host through the
    /// IP map (when it is an address and addresses are pseudonymized), the path as [`Self::path`].
    /// Text that is not a URL is treated as a path.
    pub fn url(&mut self, value: &str) -> String {
        let mut out = String::with_capacity(value.len());
        let consumed = self.push_url(value, &mut out);
        if consumed == 0 {
            return self.path(value);
        }
        out.push_str(&value[consumed..]);
        out
    }

    /// Redacts free text (a step log, a step message, a command line).
    pub fn text(&mut self, text: &str) -> String {
        let mut out = String::with_capacity(text.len());
        for line in text.split_inclusive('\n') {
            let masked = mask_header_line(line);
            self.scan_line(&masked, &mut out);
        }
        out
    }

    /// URLs, request lines and IPv4 addresses of one line, left to right in one pass (so nothing
    /// already replaced is replaced again).
    fn scan_line(&mut self, line: &str, out: &mut String) {
        let bytes = line.as_bytes();
        let mut copied = 0;
        let mut at = 0;
        while at < bytes.len() {
            let boundary = at == 0 || !is_word_byte(bytes[at - 1]);
            if boundary && (line[at..].starts_with("http://") || line[at..].starts_with("https://"))
            {
                out.push_str(&line[copied..at]);
                at += self.push_url(&line[at..], out);
                copied = at;
                continue;
            }
            if boundary && bytes[at].is_ascii_uppercase() {
                if let Some(method) = METHODS.iter().find(|method| {
                    line[at..].starts_with(*method) && line[at + method.len()..].starts_with(" /")
                }) {
                    let path_start = at + method.len() + 1;
                    let path_end = token_end(line, path_start);
                    out.push_str(&line[copied..path_start]);
                    out.push_str(&self.path(&line[path_start..path_end]));
                    at = path_end;
                    copied = at;
                    continue;
                }
            }
            if boundary && bytes[at].is_ascii_digit() && self.ips.is_some() {
                if let Some((ip, len)) = parse_ipv4(&line[at..]) {
                    out.push_str(&line[copied..at]);
                    out.push_str(&self.ip(IpAddr::V4(ip)).to_string());
                    at += len;
                    copied = at;
                    continue;
                }
            }
            at += 1;
            while at < bytes.len() && !line.is_char_boundary(at) {
                at += 1;
            }
        }
        out.push_str(&line[copied..]);
    }

    fn ip(&mut self, ip: IpAddr) -> IpAddr {
        match self.ips.as_deref_mut() {
            Some(map) => map.pseudonym(ip),
            None => ip,
        }
    }

    /// Writes the redacted URL starting `text` into `out`; returns the bytes of `text` it covered
    /// (0 if `text` does not start with `http://` or `https://`).
    fn push_url(&mut self, text: &str, out: &mut String) -> usize {
        let Some(scheme_len) = ["http://", "https://"]
            .iter()
            .find(|scheme| text.starts_with(**scheme))
            .map(|scheme| scheme.len())
        else {
            return 0;
        };
        let end = token_end(text, scheme_len);
        let rest = &text[scheme_len..end];
        let authority_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
        let authority = &rest[..authority_end];
        out.push_str(&text[..scheme_len]);
        // Credentials in the URL (user:secret@host) are never kept.
        let host_port = match authority.rfind('@') {
            Some(at) => {
                out.push_str("redacted@");
                &authority[at + 1..]
            }
            None => authority,
        };
        let (host, port) = split_host_port(host_port);
        match host.trim_start_matches('[').trim_end_matches(']').parse::<IpAddr>() {
            Ok(ip) if self.ips.is_some() => match self.ip(ip) {
                IpAddr::V6(v6) => out.push_str(&format!("[{v6}]")),
                IpAddr::V4(v4) => out.push_str(&v4.to_string()),
            },
            _ => out.push_str(host),
        }
        out.push_str(port);
        let path = &rest[authority_end..];
        if !path.is_empty() {
            let redacted = self.path(path);
            out.push_str(&redacted);
        }
        end
    }
}

/// `host:port` split at the port's colon (`[v6]:port` aware); the port keeps its colon.
fn split_host_port(host_port: &str) -> (&str, &str) {
    if host_port.starts_with('[') {
        return match host_port.find(']') {
            Some(close) => host_port.split_at(close + 1),
            None => (host_port, ""),
        };
    }
    match host_port.rfind(':') {
        Some(colon) if host_port[colon + 1..].bytes().all(|b| b.is_ascii_digit()) => {
            host_port.split_at(colon)
        }
        _ => (host_port, ""),
    }
}

/// End of a URL or path token: whitespace, quotes, angle brackets, or the line's end.
fn token_end(text: &str, from: usize) -> usize {
    text[from..]
        .find(|c: char| c.is_whitespace() || matches!(c, '"' | '\'' | '<' | '>' | '`'))
        .map_or(text.len(), |offset| from + offset)
}

fn is_word_byte(byte: u8) -> bool {
    byte.is_ascii_alphanumeric() || byte == b'.' || byte == b'_' || byte >= 0x80
}

/// A dotted-quad IPv4 address at the start of `text` that is not part of a longer token.
fn parse_ipv4(text: &str) -> Option<(Ipv4Addr, usize)> {
    let bytes = text.as_bytes();
    let mut octets = [0u8; 4];
    let mut at = 0;
    for (index, octet) in octets.iter_mut().enumerate() {
        if index > 0 {
            if bytes.get(at) != Some(&b'.') {
                return None;
            }
            at += 1;
        }
        let start = at;
        while at < bytes.len() && bytes[at].is_ascii_digit() && at - start < 3 {
            at += 1;
        }
        if at == start {
            return None;
        }
        *octet = text[start..at].parse().ok()?;
    }
    // 1.2.3.4.5 or 1.2.3.45678 is a version number or something else, not an address.
    match bytes.get(at) {
        Some(next) if next.is_ascii_digit() => None,
        Some(b'.') if bytes.get(at + 1).is_some_and(u8::is_ascii_digit) => None,
        _ => Some((Ipv4Addr::from(octets), at)),
    }
}

/// A header line (`Cookie: a=b`, curl's `> Authorization: Bearer x`) with its value masked.
fn mask_header_line(line: &str) -> std::borrow::Cow<'_, str> {
    let trimmed = line.trim_start_matches(['>', '<', ' ', '\t']);
    let Some(colon) = trimmed.find(':') else { return line.into() };
    let name = &trimmed[..colon];
    if !MASKED_HEADERS.iter().any(|header| name.eq_ignore_ascii_case(header)) {
        return line.into();
    }
    let value_start = line.len() - trimmed.len() + colon + 1;
    let value = &line[value_start..];
    let body = value.trim_end_matches(['\r', '\n']);
    let leading = body.len() - body.trim_start().len();
    let mut out = String::with_capacity(line.len());
    out.push_str(&line[..value_start + leading]);
    out.extend(std::iter::repeat_n('*', body.trim_start().chars().count()));
    out.push_str(&value[body.len()..]);
    out.into()
}

/// Whether an archive member is a step log (`steps/<step>.stdout|.stderr|.log`).
pub(crate) fn is_step_log(name: &str) -> bool {
    let in_steps = name.starts_with("steps/") || name.contains("/steps/");
    in_steps && [".stdout", ".stderr", ".log"].iter().any(|ext| name.ends_with(ext))
}

/// Writes the redacted copy of a step log.
pub(crate) fn redact_log(input: &Path, output: &Path, scrubber: &mut Scrubber<'_>) -> Result<()> {
    let bytes = fs::read(input).map_err(StoreError::io(input))?;
    let redacted = scrubber.text(&String::from_utf8_lossy(&bytes));
    fs::write(output, redacted).map_err(StoreError::io(output))
}

/// Text columns redacted in a database copy, and how.
const COLUMNS: &[(&str, &str, Kind)] = &[
    ("exchanges", "path", Kind::Path),
    ("load_requests", "url", Kind::Url),
    ("load_requests", "url_class", Kind::Class),
    ("load_summaries", "url_class", Kind::Class),
    ("steps", "message", Kind::Text),
    ("steps", "outputs_json", Kind::Text),
    ("commands", "argv_json", Kind::Text),
    ("findings", "title", Kind::Text),
    ("findings", "detail", Kind::Text),
    ("findings", "endpoint", Kind::Text),
];

/// IP address columns pseudonymized (with IP pseudonymization only).
const IP_COLUMNS: &[(&str, &str)] = &[
    ("connections", "client_ip"),
    ("connections", "server_ip"),
    ("sockets", "local_ip"),
    ("sockets", "remote_ip"),
];

#[derive(Debug, Clone, Copy)]
enum Kind {
    Path,
    /// A URL class: a path (`/db`) goes through the path map, a name (`checkout`) stays.
    Class,
    Url,
    Text,
    Ip,
}

/// Redacts a database copy in place: paths, URLs and free text through `scrubber`, IP columns
/// through its IP map. Returns the values changed.
pub(crate) fn redact_database(db: &Path, scrubber: &mut Scrubber<'_>) -> Result<u64> {
    let store = crate::Store::open(db, crate::Access::ReadWrite)?;
    let schema_err = |source| StoreError::Schema { path: db.to_path_buf(), source };
    let mut columns: Vec<(&str, &str, Kind)> = COLUMNS.to_vec();
    if scrubber.ips.is_some() {
        columns.extend(IP_COLUMNS.iter().map(|(table, column)| (*table, *column, Kind::Ip)));
    }
    let mut changed = 0;
    for (table, column, kind) in columns {
        let distinct = store.query(&format!(
            "SELECT DISTINCT {column} FROM {table} WHERE {column} IS NOT NULL ORDER BY 1"
        ))?;
        let mut pairs = Vec::new();
        for row in &distinct.rows {
            let Some(real) = row.first().and_then(|cell| cell.as_str()) else { continue };
            let redacted = match kind {
                Kind::Path => scrubber.path(real),
                Kind::Class if real.starts_with('/') => scrubber.path(real),
                Kind::Class => continue,
                Kind::Url => scrubber.url(real),
                Kind::Text => scrubber.text(real),
                Kind::Ip => match real.parse::<IpAddr>() {
                    Ok(ip) => scrubber.ip(ip).to_string(),
                    Err(_) => continue,
                },
            };
            if redacted != real {
                pairs.push((real.to_string(), redacted));
            }
        }
        if pairs.is_empty() {
            continue;
        }
        let connection = store.connection();
        connection
            .execute_batch(
                "CREATE OR REPLACE TEMP TABLE peel_redact_map (real VARCHAR, redacted VARCHAR)",
            )
            .map_err(schema_err)?;
        {
            let mut appender = connection.appender("peel_redact_map").map_err(schema_err)?;
            for (real, redacted) in &pairs {
                appender.append_row([real.as_str(), redacted.as_str()]).map_err(schema_err)?;
            }
            appender.flush().map_err(schema_err)?;
        }
        changed += connection
            .execute(
                &format!(
                    "UPDATE {table} SET {column} = m.redacted FROM peel_redact_map m \
                     WHERE {table}.{column} = m.real"
                ),
                [],
            )
            .map_err(schema_err)? as u64;
    }
    store.close()?;
    Ok(changed)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scrub(text: &str, with_ips: bool) -> (String, PathMap, IpMap) {
        let mut paths = PathMap::default();
        let mut ips = IpMap::default();
        let out = {
            let mut scrubber =
                Scrubber { paths: &mut paths, ips: if with_ips { Some(&mut ips) } else { None } };
            scrubber.text(text)
        };
        (out, paths, ips)
    }

    #[test]
    fn paths_map_consistently_in_urls_request_lines_and_columns() {
        let mut paths = PathMap::default();
        let mut ips = IpMap::default();
        let mut scrubber = Scrubber { paths: &mut paths, ips: Some(&mut ips) };
        assert_eq!(scrubber.path("/orders/42?token=s3cr3t"), "/redacted-1");
        assert_eq!(
            scrubber.url("http://10.0.0.2:8000/orders/42"),
            "http://240.0.0.1:8000/redacted-1"
        );
        assert_eq!(
            scrubber.url("https://user:pw@shop.example/cart#x"),
            "https://redacted@shop.example/redacted-2"
        );
        assert_eq!(scrubber.url("http://[2001:db8::1]:80/"), "http://[100::1]:80/");
        let log = "curl -s http://10.0.0.2:8000/orders/42?token=s3cr3t\n\
                   > GET /orders/42 HTTP/1.1\n\
                   > Cookie: session=abc\n\
                   < Set-Cookie: id=9; Path=/\n\
                   client 10.0.0.1 -> 10.0.0.2, version 1.2.3.4.5, Zürich 10.0.0.1\n";
        let out = scrubber.text(log);
        assert_eq!(
            out,
            "curl -s http://240.0.0.1:8000/redacted-1\n\
             > GET /redacted-1 HTTP/1.1\n\
             > Cookie: ***********\n\
             < Set-Cookie: ************\n\
             client 240.0.0.2 -> 240.0.0.1, version 1.2.3.4.5, Zürich 240.0.0.2\n"
        );
    }

    #[test]
    fn without_ip_pseudonymization_addresses_stay_and_paths_still_go() {
        let (out, paths, ips) = scrub("GET /admin?pw=1 from 192.0.2.7 http://192.0.2.8/x\n", false);
        assert_eq!(out, "GET /redacted-1 from 192.0.2.7 http://192.0.2.8/redacted-2\n");
        assert_eq!(paths.len(), 2);
        assert!(ips.is_empty());
    }

    #[test]
    fn authorization_values_are_masked_whatever_the_case() {
        let (out, _, _) = scrub("authorization: Bearer abc.def\r\nHost: shop\r\n", false);
        assert_eq!(out, "authorization: **************\r\nHost: shop\r\n");
    }

    #[test]
    fn path_map_survives_save_and_load_and_continues_numbering() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("paths.json");
        let mut map = PathMap::default();
        assert_eq!(map.pseudonym("/a"), "/redacted-1");
        assert_eq!(map.pseudonym("/"), "/");
        map.save(&file).unwrap();
        let mut loaded = PathMap::load(&file).unwrap();
        assert_eq!(loaded, map);
        assert_eq!(loaded.pseudonym("/a"), "/redacted-1");
        assert_eq!(loaded.pseudonym("/b"), "/redacted-2");
        fs::write(&file, r#"{"/a": "10.0.0.1"}"#).unwrap();
        assert!(PathMap::load(&file).is_err());
    }

    #[test]
    fn step_logs_are_recognized_by_place_and_extension() {
        assert!(is_step_log("steps/03-load.stdout"));
        assert!(is_step_log("run/steps/03-load.stderr"));
        assert!(!is_step_log("report.md"));
        assert!(!is_step_log("steps/capture.pcap"));
    }
}
