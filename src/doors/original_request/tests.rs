use super::*;
use http::HeaderValue;
use OriginalRequestSource::*;

fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
    let mut map = HeaderMap::new();
    for (name, value) in pairs {
        map.append(*name, HeaderValue::from_str(value).unwrap());
    }
    map
}

fn run(source: OriginalRequestSource, pairs: &[(&'static str, &str)]) -> Result<Original, Reject> {
    let uri: Uri = "/_claimgate?ignored=1".parse().unwrap();
    parse(source, None, &Method::GET, &uri, &headers(pairs))
}

fn ok(source: OriginalRequestSource, pairs: &[(&'static str, &str)]) -> (String, String) {
    let original = run(source, pairs).unwrap();
    (original.method.to_string(), original.uri.to_string())
}

fn refused(source: OriginalRequestSource, pairs: &[(&'static str, &str)]) -> &'static str {
    match run(source, pairs) {
        Err(Reject::BadOriginalRequest(what)) => what,
        other => panic!("expected bad_original_request for {pairs:?}, got {other:?}"),
    }
}

#[test]
fn x_forwarded_reads_method_and_uri_with_query() {
    let got = ok(
        XForwarded,
        &[
            ("x-forwarded-method", "POST"),
            ("x-forwarded-uri", "/api/x?access_token=t&y=1"),
            ("x-forwarded-proto", "https"),
            ("x-forwarded-host", "app.example.com:8443"),
        ],
    );
    assert_eq!(got, ("POST".into(), "/api/x?access_token=t&y=1".into()));
}

#[test]
fn each_convention_ignores_the_others_headers() {
    let all = [
        ("x-forwarded-method", "DELETE"),
        ("x-forwarded-uri", "/forwarded"),
        ("x-original-method", "PUT"),
        ("x-original-uri", "/original-uri"),
        ("x-original-url", "https://h/original-url"),
    ];
    assert_eq!(ok(XForwarded, &all), ("DELETE".into(), "/forwarded".into()));
    assert_eq!(
        ok(XOriginalUri, &all),
        ("PUT".into(), "/original-uri".into())
    );
    assert_eq!(
        ok(XOriginalUrl, &all),
        ("PUT".into(), "/original-url".into())
    );
    assert_eq!(
        refused(XOriginalUri, &all[..2]),
        "X-Original-Method is missing"
    );
    assert_eq!(
        refused(XForwarded, &all[2..]),
        "X-Forwarded-Method is missing"
    );
}

#[test]
fn missing_method_or_target_is_refused() {
    assert_eq!(
        refused(XForwarded, &[("x-forwarded-uri", "/a")]),
        "X-Forwarded-Method is missing"
    );
    assert_eq!(
        refused(XForwarded, &[("x-forwarded-method", "GET")]),
        "X-Forwarded-Uri is missing"
    );
    assert_eq!(
        refused(XOriginalUri, &[("x-original-method", "GET")]),
        "X-Original-URI is missing"
    );
    assert_eq!(
        refused(XOriginalUrl, &[("x-original-method", "GET")]),
        "X-Original-URL is missing"
    );
}

#[test]
fn malformed_targets_are_refused() {
    for target in [
        "api/x",
        "",
        "*",
        "http://h/x",
        "/a%zz",
        "/a%4",
        "/a?b=%",
        "/a#frag",
        "/a b",
    ] {
        let got = run(
            XOriginalUri,
            &[("x-original-method", "GET"), ("x-original-uri", target)],
        );
        assert!(
            matches!(got, Err(Reject::BadOriginalRequest(_))),
            "{target:?}: {got:?}"
        );
    }
}

#[test]
fn x_original_url_must_be_absolute_http_or_https() {
    let get = |url: &str| {
        run(
            XOriginalUrl,
            &[("x-original-method", "GET"), ("x-original-url", url)],
        )
        .map(|o| o.uri.to_string())
    };
    assert_eq!(get("https://app.example.com/a/b?c=1").unwrap(), "/a/b?c=1");
    assert_eq!(get("HTTP://app:80").unwrap(), "/");
    assert_eq!(get("http://app?c=1").unwrap(), "/?c=1");
    for url in [
        "//host/x",
        "/x",
        "ftp://h/x",
        "http:///x",
        "http://",
        "https:/h/x",
        "http://h/%g0",
    ] {
        assert!(
            matches!(get(url), Err(Reject::BadOriginalRequest(_))),
            "{url:?}"
        );
    }
}

#[test]
fn values_over_8_kib_and_doubled_headers_are_refused() {
    let long = format!("/{}", "a".repeat(MAX_VALUE_BYTES));
    assert!(refused(
        XOriginalUri,
        &[("x-original-method", "GET"), ("x-original-uri", &long)]
    )
    .contains("8 KiB"));
    assert!(refused(
        XOriginalUri,
        &[
            ("x-original-method", "GET"),
            ("x-original-uri", "/public"),
            ("x-original-uri", "/admin"),
        ]
    )
    .contains("twice"));
}

#[test]
fn bad_forwarded_proto_host_or_method_are_refused() {
    let base = [("x-forwarded-method", "GET"), ("x-forwarded-uri", "/a")];
    let with = |extra: (&'static str, &'static str)| {
        let mut pairs = base.to_vec();
        pairs.push(extra);
        refused(XForwarded, &pairs)
    };
    with(("x-forwarded-proto", "gopher"));
    let mut websocket = base.to_vec();
    websocket.push(("x-forwarded-proto", "wss"));
    assert!(run(XForwarded, &websocket).is_ok());
    with(("x-forwarded-host", "a b"));
    let bad_method = [("x-forwarded-method", "GE T"), ("x-forwarded-uri", "/a")];
    refused(XForwarded, &bad_method);
}

#[test]
fn subrequest_uses_its_own_method_and_path_minus_the_prefix() {
    let judge = |target: &str| {
        let uri: Uri = target.parse().unwrap();
        let original = parse(
            Subrequest,
            Some("/_authz"),
            &Method::PATCH,
            &uri,
            &HeaderMap::new(),
        )
        .unwrap();
        assert_eq!(original.method, Method::PATCH);
        original.uri.to_string()
    };
    assert_eq!(judge("/_authz/api/x?y=1"), "/api/x?y=1");
    assert_eq!(judge("/_authz"), "/");
    assert_eq!(judge("/_authz?y=1"), "/?y=1");
    // Only whole segments are a prefix; anything else is judged as sent.
    assert_eq!(judge("/_authzfoo/x"), "/_authzfoo/x");
    assert_eq!(judge("/api/x"), "/api/x");
    // Stripped first, normalized later by the decision: the dot segments stay for it to judge.
    assert_eq!(
        judge("/_authz/a/../admin"),
        "/_authz/a/../admin".replacen("/_authz", "", 1)
    );
}
