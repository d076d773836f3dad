//! Routes per listener: the names a route's `listeners` may give, each with the address its listener is bound to,
//! and which listener a request came in on ([`Arrival`]).
//!
//! A listener is known to routing by its bound address (what the accept loop puts in
//! `ferry_http::ClientInfo::listener`): it stays while the socket does, so that a reload that renames a listener
//! or changes its settings keeps its connections' requests on the right routes. Names are resolved to addresses
//! when the table is compiled; a route limited to listeners costs one comparison per listener it names, and a
//! table without such routes does not look at the request's listener at all.

use std::net::SocketAddr;

use ferry_config::{ServerConfig, MAIN_LISTENER};

/// The listeners routes may name: [`MAIN_LISTENER`] (`server.listen`) and each named `[[server.listeners]]`
/// entry, each with the address it is bound to (`None` before binding: a config being checked).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListenerNames {
    entries: Vec<(String, Option<SocketAddr>)>,
}

impl Default for ListenerNames {
    /// Only the main listener, not bound.
    fn default() -> Self {
        ListenerNames {
            entries: vec![(MAIN_LISTENER.to_owned(), None)],
        }
    }
}

impl ListenerNames {
    /// The names of `server`'s listeners, none bound: for checking a config before anything is bound.
    pub fn of_config(server: &ServerConfig) -> Self {
        ListenerNames {
            entries: server
                .listener_names()
                .into_iter()
                .map(|n| (n.to_owned(), None))
                .collect(),
        }
    }

    /// The main listener bound to `main`, and the named others bound to theirs.
    pub fn bound(main: SocketAddr, named: impl IntoIterator<Item = (String, SocketAddr)>) -> Self {
        let mut entries = vec![(MAIN_LISTENER.to_owned(), Some(main))];
        entries.extend(named.into_iter().map(|(n, a)| (n, Some(a))));
        ListenerNames { entries }
    }

    /// The names, main first.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.entries.iter().map(|(n, _)| n.as_str())
    }

    /// The address the listener `name` is bound to (`None`: not known, or not bound).
    pub fn address(&self, name: &str) -> Option<SocketAddr> {
        self.lookup(name).flatten()
    }

    /// `Some(address)` for a known name (`Some(None)` when not bound), `None` for an unknown one.
    pub(crate) fn lookup(&self, name: &str) -> Option<Option<SocketAddr>> {
        self.entries
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, addr)| *addr)
    }
}

/// Which listener a request came in on, as routing sees it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Arrival {
    /// Not known (nothing says): only routes without `listeners` can take it.
    #[default]
    Unknown,
    /// The listener bound to this address: routes without `listeners`, and those that name it.
    On(SocketAddr),
    /// The listener bound to this address, which redirects to HTTPS (`redirect_to_https`): only the routes that
    /// name it (everything else is redirected).
    OnlyNamed(SocketAddr),
}

impl Arrival {
    /// Whether a route limited to `listeners` (`None`: not limited) takes requests that came in this way.
    #[inline]
    pub(crate) fn admits(self, listeners: Option<&[SocketAddr]>) -> bool {
        match (listeners, self) {
            (None, Arrival::OnlyNamed(_)) => false,
            (None, _) => true,
            (Some(set), Arrival::On(addr) | Arrival::OnlyNamed(addr)) => set.contains(&addr),
            (Some(_), Arrival::Unknown) => false,
        }
    }
}
