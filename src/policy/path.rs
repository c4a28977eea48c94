//! The form of a request path that rules are matched against.

use std::borrow::Cow;

/// The URI to forward once rules are in force: the normalized path (so the upstream serves what
/// the rules judged) with the query untouched. `Err` for encoded or backslash separators, which
/// upstreams disagree on and which would let one path be judged as another.
pub fn canonical_uri(uri: &http::Uri) -> Result<Option<http::Uri>, crate::error::Reject> {
    use crate::error::Reject;
    let path = uri.path();
    let lower = path.to_ascii_lowercase();
    if path.contains('\\') || lower.contains("%2f") || lower.contains("%5c") {
        return Err(Reject::BadPath);
    }
    let Cow::Owned(normalized) = normalize_path(path) else {
        return Ok(None);
    };
    let path_and_query = match uri.query() {
        Some(query) => format!("{normalized}?{query}"),
        None => normalized,
    };
    let mut parts = uri.clone().into_parts();
    parts.path_and_query = Some(path_and_query.parse().map_err(|_| Reject::BadPath)?);
    http::Uri::from_parts(parts)
        .map(Some)
        .map_err(|_| Reject::BadPath)
}

/// Normalizes a request path the way an upstream is likely to before routing, so that a rule
/// cannot be sidestepped with an equivalent spelling (`/public/../admin`, `//admin`,
/// `/%61dmin`):
/// - percent-encoded unreserved characters (`A-Z a-z 0-9 - . _ ~`) are decoded (RFC 3986
///   §6.2.2.2); other escapes, `%2F` included, stay as they are;
/// - runs of `/` become one `/`;
/// - `.` and `..` segments are removed (RFC 3986 §5.2.4), never climbing above `/`.
///
/// A path that does not start with `/` (`*`, or an authority-form target) is returned unchanged.
pub fn normalize_path(path: &str) -> Cow<'_, str> {
    if !path.starts_with('/') {
        return Cow::Borrowed(path);
    }
    let decoded = decode_unreserved(path);
    let needs_work = decoded.contains("//")
        || decoded
            .split('/')
            .any(|segment| segment == "." || segment == "..");
    if !needs_work {
        return decoded;
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
            let hex = path
                .get(i + 1..i + 3)
                .and_then(|h| u8::from_str_radix(h, 16).ok());
            if let Some(byte) = hex.filter(|b| b.is_ascii_alphanumeric() || b"-._~".contains(b)) {
                out.push(char::from(byte));
                i += 3;
                continue;
            }
        }
        // Copy one whole character (the path may hold non-ASCII if the caller decoded it).
        let ch_len = path[i..].chars().next().map_or(1, char::len_utf8);
        out.push_str(&path[i..i + ch_len]);
        i += ch_len;
    }
    Cow::Owned(out)
}

#[cfg(test)]
mod tests {
    use super::normalize_path;

    #[test]
    fn equivalent_spellings_normalize_to_one_path() {
        let cases = [
            ("/", "/"),
            ("/admin", "/admin"),
            ("/admin/", "/admin/"),
            ("//admin//x", "/admin/x"),
            ("/public/../admin", "/admin"),
            ("/public/%2e%2E/admin", "/admin"),
            ("/%61dmin/./x", "/admin/x"),
            ("/../../etc", "/etc"),
            ("/a/b/..", "/a/"),
            ("/a/.", "/a/"),
            ("/..", "/"),
            ("/a%2Fb", "/a%2Fb"),
            ("/caf%C3%A9", "/caf%C3%A9"),
            ("/%zz", "/%zz"),
            ("/x%", "/x%"),
            ("*", "*"),
        ];
        for (input, want) in cases {
            assert_eq!(normalize_path(input), want, "{input}");
        }
    }
}
