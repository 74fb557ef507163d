//! RPC route lookup: exact path first, then the longest prefix pattern, then `/`.

use std::collections::HashMap;

use super::{pattern_stem, stems, Pattern};

/// Which kind of route served a URL.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RouteLevel<'u> {
    /// A route for exactly this URL.
    Exact,
    /// A prefix route, by its stem (`""` for the `/` route).
    Prefix(&'u str),
}

/// Maps route patterns to handlers.
///
/// A pattern without a trailing slash serves only that URL; `/a/b/` serves `/a/b` and
/// everything under `/a/b/`; `/` is the default for every URL. An exact route beats every
/// prefix route and a longer prefix beats a shorter one, which is the C and npm servers'
/// behaviour (not Python 1.0.4's, whose prefix routes are broken; docs/protocols/vsoa.md §16.1).
///
/// ```
/// use tether_wire::url::RouteTable;
/// let mut t = RouteTable::new();
/// t.insert("/", "default");
/// t.insert("/files/", "files");
/// t.insert("/files/readme", "readme");
/// assert_eq!(t.lookup("/files/readme"), Some(&"readme"));
/// assert_eq!(t.lookup("/files/a/b"), Some(&"files"));
/// assert_eq!(t.lookup("/files"), Some(&"files"));
/// assert_eq!(t.lookup("/filesystem"), Some(&"default"));
/// ```
#[derive(Debug, Clone)]
pub struct RouteTable<T> {
    exact: HashMap<Box<str>, T>,
    prefix: HashMap<Box<str>, T>,
}

impl<T> Default for RouteTable<T> {
    fn default() -> Self {
        RouteTable {
            exact: HashMap::new(),
            prefix: HashMap::new(),
        }
    }
}

impl<T> RouteTable<T> {
    /// An empty table.
    pub fn new() -> Self {
        Self::default()
    }

    /// Registers `value` for `pattern`, returning the value it replaces.
    pub fn insert(&mut self, pattern: &str, value: T) -> Option<T> {
        match pattern_stem(pattern) {
            Pattern::Exact(p) => self.exact.insert(p.into(), value),
            Pattern::Prefix(stem) => self.prefix.insert(stem.into(), value),
        }
    }

    /// Removes the route registered for exactly `pattern`.
    pub fn remove(&mut self, pattern: &str) -> Option<T> {
        match pattern_stem(pattern) {
            Pattern::Exact(p) => self.exact.remove(p),
            Pattern::Prefix(stem) => self.prefix.remove(stem),
        }
    }

    /// The value serving `url`, if any.
    pub fn lookup(&self, url: &str) -> Option<&T> {
        if let Some(v) = self.exact.get(url) {
            return Some(v);
        }
        if self.prefix.is_empty() {
            return None;
        }
        stems(url).find_map(|stem| self.prefix.get(stem))
    }

    /// Like [`RouteTable::lookup`], with the level that matched: what federation needs to
    /// know whether a more specific route may exist elsewhere.
    pub fn lookup_level<'u>(&self, url: &'u str) -> Option<(RouteLevel<'u>, &T)> {
        if let Some(v) = self.exact.get(url) {
            return Some((RouteLevel::Exact, v));
        }
        if self.prefix.is_empty() {
            return None;
        }
        stems(url).find_map(|stem| self.prefix.get(stem).map(|v| (RouteLevel::Prefix(stem), v)))
    }

    /// Every registered pattern (prefix patterns with their trailing `/`), in no order.
    pub fn patterns(&self) -> impl Iterator<Item = String> + '_ {
        self.exact
            .keys()
            .map(|k| k.to_string())
            .chain(self.prefix.keys().map(|stem| format!("{stem}/")))
    }

    /// Number of routes.
    pub fn len(&self) -> usize {
        self.exact.len() + self.prefix.len()
    }

    /// Whether no route is registered.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}
