//! The real peers as clients of `tether serve`: Python vsoa 1.0.4 and npm vsoa 1.5.1.
//! Each scenario is a script in interop/ that checks what it receives and prints OK.

mod common;

use common::*;

macro_rules! scenarios {
    ($runner:ident: $($name:ident),*) => {$(
        #[tokio::test]
        async fn $name() {
            let server = tether_serve(&["--password", "pw"]).await;
            $runner(server.port, stringify!($name)).await;
        }
    )*};
}

mod python {
    use super::*;
    scenarios!(python_client: login, rpc, in_flight, matrix, order, datagram, binary_publish, quick, stream);
}

mod npm {
    use super::*;
    scenarios!(npm_client: login, rpc, in_flight, matrix, order, datagram, quick);
}
