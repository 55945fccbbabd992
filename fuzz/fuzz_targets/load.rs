//! Any bytes given to the loader as a compose file must give a project or
//! diagnostics, never a panic.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let dir = std::env::temp_dir().join("rcompose-fuzz-project");
    let _ = std::fs::create_dir_all(&dir);
    let mut env = indexmap::IndexMap::new();
    env.insert("HOME".to_string(), "/home/fuzz".to_string());
    env.insert("TAG".to_string(), "1.0".to_string());
    if let Ok(loaded) = orchestrator::loader::load_from_str(text, &dir, env) {
        // Rendering must not fail either.
        let options = orchestrator::output::RenderOptions {
            escape_dollars: true,
        };
        let _ = orchestrator::output::to_json(&loaded.project, options);
        let _ = orchestrator::output::to_yaml(&loaded.project, options);
    }
});
