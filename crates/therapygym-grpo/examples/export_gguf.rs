//! Exports a policy to GGUF for llama.cpp.
//!
//! `cargo run --release -p therapygym-grpo --example export_gguf -- OUT.gguf [TYPE] [CHECKPOINT_DIR]`
//!
//! TYPE is `q8_0` (default), `f16`, `f32` or `source`. Without a checkpoint the embedded
//! SmolLM2 weights are exported unchanged (a round-trip check of the export path).
#![expect(
    clippy::print_stdout,
    reason = "a command-line example reports on stdout"
)]

use therapygym_grpo::{ExportType, Policy, checkpoint};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let out = args
        .next()
        .ok_or("usage: export_gguf OUT.gguf [TYPE] [CHECKPOINT_DIR]")?;
    let ty = match args.next().as_deref() {
        None | Some("q8_0") => ExportType::Q8_0,
        Some("f16") => ExportType::F16,
        Some("f32") => ExportType::F32,
        Some("source") => ExportType::Source,
        Some(other) => return Err(format!("unknown export type `{other}`").into()),
    };
    let mut policy = Policy::load_default()?;
    if let Some(dir) = args.next() {
        policy = policy.with_model(checkpoint::load_model(&dir)?)?;
    }
    policy.export_gguf(&out, ty)?;
    println!("wrote {out} ({ty:?})");
    Ok(())
}
