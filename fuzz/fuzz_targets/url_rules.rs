//! URL checks, route lookup and the subscription index on arbitrary strings: the index must
//! agree with the pairwise matching rule, and route lookup with the longest-match rule.
#![no_main]

use libfuzzer_sys::fuzz_target;
use tether_wire::url::{check_url, subscription_matches, RouteTable, SubscriptionIndex};

fuzz_target!(|data: &[u8]| {
    let _ = check_url(data);
    let Ok(text) = std::str::from_utf8(data) else { return };
    // Lines: patterns, the last line is the URL.
    let mut lines: Vec<&str> = text.split('\n').collect();
    let Some(url) = lines.pop() else { return };
    let mut idx = SubscriptionIndex::new();
    let mut routes = RouteTable::new();
    for (i, p) in lines.iter().enumerate() {
        idx.subscribe(i, p);
        routes.insert(p, *p);
    }
    let mut got = Vec::new();
    idx.matching(url, &mut got);
    let mut want: Vec<usize> = lines
        .iter()
        .enumerate()
        .filter(|(_, p)| subscription_matches(p, url))
        .map(|(i, _)| i)
        .collect();
    want.dedup();
    // A pattern listed twice is one subscription per client id, so ids stay distinct.
    assert_eq!(got, want);
    if let Some(found) = routes.lookup(url) {
        assert!(*found == url || (found.ends_with('/') && subscription_matches(found, url)));
    }
});
