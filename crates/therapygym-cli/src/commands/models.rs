use std::process::ExitCode;

use therapygym_models::home;

use crate::cli::ModelsArgs;
use crate::ui;

pub fn run(a: ModelsArgs) -> anyhow::Result<ExitCode> {
    let s = home::embedded_status();
    // Exit 1 when the default model cannot be used (missing, or its checksum differs).
    let code = if s.installed && s.checksum_ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    };
    if a.json {
        ui::json(&s);
        return Ok(code);
    }
    ui::out("embedded (the default model spec): SmolLM2-135M-Instruct, Q4_1 GGUF, via llama.cpp");
    ui::out(&format!("  path:     {}", s.path.display()));
    match (s.installed, s.checksum_ok) {
        (true, true) => {
            ui::out(&format!("  size:     {} bytes", s.size_bytes.unwrap_or(0)));
            ui::out(&format!(
                "  sha256:   {} (verified)",
                s.sha256.as_deref().unwrap_or("")
            ));
        }
        (true, false) => {
            ui::out(&format!("  size:     {} bytes", s.size_bytes.unwrap_or(0)));
            ui::out(&format!(
                "  sha256:   {} (MISMATCH: expected {})",
                s.sha256.as_deref().unwrap_or("?"),
                s.expected_sha256
            ));
            ui::out(&format!(
                "  fix:      delete the file and run {}",
                s.install_hint
            ));
        }
        _ => {
            ui::out("  status:   not installed");
            ui::out(&format!("  install:  {}", s.install_hint));
        }
    }
    ui::out(
        "Other specs: gguf:PATH (any local GGUF), openai:MODEL@BASE_URL[#key=VAR] (vLLM, SGLang, llama.cpp",
    );
    ui::out(
        "  server, Ollama, OpenAI; the key from $VAR, else THERAPYGYM_API_KEY / OPENAI_API_KEY for https URLs),",
    );
    ui::out("  scripted:MODE (tests only).");
    Ok(code)
}
