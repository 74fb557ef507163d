//! The verified matching matrix of docs/protocols/vsoa.md §7 and the routing rules of §6.

use proptest::prelude::*;

use super::*;

const URLS: [&str; 9] = MATCH_MATRIX_URLS;
const MATRIX: [(&str, &str); 5] = MATCH_MATRIX;

#[test]
fn subscription_matrix_of_the_spec() {
    for (sub, row) in MATRIX {
        for (url, want) in URLS.iter().zip(row.chars()) {
            assert_eq!(
                subscription_matches(sub, url),
                want == 'Y',
                "subscription {sub} vs url {url}"
            );
        }
    }
}

#[test]
fn subscription_index_agrees_with_the_matrix() {
    let mut idx = SubscriptionIndex::new();
    for (client, (sub, _)) in MATRIX.iter().enumerate() {
        assert!(idx.subscribe(client, sub));
    }
    let mut out = Vec::new();
    for (col, url) in URLS.iter().enumerate() {
        idx.matching(url, &mut out);
        let want: Vec<usize> = MATRIX
            .iter()
            .enumerate()
            .filter(|(_, (_, row))| row.as_bytes()[col] == b'Y')
            .map(|(i, _)| i)
            .collect();
        assert_eq!(out, want, "url {url}");
        assert_eq!(idx.is_subscribed(url), !want.is_empty());
    }
}

#[test]
fn index_bookkeeping() {
    let mut idx = SubscriptionIndex::new();
    assert!(idx.subscribe(7u32, "/a/"));
    assert!(!idx.subscribe(7, "/a/"), "duplicate");
    assert!(idx.subscribe(7, "/a/b"));
    assert!(idx.subscribe(8, "/a/"));
    let mut out = Vec::new();
    idx.matching("/a/b", &mut out);
    assert_eq!(out, vec![7, 8], "client 7 matches twice but is listed once");
    assert!(idx.client_is_subscribed(7, "/a/x"));
    assert!(!idx.client_is_subscribed(9, "/a/x"));
    assert_eq!(idx.count_of(7), 2);
    assert!(idx.unsubscribe(8, "/a/"));
    assert!(!idx.unsubscribe(8, "/a/"), "already gone");
    assert_eq!(idx.remove_client(7), 2);
    assert!(idx.is_empty());
    idx.matching("/a/b", &mut out);
    assert!(out.is_empty());
    assert!(!idx.is_subscribed("/a/b"));
}

#[test]
fn routing_prefers_exact_then_longest_prefix_then_root() {
    let mut t = RouteTable::new();
    assert!(t.lookup("/x").is_none());
    t.insert("/a/b/", "ab-prefix");
    t.insert("/a/", "a-prefix");
    t.insert("/a/b", "ab-exact");
    assert_eq!(t.lookup("/a/b"), Some(&"ab-exact"));
    assert_eq!(t.lookup("/a/b/"), Some(&"ab-prefix"));
    assert_eq!(t.lookup("/a/b/c/d"), Some(&"ab-prefix"));
    assert_eq!(t.lookup("/a/bc"), Some(&"a-prefix"));
    assert_eq!(t.lookup("/a"), Some(&"a-prefix"));
    assert_eq!(t.lookup("/a/"), Some(&"a-prefix"));
    assert_eq!(t.lookup("/ab"), None, "no default yet");
    t.insert("/", "root");
    assert_eq!(t.lookup("/ab"), Some(&"root"));
    assert_eq!(
        t.lookup("/"),
        Some(&"root"),
        "Python crashes here; we route it"
    );
    assert_eq!(t.remove("/a/"), Some("a-prefix"));
    assert_eq!(t.lookup("/a/bc"), Some(&"root"));
    assert_eq!(t.len(), 3);
}

#[test]
fn url_checks() {
    assert_eq!(check_url(b"/ok"), Ok("/ok"));
    assert_eq!(check_url(b""), Err(UrlError::Empty));
    assert!(matches!(
        check_url(b"echo"),
        Err(UrlError::NoLeadingSlash(_))
    ));
    assert_eq!(check_url(b"/\xff\xfe"), Err(UrlError::NotUtf8));
}

fn arb_path() -> impl Strategy<Value = String> {
    proptest::collection::vec(prop_oneof!["a", "b", "ab", "", "é"], 0..5)
        .prop_flat_map(|segs| (Just(segs), any::<bool>()))
        .prop_map(|(segs, trailing)| {
            let mut s = format!("/{}", segs.join("/"));
            if trailing && !s.ends_with('/') {
                s.push('/');
            }
            s
        })
}

proptest! {
    /// The index gives exactly what the pairwise rule gives, for arbitrary patterns.
    #[test]
    fn index_equals_pairwise_rule(
        subs in proptest::collection::vec(arb_path(), 0..12),
        url in arb_path(),
    ) {
        let mut idx = SubscriptionIndex::new();
        for (i, s) in subs.iter().enumerate() { idx.subscribe(i, s); }
        let mut got = Vec::new();
        idx.matching(&url, &mut got);
        let want: Vec<usize> = subs.iter().enumerate()
            .filter(|(_, s)| subscription_matches(s, &url)).map(|(i, _)| i).collect();
        prop_assert_eq!(got, want);
    }

    /// Route lookup picks the longest matching pattern, exact beating prefix.
    #[test]
    fn route_lookup_is_longest_match(
        routes in proptest::collection::vec(arb_path(), 0..12),
        url in arb_path(),
    ) {
        let mut t = RouteTable::new();
        for r in &routes { t.insert(r, r.clone()); }
        let exact = routes.iter().find(|r| !r.ends_with('/') && *r == &url);
        let best_prefix = routes.iter()
            .filter(|r| r.ends_with('/') && subscription_matches(r, &url))
            .max_by_key(|r| r.len());
        prop_assert_eq!(t.lookup(&url), exact.or(best_prefix));
    }
}

#[test]
fn route_levels_and_patterns() {
    let mut t = RouteTable::new();
    t.insert("/", 0);
    t.insert("/a/", 1);
    t.insert("/a/b", 2);
    assert_eq!(t.lookup_level("/a/b"), Some((RouteLevel::Exact, &2)));
    assert_eq!(
        t.lookup_level("/a/c/d"),
        Some((RouteLevel::Prefix("/a"), &1))
    );
    assert_eq!(t.lookup_level("/a"), Some((RouteLevel::Prefix("/a"), &1)));
    assert_eq!(t.lookup_level("/ab"), Some((RouteLevel::Prefix(""), &0)));
    let mut p: Vec<String> = t.patterns().collect();
    p.sort();
    assert_eq!(p, ["/", "/a/", "/a/b"]);
    assert_eq!(RouteTable::<u8>::new().lookup_level("/x"), None);

    let mut idx = SubscriptionIndex::new();
    idx.subscribe(1, "/a/");
    idx.subscribe(2, "/a/");
    idx.subscribe(2, "/x");
    idx.subscribe(3, "/");
    let mut p: Vec<String> = idx.patterns().collect();
    p.sort();
    assert_eq!(p, ["/", "/a/", "/x"]);
    idx.remove_client(2);
    let mut p: Vec<String> = idx.patterns().collect();
    p.sort();
    assert_eq!(p, ["/", "/a/"]);
}
