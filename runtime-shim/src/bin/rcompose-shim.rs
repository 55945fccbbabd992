//! `rcompose-shim`: the monitor of one container of rcompose's native
//! runtime (see `runtime_shim::native::shim`).

fn main() -> std::process::ExitCode {
    runtime_shim::native::shim::main()
}
