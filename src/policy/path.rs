//! The form of a request path that rules are matched against, and the spellings refused because
//! some upstream would read them as a different path than the rules judged.

use crate::error::Reject;
use std::borrow::Cow;

/// What the rules judge and what the upstream gets, once a path passed [`judge`].
#[derive(Debug, PartialEq, Eq)]
pub struct JudgedPath {
    /// The URI to forward when it differs from the request's: the normalized path (so the
    /// upstream serves what the rules judged), `;` parameters kept, the query untouched.
    pub forward: Option<http::Uri>,
    /// The path rules, `%%request.path` and `/userinfo` see: normalized, parameters removed.
    pub judged: String,
}

/// Normalizes and checks a request path for rule matching (see the README's "Paths and
/// normalization" for the full list). Refused with `bad_path`:
/// - `\`, `%2F` or `%5C`: upstreams disagree on whether they separate segments;
/// - a `%` not followed by two hex digits (IIS reads `%u0061` as `a`), and encoded control
///   characters (`%00`-`%1F`, `%7F`), which some servers truncate at;
/// - `;` unless `allow_semicolons` (Java servers drop `;...` path parameters, so `/admin;x/y` is
///   `/admin/y` to them); with it, rules judge each segment without its parameters, as Tomcat
///   does, and `.;x` or `..;x` segments are refused (they climb after the parameters go);
/// - a segment ending in `.` (other than `.` and `..`, which are resolved) or in encoded
///   whitespace: Windows and some Java servers trim those, so `/admin./x` is `/admin/x` to them.
pub fn judge(uri: &http::Uri, allow_semicolons: bool) -> Result<JudgedPath, Reject> {
    let path = uri.path();
    if !path.starts_with('/') {
        // `*` (OPTIONS) or an authority-form target: nothing to normalize.
        return Ok(JudgedPath {
            forward: None,
            judged: path.to_owned(),
        });
    }
    check_escapes(path)?;
    let decoded = decode_unreserved(path);
    let has_parameters = decoded.contains(';');
    if has_parameters && !allow_semicolons {
        return Err(Reject::BadPath);
    }
    for segment in decoded.split('/') {
        check_segment(segment)?;
    }
    let forward_path = normalize_segments(&decoded);
    let judged = if has_parameters {
        let without: Vec<&str> = decoded.split('/').map(segment_name).collect();
        normalize_segments(&without.join("/")).into_owned()
    } else {
        forward_path.to_string()
    };
    let forward = if forward_path == path {
        None
    } else {
        Some(with_path(uri, &forward_path)?)
    };
    Ok(JudgedPath { forward, judged })
}

/// Without any rules, path spellings decide nothing, except that `..;` is never passed on: it is
/// the classic way to climb out of a proxy's view on Tomcat.
pub fn check_unruled(path: &str) -> Result<(), Reject> {
    if path.contains(";") && path.split('/').any(|s| s.starts_with("..;")) {
        return Err(Reject::BadPath);
    }
    Ok(())
}

fn check_escapes(path: &str) -> Result<(), Reject> {
    if path.contains('\\') {
        return Err(Reject::BadPath);
    }
    for (i, _) in path.match_indices('%') {
        let byte = escaped_byte(path, i).ok_or(Reject::BadPath)?;
        if byte == b'/' || byte == b'\\' || byte.is_ascii_control() {
            return Err(Reject::BadPath);
        }
    }
    Ok(())
}

/// The byte of the `%XX` escape at `i`, if it is one (`from_str_radix` alone would take `+1`).
fn escaped_byte(path: &str, i: usize) -> Option<u8> {
    let hex = path.get(i + 1..i + 3)?;
    if !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    u8::from_str_radix(hex, 16).ok()
}

fn segment_name(segment: &str) -> &str {
    segment.split(';').next().unwrap_or(segment)
}

