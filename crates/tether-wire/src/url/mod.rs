//! VSOA URL rules (docs/protocols/vsoa.md §6-7), shared by RPC routing and publish/subscribe.
//!
//! Both use the same notion of a *prefix pattern*: a pattern ending in `/`, say `/a/b/`,
//! stands for its stem `/a/b` and everything below it: `/a/b` itself and `/a/b/...`, but
//! not `/a/bc`. The pattern `/` has the empty stem and so covers every URL. Patterns
//! without a trailing slash match only themselves.
//!
//! Both indices store prefix patterns by their stem, so a lookup hashes the URL itself and
//! each stem obtained by cutting the URL at one of its `/` boundaries: O(depth) hash
//! lookups, independent of how many patterns or clients exist.

mod route;
pub mod subject;
mod subscription;

pub use route::{RouteLevel, RouteTable};
pub use subscription::SubscriptionIndex;

/// Why a URL was refused. The VSOA reaction is status 2 (ARGUMENTS).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UrlError {
    /// No URL at all.
    #[error("URL is empty")]
    Empty,
    /// The URL does not start with `/`.
    #[error("URL {0:?} does not start with '/'")]
    NoLeadingSlash(String),
    /// The URL bytes are not UTF-8.
    #[error("URL is not valid UTF-8")]
    NotUtf8,
}

/// Checks that `url` is a usable VSOA URL: non-empty UTF-8 starting with `/`.
pub fn check_url(url: &[u8]) -> Result<&str, UrlError> {
    if url.is_empty() {
        return Err(UrlError::Empty);
    }
    let s = std::str::from_utf8(url).map_err(|_| UrlError::NotUtf8)?;
    if !s.starts_with('/') {
        return Err(UrlError::NoLeadingSlash(s.chars().take(64).collect()));
    }
    Ok(s)
}

/// The URLs of the verified matching matrix of docs/protocols/vsoa.md §7 (columns of [`MATCH_MATRIX`]).
pub const MATCH_MATRIX_URLS: [&str; 9] = [
    "/", "/a", "/a/", "/ab", "/a/b", "/a/b/", "/a/b/c", "/b", "/a/bc",
];

/// The verified matching matrix of docs/protocols/vsoa.md §7, as captured from the Python, npm and C
/// implementations: each subscription with one `Y` (delivered) or `.` per URL of
/// [`MATCH_MATRIX_URLS`]. Every implementation of the rule, ours and the peers', is tested
/// against it.
pub const MATCH_MATRIX: [(&str, &str); 5] = [
    ("/", "YYYYYYYYY"),
    ("/a", ".Y......."),
    ("/a/", ".YY.YYY.Y"),
    ("/a/b/", "....YYY.."),
    ("/a/b", "....Y...."),
];

/// The URLs of [`MATCH_MATRIX_URLS`] that `row` marks as delivered.
pub fn matrix_row_urls(row: &str) -> Vec<&'static str> {
    MATCH_MATRIX_URLS
        .iter()
        .zip(row.chars())
        .filter(|(_, y)| *y == 'Y')
        .map(|(u, _)| *u)
        .collect()
}

/// Whether a subscription `pattern` receives a publish on `url` (the matrix of docs/protocols/vsoa.md §7).
///
/// ```
/// use tether_wire::url::subscription_matches;
/// assert!(subscription_matches("/a/", "/a"));
/// assert!(subscription_matches("/a/", "/a/b/c"));
/// assert!(!subscription_matches("/a/", "/ab"));
/// assert!(!subscription_matches("/a", "/a/b"));
/// assert!(subscription_matches("/", "/anything"));
/// ```
pub fn subscription_matches(pattern: &str, url: &str) -> bool {
    match pattern_stem(pattern) {
        Pattern::Exact(p) => p == url,
        Pattern::Prefix(stem) => {
            url.starts_with(stem) && (url.len() == stem.len() || url.as_bytes()[stem.len()] == b'/')
        }
    }
}

/// A pattern split into its kind and the string the indices key it by.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Pattern<'a> {
    /// Matches only this exact URL.
    Exact(&'a str),
    /// Matches the stem and everything below it.
    Prefix(&'a str),
}

pub(crate) fn pattern_stem(pattern: &str) -> Pattern<'_> {
    match pattern.strip_suffix('/') {
        Some(stem) => Pattern::Prefix(stem),
        None => Pattern::Exact(pattern),
    }
}

/// The stems a URL falls under, longest first (the order of prefix route lookup): the URL itself, then the URL cut before each
/// `/`, ending with the empty stem (the `/` pattern) when the URL starts with `/`.
pub fn stems(url: &str) -> impl Iterator<Item = &str> {
    std::iter::once(url).chain(
        url.bytes()
            .enumerate()
            .rev()
            .filter(|&(_, b)| b == b'/')
            // '/' is ASCII, so every cut is on a char boundary.
            .map(move |(i, _)| &url[..i]),
    )
}

#[cfg(test)]
mod tests;
