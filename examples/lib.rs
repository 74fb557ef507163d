//! Tether's examples: the programs are in this folder, one per use (see the README's
//! "Examples" section); this library is empty. `cargo run -p tether-examples --example NAME`.
