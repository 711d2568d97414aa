//! Any text as a playbook: resolving it (with and without a `--set`) must never panic, and what
//! comes out must render: every diagnostic with its location, or a plan as JSON and one summary
//! line per step, as `peel validate`, `peel plan` and `peel run` show them.
#![no_main]

use std::path::Path;

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let file = Path::new("fuzz.toml");
    for overrides in [&[][..], &[("port".to_string(), "1.5s".to_string())][..]] {
        match peel_playbook_spec::resolve(file, &text, overrides) {
            Ok(plan) => {
                let json = serde_json::to_string(&plan).expect("a plan always serializes");
                assert!(!json.is_empty());
                for stage in &plan.stages {
                    for step in &stage.steps {
                        let _ = step.action.summary();
                    }
                    for guard in &stage.guards {
                        let _ = guard.expect.to_string();
                    }
                }
            }
            Err(diagnostics) => {
                assert!(!diagnostics.0.is_empty(), "an error without a diagnostic");
                let _ = diagnostics.to_string();
            }
        }
    }
});