fn check_segment(segment: &str) -> Result<(), Reject> {
    let name = segment_name(segment);
    if name.len() != segment.len() && (name == "." || name == "..") {
        return Err(Reject::BadPath);
    }
    let trailing_dot = name.ends_with('.') && name != "." && name != "..";
    // Raw whitespace cannot appear in a parsed URI; only its escapes can.
    let trailing_space = name.ends_with("%20") || name.ends_with("%09");
    if trailing_dot || trailing_space {
        return Err(Reject::BadPath);
    }
    Ok(())
}

fn with_path(uri: &http::Uri, path: &str) -> Result<http::Uri, Reject> {
    let path_and_query = match uri.query() {
        Some(query) => format!("{path}?{query}"),
        None => path.to_owned(),
    };
    let mut parts = uri.clone().into_parts();
    parts.path_and_query = Some(path_and_query.parse().map_err(|_| Reject::BadPath)?);
    http::Uri::from_parts(parts).map_err(|_| Reject::BadPath)
}

/// Normalizes a request path the way an upstream is likely to before routing, so that a rule
/// cannot be sidestepped with an equivalent spelling (`/public/../admin`, `//admin`,
/// `/%61dmin`):
/// - percent-encoded unreserved characters (`A-Z a-z 0-9 - . _ ~`) are decoded (RFC 3986
///   §6.2.2.2); other escapes, `%2F` included, stay, with upper-case hex digits (§6.2.2.1);
/// - runs of `/` become one `/`;
/// - `.` and `..` segments are removed (RFC 3986 §5.2.4), never climbing above `/`.
///
/// A path that does not start with `/` (`*`, or an authority-form target) is returned unchanged.
pub fn normalize_path(path: &str) -> Cow<'_, str> {
    if !path.starts_with('/') {
        return Cow::Borrowed(path);
    }
    match decode_unreserved(path) {
        Cow::Borrowed(decoded) => normalize_segments(decoded),
        Cow::Owned(decoded) => Cow::Owned(normalize_segments(&decoded).into_owned()),
    }
}

/// Collapses `//` and resolves `.` and `..` in a path that starts with `/`.
fn normalize_segments(decoded: &str) -> Cow<'_, str> {
    let needs_work = decoded.contains("//")
        || decoded
            .split('/')
            .any(|segment| segment == "." || segment == "..");
    if !needs_work {
        return Cow::Borrowed(decoded);
    }
    let trailing_slash =
        decoded.ends_with('/') || decoded.ends_with("/.") || decoded.ends_with("/..");
    let mut segments: Vec<&str> = Vec::new();
    for segment in decoded.split('/') {
        match segment {
            "" | "." => {}
            ".." => {
                segments.pop();
            }
            s => segments.push(s),
        }
    }
    let mut out = String::with_capacity(decoded.len());
    for segment in &segments {
        out.push('/');
        out.push_str(segment);
    }
    if trailing_slash || segments.is_empty() {
        out.push('/');
    }
    Cow::Owned(out)
}

fn decode_unreserved(path: &str) -> Cow<'_, str> {
    if !path.contains('%') {
        return Cow::Borrowed(path);
    }
    let bytes = path.as_bytes();
    let mut out = String::with_capacity(path.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            match escaped_byte(path, i) {
                Some(byte) if byte.is_ascii_alphanumeric() || b"-._~".contains(&byte) => {
                    out.push(char::from(byte));
                }
                Some(byte) => {
                    out.push('%');
                    out.push_str(&format!("{byte:02X}"));
                }
                None => {
                    out.push('%');
                    i += 1;
                    continue;
                }
            }
            i += 3;
            continue;
        }
        // Copy one whole character (the path may hold non-ASCII if the caller decoded it).
        let ch_len = path[i..].chars().next().map_or(1, char::len_utf8);
        out.push_str(&path[i..i + ch_len]);
        i += ch_len;
    }
    Cow::Owned(out)
}

#[cfg(test)]
mod tests;
