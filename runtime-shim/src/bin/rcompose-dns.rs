//! `rcompose-dns DIR`: the names of one state root's native networks (see
//! `runtime_shim::native::dns`). A binary of its own, so that the
//! monitors, one per container, carry none of its code.

fn main() -> std::process::ExitCode {
    match std::env::args_os().nth(1) {
        Some(dir) => runtime_shim::native::dns::serve(std::path::Path::new(&dir)),
        None => {
            eprintln!("usage: rcompose-dns RECORDS-DIRECTORY");
            std::process::ExitCode::from(2)
        }
    }
}
