use super::*;

fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
    pairs
        .iter()
        .map(|(k, v)| {
            (
                http::HeaderName::from_static(k),
                http::HeaderValue::from_static(v),
            )
        })
        .collect()
}

fn sources() -> Vec<TokenSource> {
    vec![
        TokenSource::Header("Authorization".into()),
        TokenSource::Cookie("access_token".into()),
        TokenSource::Query("access_token".into()),
    ]
}

#[test]
fn the_one_token_is_found_wherever_it_is() {
    let sources = sources();
    let h = headers(&[("cookie", "a=1; access_token=ck; b=2")]);
    assert_eq!(token(&h, Some("x=1"), &sources).unwrap().0, "ck");
    let h = headers(&[("authorization", "bearer hd")]);
    assert_eq!(token(&h, None, &sources).unwrap().0, "hd");
    let h = headers(&[("authorization", "Basic dXNlcg==")]);
    let found = token(&h, Some("x=1&access_token=a%2Eb"), &sources).unwrap();
    assert_eq!(found.0, "a.b");
    assert_eq!(token(&h, None, &sources).unwrap_err(), Reject::TokenMissing);
}

#[test]
fn two_tokens_are_ambiguous_even_when_equal() {
    let sources = sources();
    let ambiguous = |h: &HeaderMap, q: Option<&str>| token(h, q, &sources).unwrap_err();
    let h = headers(&[("authorization", "Bearer a"), ("cookie", "access_token=a")]);
    assert_eq!(ambiguous(&h, None), Reject::TokenAmbiguous);
    let h = headers(&[("authorization", "Bearer a")]);
    assert_eq!(
        ambiguous(&h, Some("access_token=a")),
        Reject::TokenAmbiguous
    );
    let h = headers(&[("cookie", "access_token=a; access_token=b")]);
    assert_eq!(ambiguous(&h, None), Reject::TokenAmbiguous);
    let h = HeaderMap::new();
    assert_eq!(
        ambiguous(&h, Some("access%5Ftoken=a&access_token=b")),
        Reject::TokenAmbiguous
    );
    let mut h = headers(&[("authorization", "Bearer a")]);
    h.append("authorization", HeaderValue::from_static("Basic eA=="));
    assert_eq!(
        check_single_authorization(&h).unwrap_err(),
        Reject::TokenAmbiguous
    );
}

#[test]
fn removing_tokens_keeps_everything_else() {
    let mut h = headers(&[
        ("authorization", "Bearer a"),
        ("cookie", "a=1; access_token=ck; b=2"),
    ]);
    h.append("cookie", HeaderValue::from_static("access_token=x"));
    let mut uri: http::Uri = "/p?x=1&access_token=q&y=2".parse().unwrap();
    remove_tokens(&mut h, &mut uri, &sources());
    assert!(h.get("authorization").is_none());
    let cookies: Vec<_> = h.get_all("cookie").iter().collect();
    assert_eq!(cookies, ["a=1; b=2"]);
    assert_eq!(uri, "/p?x=1&y=2");
    let mut uri: http::Uri = "/p?access_token=q".parse().unwrap();
    remove_tokens(&mut h, &mut uri, &sources());
    assert_eq!(uri, "/p");
}

#[test]
fn a_token_with_bytes_outside_visible_ascii_is_malformed_not_missing() {
    let sources = sources();
    let malformed = Reject::Malformed("token is not visible ASCII");
    for value in [
        &b"Bearer \xffabc.def.ghi"[..],
        b"bearer a.b\xe9.c",
        b"  BEARER x.y.z\x80",
    ] {
        let mut h = HeaderMap::new();
        let value = http::HeaderValue::from_bytes(value).unwrap();
        h.insert(http::header::AUTHORIZATION, value);
        assert_eq!(token(&h, None, &sources).unwrap_err(), malformed);
    }
    // Another scheme with Latin-1 credentials is still no bearer token at all.
    let mut h = HeaderMap::new();
    let basic = http::HeaderValue::from_bytes(b"Basic caf\xe9").unwrap();
    h.insert(http::header::AUTHORIZATION, basic);
    assert_eq!(token(&h, None, &sources).unwrap_err(), Reject::TokenMissing);
    // A custom token header has no scheme: any such byte is a broken token.
    let custom = [TokenSource::Header("X-Token".into())];
    let mut h = HeaderMap::new();
    h.insert(
        "x-token",
        http::HeaderValue::from_bytes(b"a.\xff.c").unwrap(),
    );
    assert_eq!(token(&h, None, &custom).unwrap_err(), malformed);
}
