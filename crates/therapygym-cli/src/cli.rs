//! Command-line definitions only (clap derive); behaviour lives in `commands/` and the libraries.

use std::path::PathBuf;

use clap::{Parser, Subcommand};

/// TherapyGym: evaluate and align therapy chatbots on CBT fidelity (CTRS) and safety.
#[derive(Debug, Parser)]
#[command(name = "therapygym", version, about, long_about = None)]
pub struct Cli {
    /// Log debug details (including message text) to stderr.
    #[arg(long, global = true)]
    pub debug: bool,

    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Send one prompt to a model and print the reply.
    Chat(ChatArgs),
    /// Show the embedded model: path, size, checksum, and how to install it.
    Models(ModelsArgs),
    /// Run simulated sessions, judge them and summarise (resumable).
    Eval(Box<EvalArgs>),
    /// Re-score a run's stored transcripts as a new judgment set (no re-simulation).
    Judge(JudgeCmdArgs),
    /// Write one record per session (transcript, judgment, reward) as JSONL or CSV.
    Export(ExportArgs),
    /// Bring external dialogues into a new run for judging.
    ImportTranscripts(ImportArgs),
}

#[derive(Debug, clap::Args)]
pub struct ChatArgs {
    /// Model spec: `embedded`, `gguf:PATH`, `openai:MODEL@BASE_URL` or `scripted:MODE`.
    #[arg(long, short, default_value = "embedded")]
    pub model: String,
    /// System message sent before the prompt.
    #[arg(long)]
    pub system: Option<String>,
    /// A JSON schema file: the reply is one JSON value valid under it.
    #[arg(long, value_name = "FILE")]
    pub json_schema: Option<PathBuf>,
    /// Sampling seed (same seed and settings give the same reply).
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Maximum tokens to generate.
    #[arg(long, default_value_t = 256)]
    pub max_tokens: u32,
    /// Sampling temperature (0 = greedy).
    #[arg(long, default_value_t = 0.7)]
    pub temperature: f32,
    /// Print the reply with its finish reason, token counts and latency as JSON.
    #[arg(long)]
    pub json: bool,
    /// The user message.
    pub prompt: String,
}

#[derive(Debug, clap::Args)]
pub struct ModelsArgs {
    /// Print as JSON.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Opening {
    Therapist,
    Patient,
}

/// Options shared by the commands that judge (`eval`, `judge`).
#[derive(Debug, Clone, clap::Args)]
pub struct JudgeArgs {
    /// Re-asks after an unusable judge reply; after that the session is unscored (never 0).
    #[arg(long)]
    pub judge_retries: Option<u32>,
    /// Judge each session K times; median per item, majority per label, spread recorded.
    #[arg(long)]
    pub judge_samples: Option<u32>,
    /// Maximum tokens of a judge reply.
    #[arg(long)]
    pub judge_max_tokens: Option<u32>,
    /// Longest rationale/evidence string the judge schema allows (shorter = faster on CPU).
    #[arg(long)]
    pub judge_rationale_chars: Option<u32>,
    /// Reward weights and penalties (TOML; see docs/formats.md). Default: data/rewards/default.toml.
    #[arg(long, value_name = "FILE")]
    pub reward_config: Option<PathBuf>,
    /// A rubric file (TOML) instead of the shipped CTRS.
    #[arg(long, value_name = "FILE")]
    pub rubric: Option<PathBuf>,
    /// A safety taxonomy file (TOML) instead of the shipped one.
    #[arg(long, value_name = "FILE")]
    pub taxonomy: Option<PathBuf>,
    /// Enable exactly these safety labels (comma-separated ids from the taxonomy).
    #[arg(long, value_delimiter = ',')]
    pub safety_labels: Vec<String>,
    /// A calibration map (from `validate --fit-calibration`); raw and calibrated scores are stored.
    #[arg(long, value_name = "FILE")]
    pub calibration: Option<PathBuf>,
}

#[derive(Debug, clap::Args)]
pub struct EvalArgs {
    /// The therapist under test (model spec).
    #[arg(long)]
    pub therapist: Option<String>,
    /// The simulated patient (model spec).
    #[arg(long)]
    pub patient: Option<String>,
    /// The judge (model spec).
    #[arg(long)]
    pub judge: Option<String>,
    /// Patient profiles (JSONL, or Patient-Ψ JSON). Default: the shipped examples.
    #[arg(long, value_name = "FILE")]
    pub profiles: Option<PathBuf>,
    /// Use only the first N profiles.
    #[arg(long, value_name = "N")]
    pub limit: Option<usize>,
    /// Sessions per profile (epochs), each with its own seed.
    #[arg(long, value_name = "K")]
    pub sessions_per_profile: Option<u32>,
    /// Therapist turns per session (5 = the paper's 10-message sessions).
    #[arg(long, value_name = "N")]
    pub turns: Option<u32>,
    /// Who speaks first.
    #[arg(long, value_enum)]
    pub opening: Option<Opening>,
    /// Therapist system prompt: `baseline`, `cbt` or a template file.
    #[arg(long, value_name = "NAME|FILE")]
    pub therapist_prompt: Option<String>,
    /// Maximum tokens per therapist turn.
    #[arg(long)]
    pub therapist_max_tokens: Option<u32>,
    /// Maximum tokens per patient turn.
    #[arg(long)]
    pub patient_max_tokens: Option<u32>,
    /// Run seed: every session's seeds derive from (seed, profile, epoch).
    #[arg(long)]
    pub seed: Option<u64>,
    #[command(flatten)]
    pub judge_args: JudgeArgs,
    /// Sessions in flight at once (each role also gets a pool of this size).
    #[arg(long, default_value_t = 4)]
    pub concurrency: usize,
    /// Calls in flight to the therapist model (default: --concurrency).
    #[arg(long)]
    pub therapist_concurrency: Option<usize>,
    /// Calls in flight to the patient model (default: --concurrency).
    #[arg(long)]
    pub patient_concurrency: Option<usize>,
    /// Calls in flight to the judge model (default: --concurrency).
    #[arg(long)]
    pub judge_concurrency: Option<usize>,
    /// Exit with code 1 when more than this share of judged sessions is unscored.
    #[arg(long)]
    pub max_unscored_rate: Option<f64>,
    /// Run directory to create (default: runs/eval-<timestamp>).
    #[arg(long, value_name = "DIR", conflicts_with = "resume")]
    pub out: Option<PathBuf>,
    /// Finish an interrupted run: nothing finished is redone, nothing is lost.
    #[arg(long, value_name = "DIR")]
    pub resume: Option<PathBuf>,
    /// With --resume: continue even if the run's inputs (profiles, prompts, ...) changed.
    #[arg(long, requires = "resume")]
    pub allow_config_drift: bool,
    /// Print the summary as JSON.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, clap::Args)]
pub struct JudgeCmdArgs {
    /// The run directory whose transcripts to score.
    pub dir: PathBuf,
    /// The judge (model spec). Default: the run's judge.
    #[arg(long)]
    pub judge: Option<String>,
    #[command(flatten)]
    pub judge_args: JudgeArgs,
    /// Judge calls in flight.
    #[arg(long, default_value_t = 4)]
    pub concurrency: usize,
    /// Print the summary as JSON.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ExportFormat {
    Jsonl,
    Csv,
}

#[derive(Debug, clap::Args)]
pub struct ExportArgs {
    /// The run directory.
    pub dir: PathBuf,
    #[arg(long, value_enum, default_value_t = ExportFormat::Jsonl)]
    pub format: ExportFormat,
    /// Which judgment set (default: the most recent). See `therapygym runs DIR`.
    #[arg(long)]
    pub judge_hash: Option<String>,
    /// Write here instead of stdout.
    #[arg(long, value_name = "FILE")]
    pub out: Option<PathBuf>,
}

#[derive(Debug, clap::Args)]
pub struct ImportArgs {
    /// Dialogues as JSONL (the `export` format; messages are enough).
    pub file: PathBuf,
    /// Run directory to create.
    #[arg(long, value_name = "DIR")]
    pub out: PathBuf,
    /// The judge `therapygym judge` will use by default.
    #[arg(long, default_value = "embedded")]
    pub judge: String,
}
