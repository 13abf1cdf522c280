//! Command-line definitions only (clap derive); behaviour lives in `commands/` and the libraries.

use std::path::PathBuf;

use clap::builder::RangedU64ValueParser;
use clap::{Parser, Subcommand};

fn parse_shard(s: &str) -> Result<therapygym_run::Shard, String> {
    therapygym_run::Shard::parse(s).map_err(|e| e.to_string())
}

/// A count that must be at least 1 (`--concurrency 0` is an error, not "as many as possible").
pub fn at_least_one() -> RangedU64ValueParser<usize> {
    RangedU64ValueParser::new().range(1..)
}

/// TherapyGym measures how well a therapy chatbot practises CBT (CTRS fidelity) and how safely
/// it behaves: it simulates sessions with patient profiles, has a judge score them, keeps every
/// run resumable, and trains therapists on the judge's reward.
///
/// Start with `therapygym eval --limit 1 --turns 1` (all roles on the embedded model), then
/// `therapygym runs` to find the run and `therapygym export RUN_DIR` to read it.
#[derive(Debug, Parser)]
#[command(name = "therapygym", version)]
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
    /// Serve RL engines over HTTP: env-step episodes, scoring, /get_reward, the rollout driver.
    Serve(Box<ServeArgs>),
    /// Synthesise patient profiles with TreeSynth: checked, deduplicated, with a holdout (resumable).
    Synth(Box<SynthArgs>),
    /// Judge-expert agreement on a ratings file (CTRS and safety), with bootstrap CIs and calibration.
    Validate(Box<ValidateArgs>),
    /// GRPO-train a local therapist (GGUF) with the judge's reward; checkpoints, resume, GGUF export.
    Train(Box<TrainArgs>),
    /// One self-contained HTML report of one or more runs: per-item CIs, safety, reward, tokens,
    /// and each run compared with the first (paired when they share sessions, Holm-corrected).
    Report(ReportArgs),
    /// Rank therapist runs by normalised CTRS and any-violation rate, in statistical tiers.
    Leaderboard(LeaderboardArgs),
    /// Browse a run's sessions beside their scores, rationales and safety evidence (read-only web
    /// app on loopback), or `--export DIR` the same viewer as static files.
    View(ViewArgs),
    /// List the runs under a directory (default `runs`), or show one run's manifest and judgment sets.
    Runs(RunsArgs),
    /// Combine the shard runs of one `eval --shard I/N` plan into one run directory.
    Merge(MergeArgs),
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
    /// [default: 2]
    #[arg(long, value_name = "K")]
    pub judge_retries: Option<u32>,
    /// Judge each session K times; median per item, majority per label, spread recorded.
    /// [default: 1]
    #[arg(long, value_name = "K", value_parser = clap::value_parser!(u32).range(1..))]
    pub judge_samples: Option<u32>,
    /// Maximum tokens of a judge reply. [default: 2048; 1024 for a local judge (embedded, gguf:)]
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..))]
    pub judge_max_tokens: Option<u32>,
    /// Longest rationale/evidence string the judge schema allows (shorter = faster on CPU).
    /// [default: 300; 40 for a local judge (embedded, gguf:)]
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..))]
    pub judge_rationale_chars: Option<u32>,
    /// Reward weights and penalties (TOML; see docs/formats.md). [default: data/rewards/default.toml]
    #[arg(long, value_name = "FILE")]
    pub reward_config: Option<PathBuf>,
    /// The rubric: a TOML file, or a built-in name (`ctrs`, `mi` = Motivational Interviewing,
    /// MITI 4.2 structure). [default: ctrs, data/rubrics/ctrs.toml]
    #[arg(long, value_name = "FILE|NAME")]
    pub rubric: Option<PathBuf>,
    /// A safety taxonomy file (TOML) instead of the shipped one. [default: data/safety/tg-safety.toml]
    #[arg(long, value_name = "FILE")]
    pub taxonomy: Option<PathBuf>,
    /// Enable exactly these safety labels (comma-separated ids from the taxonomy).
    /// [default: the taxonomy's enabled labels]
    #[arg(long, value_delimiter = ',')]
    pub safety_labels: Vec<String>,
    /// A calibration map (from `validate --fit-calibration`): calibrated scores are stored beside
    /// raw ones, in a judgment set of their own.
    #[arg(long, value_name = "FILE")]
    pub calibration: Option<PathBuf>,
}

/// Run simulated sessions, judge them and summarise. The run directory is printed when the run
/// starts; Ctrl-C stops it cleanly (exit code 130) and `--resume DIR` finishes it.
#[derive(Debug, clap::Args)]
pub struct EvalArgs {
    /// The therapist under test (model spec).
    #[arg(long, default_value = "embedded")]
    pub therapist: String,
    /// The simulated patient (model spec).
    #[arg(long, default_value = "embedded")]
    pub patient: String,
    /// The judge (model spec).
    #[arg(long, default_value = "embedded")]
    pub judge: String,
    /// Patient profiles (JSONL, or Patient-Ψ JSON). [default: data/profiles/examples.jsonl]
    #[arg(long, value_name = "FILE")]
    pub profiles: Option<PathBuf>,
    /// Use only the first N profiles. [default: all]
    #[arg(long, value_name = "N", value_parser = at_least_one())]
    pub limit: Option<usize>,
    /// Sessions per profile (epochs), each with its own seed.
    #[arg(long, value_name = "K", default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..))]
    pub sessions_per_profile: u32,
    /// Run only the I-th of N disjoint slices of the planned sessions (by session id);
    /// `auto/N` takes I from JOB_COMPLETION_INDEX or SLURM_ARRAY_TASK_ID (0-based, I = index
    /// + 1). Combine the shards with `therapygym merge`. [default: the whole plan]
    #[arg(long, value_name = "I/N", value_parser = parse_shard)]
    pub shard: Option<therapygym_run::Shard>,
    /// Therapist turns per session (5 = the paper's 10-message sessions).
    #[arg(long, value_name = "N", default_value_t = 5, value_parser = clap::value_parser!(u32).range(1..))]
    pub turns: u32,
    /// Who speaks first.
    #[arg(long, value_enum, default_value_t = Opening::Therapist)]
    pub opening: Opening,
    /// Therapist system prompt: `baseline`, `cbt` or a template file.
    #[arg(long, value_name = "NAME|FILE", default_value = "cbt")]
    pub therapist_prompt: String,
    /// Maximum tokens per therapist turn.
    #[arg(long, value_name = "N", default_value_t = 256)]
    pub therapist_max_tokens: u32,
    /// Maximum tokens per patient turn.
    #[arg(long, value_name = "N", default_value_t = 200)]
    pub patient_max_tokens: u32,
    /// Run seed: every session's seeds derive from (seed, profile, epoch).
    #[arg(long, value_name = "S", default_value_t = 20261127)]
    pub seed: u64,
    #[command(flatten)]
    pub judge_args: JudgeArgs,
    /// Sessions in flight at once (each role also gets a pool of this size). [default: 4; on
    /// resume, the run's]
    #[arg(long, value_name = "C", value_parser = at_least_one())]
    pub concurrency: Option<usize>,
    /// Calls in flight to the therapist model. [default: --concurrency]
    #[arg(long, value_name = "C", value_parser = at_least_one())]
    pub therapist_concurrency: Option<usize>,
    /// Calls in flight to the patient model. [default: --concurrency]
    #[arg(long, value_name = "C", value_parser = at_least_one())]
    pub patient_concurrency: Option<usize>,
    /// Calls in flight to the judge model. [default: --concurrency]
    #[arg(long, value_name = "C", value_parser = at_least_one())]
    pub judge_concurrency: Option<usize>,
    /// Exit with code 1 when more than this share of judged sessions is unscored.
    #[arg(long, value_name = "X", default_value_t = 0.02)]
    pub max_unscored_rate: f64,
    /// Run directory to create. [default: runs/eval-<date>-<time>, made unique]
    #[arg(long, value_name = "DIR", conflicts_with = "resume")]
    pub out: Option<PathBuf>,
    /// Finish an interrupted run: nothing finished is redone, nothing is lost. Only the
    /// concurrency flags, --json and --allow-config-drift may be given with it.
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
    /// The judge (model spec). [default: the run's judge, with the run's judge settings; a new
    /// judge starts from its own defaults]
    #[arg(long)]
    pub judge: Option<String>,
    #[command(flatten)]
    pub judge_args: JudgeArgs,
    /// Judge calls in flight.
    #[arg(long, value_name = "C", default_value_t = 4, value_parser = at_least_one())]
    pub concurrency: usize,
    /// Exit with code 1 when more than this share of judged sessions is unscored.
    /// [default: the run's (0.02 unless it was started with another)]
    #[arg(long, value_name = "X")]
    pub max_unscored_rate: Option<f64>,
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
    /// Output format.
    #[arg(long, value_enum, default_value_t = ExportFormat::Jsonl)]
    pub format: ExportFormat,
    /// Which judgment set: its hash or a unique prefix (`therapygym runs DIR` lists them).
    /// [default: the most recent]
    #[arg(long, value_name = "HASH")]
    pub judge_hash: Option<String>,
    /// Write here instead of stdout.
    #[arg(long, value_name = "FILE")]
    pub out: Option<PathBuf>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ImportFormat {
    Jsonl,
    Csv,
}

#[derive(Debug, clap::Args)]
pub struct ImportArgs {
    /// Dialogues as JSONL (the `export` format; messages are enough), or an utterance-per-row
    /// CSV with --format csv and the column flags below (docs/formats.md).
    pub file: PathBuf,
    /// Run directory to create.
    #[arg(long, value_name = "DIR")]
    pub out: PathBuf,
    /// The judge `therapygym judge` will use by default.
    #[arg(long, default_value = "embedded")]
    pub judge: String,
    /// The file's format. [default: csv for a `.csv` file, else jsonl]
    #[arg(long, value_enum)]
    pub format: Option<ImportFormat>,
    /// CSV: the column holding the dialogue id, e.g. `--dialogue-col transcript_id`.
    #[arg(long, value_name = "COL")]
    pub dialogue_col: Option<String>,
    /// CSV: the column giving each utterance's position in its dialogue (a whole number).
    #[arg(long, value_name = "COL")]
    pub order_col: Option<String>,
    /// CSV: the column naming the speaker (mapped with --speaker-map).
    #[arg(long, value_name = "COL")]
    pub speaker_col: Option<String>,
    /// CSV: the column holding the utterance text.
    #[arg(long, value_name = "COL")]
    pub text_col: Option<String>,
    /// CSV: speaker values to roles, `VALUE=ROLE,...` with ROLE therapist or patient, e.g.
    /// `--speaker-map therapist=therapist,client=patient`; a row with any other value is an
    /// error. Repeatable.
    #[arg(long, value_name = "VALUE=ROLE,...")]
    pub speaker_map: Vec<String>,
    /// CSV: a per-dialogue label column (e.g. `quality`), constant within a dialogue; kept for
    /// `export` and `validate --known-groups`. Repeatable.
    #[arg(long, value_name = "COL")]
    pub label_col: Vec<String>,
    /// CSV: a per-utterance annotation column (e.g. a behaviour code); kept for `export` and
    /// `validate --known-groups --annotation-map`. Repeatable.
    #[arg(long, value_name = "COL")]
    pub annotation_col: Vec<String>,
}

#[derive(Debug, clap::Args)]
pub struct MergeArgs {
    /// The shard run directories (every shard 1..N of one plan, each finished).
    #[arg(value_name = "SHARD_DIR", required = true, num_args = 1..)]
    pub shards: Vec<PathBuf>,
    /// The merged run directory to create.
    #[arg(long, value_name = "DIR")]
    pub out: PathBuf,
    /// Print the result as JSON.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, clap::Args)]
pub struct RunsArgs {
    /// A directory of runs (each subdirectory one run), or one run directory.
    #[arg(value_name = "DIR", default_value = "runs")]
    pub dir: PathBuf,
    /// Print as JSON.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, clap::Args)]
pub struct ServeArgs {
    /// Address to listen on; port 0 picks a free one. The bound address is printed on stdout
    /// as `listening on http://HOST:PORT`.
    #[arg(long, default_value = "127.0.0.1:8700")]
    pub addr: String,
    /// The simulated patient (model spec).
    #[arg(long, default_value = "embedded")]
    pub patient: String,
    /// The judge (model spec).
    #[arg(long, default_value = "embedded")]
    pub judge: String,
    /// Training profiles (JSONL, or Patient-Ψ JSON) [default: the shipped examples]
    #[arg(long, value_name = "FILE")]
    pub profiles: Option<PathBuf>,
    /// Held-out profiles, for `split` = val or test. [default: the shipped held-out set]
    #[arg(long, value_name = "FILE")]
    pub holdout: Option<PathBuf>,
    /// Run directory every finished episode is written to [default: runs/serve-<timestamp>]
    #[arg(long, value_name = "DIR")]
    pub out: Option<PathBuf>,
    /// Therapist system prompt: `baseline`, `cbt` or a template file.
    #[arg(long, value_name = "NAME|FILE", default_value = "cbt")]
    pub therapist_prompt: String,
    /// Default therapist turns per episode (`limits.max_therapist_turns` overrides it).
    #[arg(long, value_name = "N", default_value_t = 5)]
    pub turns: u32,
    /// Default opening (`opening` in a request overrides it).
    #[arg(long, value_enum)]
    pub opening: Option<Opening>,
    /// Skip the patient's closing reply after the last therapist turn by default
    /// (`limits.closing_patient_reply` overrides it).
    #[arg(long)]
    pub no_closing_patient_reply: bool,
    /// Maximum tokens per patient turn.
    #[arg(long)]
    pub patient_max_tokens: Option<u32>,
    #[command(flatten)]
    pub judge_args: JudgeArgs,
    /// Idle TTL of an episode in seconds (every request refreshes it).
    #[arg(long, value_name = "S", default_value_t = 900)]
    pub ttl_s: u64,
    /// Hard lifetime of an episode in seconds.
    #[arg(long, value_name = "S", default_value_t = 7200)]
    pub max_lifetime_s: u64,
    /// Episodes and rollouts in progress at once; more get 429 `overloaded`.
    #[arg(long, default_value_t = 4096)]
    pub max_live_episodes: usize,
    /// Members per group (GRPO G): `GET /v1/groups/{id}` waits for this many.
    #[arg(long, default_value_t = 4)]
    pub group_size: u32,
    /// Largest accepted request body in bytes.
    #[arg(long, default_value_t = 4 * 1024 * 1024)]
    pub max_body_bytes: usize,
    /// What `/get_reward` answers for an unscored session: a neutral reward flagged
    /// `extra_logs.unscored = 1` (OpenRLHF cannot mask), or `error` (HTTP 422, the old behaviour).
    #[arg(long, default_value = "neutral", value_parser = ["error", "neutral"])]
    pub reward_unscored: String,
    /// The neutral reward `/get_reward` answers for an unscored session.
    #[arg(long, value_name = "X", default_value_t = 0.0)]
    pub reward_neutral_value: f64,
    /// Per-turn rewards (`turn_reward` on intermediate steps) as the reward config's
    /// `[turn_reward]` section defines them; the session reward is unchanged.
    #[arg(long)]
    pub turn_reward: bool,
    /// Chat template `/get_reward` parses `query` with.
    #[arg(long, default_value = "chatml", value_parser = ["chatml", "llama3"])]
    pub chat_format: String,
    /// Calls in flight to the patient model.
    #[arg(long, default_value_t = 8)]
    pub patient_concurrency: usize,
    /// Calls in flight to the judge model.
    #[arg(long, default_value_t = 16)]
    pub judge_concurrency: usize,
    /// Longest single judge call in seconds: a hung judge is abandoned, retried, then the
    /// episode is unscored. [default: 120; 3600 for a local judge]
    #[arg(long, value_name = "SECONDS", value_parser = clap::value_parser!(u64).range(1..))]
    pub judge_timeout_s: Option<u64>,
    /// A file holding the bearer token every route but /healthz requires (else the
    /// THERAPYGYM_SERVE_TOKEN environment variable; required when --addr is not loopback).
    #[arg(long, value_name = "FILE")]
    pub auth_token_file: Option<PathBuf>,
    /// A URL prefix `POST /v1/rollouts` may name as `policy.base_url` (repeatable); none: the
    /// rollout driver is disabled (403).
    #[arg(long, value_name = "PREFIX")]
    pub policy_url_allow: Vec<String>,
}

#[derive(Debug, clap::Args)]
pub struct SynthArgs {
    /// The model that writes the tree and the profiles (model spec) [default: embedded]
    #[arg(long, short)]
    pub model: Option<String>,
    /// Stop when this many valid, unique profiles exist (train + holdout), e.g. 13093. [default:
    /// everything the tree plans]
    #[arg(long, value_name = "N")]
    pub target: Option<usize>,
    /// Tree depth below the root (`max_depth`, default 4).
    #[arg(long, value_name = "D")]
    pub depth: Option<u32>,
    /// Sketches per node, and profiles per leaf sample set [default: 10]
    #[arg(long, value_name = "N")]
    pub samples_per_node: Option<usize>,
    /// An `infinite` dimension is asked for more values until its list exceeds this [default: 50]
    #[arg(long, value_name = "N")]
    pub max_values: Option<usize>,
    /// A value list longer than this gives one list-valued child [default: 50]
    #[arg(long, value_name = "N")]
    pub infinite_threshold: Option<usize>,
    /// A leaf generates this^k sample sets, k = list-valued nodes on its path [default: 10]
    #[arg(long, value_name = "N")]
    pub infinite_path_samples: Option<u64>,
    /// Attempts to find a valid new dimension before a node becomes a leaf [default: 5]
    #[arg(long, value_name = "N")]
    pub dimension_attempts: Option<u32>,
    /// Value-expansion replies per node, malformed ones included [default: 8]
    #[arg(long, value_name = "N")]
    pub max_expand_rounds: Option<u32>,
    /// Re-asks after an unusable profile before it is rejected [default: 2]
    #[arg(long, value_name = "N")]
    pub repair_attempts: Option<u32>,
    /// Profiles held out from training [default: 20; at most a fifth of the set]
    #[arg(long, value_name = "K")]
    pub holdout: Option<usize>,
    /// Grounding profiles shown as examples (JSONL or Patient-Ψ JSON) [default: the shipped
    /// examples]
    #[arg(long, value_name = "FILE")]
    pub seed_profiles: Option<PathBuf>,
    /// Run seed: every random choice and sampling seed derives from it [default: 20261127]
    #[arg(long, value_name = "S")]
    pub seed: Option<u64>,
    /// With --target: stop growing the tree once its leaves plan target × this many profiles
    /// [default: 1.5]
    #[arg(long, value_name = "F")]
    pub oversample: Option<f64>,
    /// Grow the tree to --depth even when fewer leaves would reach --target.
    #[arg(long)]
    pub full_tree: bool,
    /// Near-duplicate threshold: Jaccard similarity of word 3-shingles [default: 0.7]
    #[arg(long, value_name = "J")]
    pub near_dup_threshold: Option<f64>,
    /// Maximum tokens of one profile reply [default: 1024]
    #[arg(long, value_name = "N")]
    pub profile_max_tokens: Option<u32>,
    /// Stop after this many candidates in a row without a kept profile [default: 200]
    #[arg(long, value_name = "N")]
    pub give_up_after: Option<usize>,
    /// A folder of prompt templates (`<name>.j2`) replacing the shipped data/prompts/synth ones.
    #[arg(long, value_name = "DIR")]
    pub prompts: Option<PathBuf>,
    /// Nodes and leaf jobs in flight (and the size of the model's call pool) [default: 8, or 1 for
    /// a local model (it decodes one request at a time; more in flight only queue)]
    #[arg(long)]
    pub concurrency: Option<usize>,
    /// Run directory to create [default: runs/synth-<timestamp>]
    #[arg(long, value_name = "DIR", conflicts_with = "resume")]
    pub out: Option<PathBuf>,
    /// Continue an interrupted run: finished nodes and leaf jobs are never redone.
    #[arg(long, value_name = "DIR")]
    pub resume: Option<PathBuf>,
    /// Print the summary as JSON.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, clap::Args)]
pub struct ValidateArgs {
    /// Ratings in long format, CSV or JSONL: `dialogue_id, rater, item, score` (docs/validate.md).
    #[arg(long, value_name = "FILE", required_unless_present_any = ["file", "known_groups"])]
    pub ratings: Option<PathBuf>,
    /// The ratings file, given positionally instead of with --ratings.
    #[arg(value_name = "FILE", conflicts_with = "ratings")]
    pub file: Option<PathBuf>,
    /// The rater whose rows are the judge's; every other rater is an expert.
    #[arg(long, value_name = "NAME", default_value = "judge")]
    pub judge_rater: String,
    /// Take the judge's scores from this run's judgments (dialogue id = session id); the ratings
    /// file then holds expert ratings only.
    #[arg(long, value_name = "DIR")]
    pub run: Option<PathBuf>,
    /// With --run: the judgment set (hash or unique prefix) [default: the most recent]
    #[arg(long, value_name = "HASH", requires = "run")]
    pub judge_hash: Option<String>,
    /// The rubric: a TOML file, or a built-in name (`ctrs`, `mi`). [default: ctrs]
    #[arg(long, value_name = "FILE|NAME")]
    pub rubric: Option<PathBuf>,
    /// A safety taxonomy file (TOML) instead of the shipped one.
    #[arg(long, value_name = "FILE")]
    pub taxonomy: Option<PathBuf>,
    /// Bootstrap resamples per 95% confidence interval (0: no intervals).
    #[arg(long, value_name = "B", default_value_t = 2000)]
    pub bootstrap: usize,
    /// Bootstrap seed (same seed, same intervals).
    #[arg(long, value_name = "S", default_value_t = 20_240_601)]
    pub seed: u64,
    /// Fit a monotone (isotonic) judge-to-consensus map per item and write it here, for
    /// `eval --calibration` / `judge --calibration`.
    #[arg(long, value_name = "OUT.toml")]
    pub fit_calibration: Option<PathBuf>,
    /// Print the report as JSON.
    #[arg(long)]
    pub json: bool,
    /// Also write the agreement tables and per-item judge-vs-consensus scatters (with the
    /// calibration curve under --fit-calibration) as one self-contained HTML file.
    #[arg(long, value_name = "FILE")]
    pub html: Option<PathBuf>,
    /// Known-groups validity on a run imported from a labelled corpus (`import-transcripts
    /// --label-col`): per item, behaviour count and derived score, the AUC that a HIGH dialogue
    /// outscores a LOW one, Cliff's delta and the one-sided Mann-Whitney p. Needs --run; no
    /// ratings file needed. E.g. `--known-groups quality=high>low`.
    #[arg(long, value_name = "LABEL=HIGH>LOW", requires = "run")]
    pub known_groups: Option<therapygym_validate::GroupSpec>,
    /// With --known-groups: map a corpus annotation value to rubric behaviour codes, e.g.
    /// `--annotation-map code:SR=simple_reflection` or `code:RES=simple_reflection+complex_reflection`;
    /// a column without a map counts values equal to a code id. Repeatable.
    #[arg(
        long,
        value_name = "COLUMN:VALUE=CODE[+CODE]",
        requires = "known_groups"
    )]
    pub annotation_map: Vec<String>,
}

#[derive(Debug, clap::Args)]
pub struct TrainArgs {
    /// The policy to train: `embedded` or `gguf:PATH` (the trainer updates local weights).
    #[arg(long)]
    pub policy: Option<String>,
    /// The simulated patient (model spec, frozen).
    #[arg(long)]
    pub patient: Option<String>,
    /// The judge whose reward is maximised (model spec, frozen).
    #[arg(long)]
    pub judge: Option<String>,
    /// Training profiles (JSONL, or Patient-Ψ JSON) [default: the shipped examples]
    #[arg(long, value_name = "FILE")]
    pub profiles: Option<PathBuf>,
    /// Held-out profiles for `--eval-every` (never trained on) [default: the shipped held-out set]
    #[arg(long, value_name = "FILE")]
    pub holdout: Option<PathBuf>,
    /// GRPO updates (steps) to run.
    #[arg(long, value_name = "N")]
    pub steps: Option<u64>,
    /// Sessions per profile and step (GRPO's G; at least 2).
    #[arg(long, value_name = "G")]
    pub group_size: Option<usize>,
    /// Profiles (groups) per step.
    #[arg(long, value_name = "N")]
    pub profiles_per_step: Option<usize>,
    /// Therapist turns per session.
    #[arg(long, value_name = "T")]
    pub turns: Option<u32>,
    /// Learning rate (peak rate with --warmup-steps).
    #[arg(long, value_name = "X")]
    pub lr: Option<f64>,
    /// Linear warm-up steps, then cosine decay to 10% of --lr at the last step (0 = constant rate).
    #[arg(long, value_name = "N")]
    pub warmup_steps: Option<u64>,
    /// Engine preset for the advantage ε and loss aggregation: verl (ε 1e-6), trl (1e-4),
    /// trl-grpo, openrlhf (1e-9) or dr_grpo (no std division).
    #[arg(long, value_name = "NAME")]
    pub preset: Option<String>,
    /// Override the preset's loss aggregation: token_mean, seq_mean_token_mean or dr_grpo.
    #[arg(long, value_name = "AGG")]
    pub loss_agg: Option<String>,
    /// Lower ratio clip ε_low.
    #[arg(long, value_name = "X")]
    pub clip_low: Option<f64>,
    /// Upper ratio clip ε_high.
    #[arg(long, value_name = "X")]
    pub clip_high: Option<f64>,
    /// Weight of the k3 KL penalty to the frozen starting policy (0 = off).
    #[arg(long, value_name = "X")]
    pub kl_coef: Option<f64>,
    /// Clip the global gradient norm (0 = no clipping).
    #[arg(long, value_name = "X")]
    pub max_grad_norm: Option<f64>,
    /// Sequences per forward/backward pass (memory vs speed; the update is the same).
    #[arg(long, value_name = "N")]
    pub micro_batch: Option<usize>,
    /// Held-out mean reward every K steps (0 = never).
    #[arg(long, value_name = "K")]
    pub eval_every: Option<u64>,
    /// A checkpoint every N steps (the last step always gets one).
    #[arg(long, value_name = "N")]
    pub checkpoint_every: Option<u64>,
    /// Checkpoints kept on disk.
    #[arg(long, value_name = "N")]
    pub keep_checkpoints: Option<usize>,
    /// Tensor type of the exported GGUF: q8_0, f16 or f32.
    #[arg(long, value_name = "TYPE")]
    pub export_type: Option<String>,
    /// Therapist system prompt: `baseline`, `cbt` or a template file.
    #[arg(long, value_name = "NAME|FILE")]
    pub therapist_prompt: Option<String>,
    /// Maximum tokens per therapist turn.
    #[arg(long)]
    pub therapist_max_tokens: Option<u32>,
    /// Maximum tokens per patient turn.
    #[arg(long)]
    pub patient_max_tokens: Option<u32>,
    /// Sampling temperature of the policy during rollouts.
    #[arg(long)]
    pub temperature: Option<f32>,
    /// Run seed: group seeds, therapist seeds and the profile order derive from it.
    #[arg(long)]
    pub seed: Option<u64>,
    #[command(flatten)]
    pub judge_args: JudgeArgs,
    /// Run directory to create [default: runs/train-<timestamp>]
    #[arg(long, value_name = "DIR", conflicts_with = "resume")]
    pub out: Option<PathBuf>,
    /// Continue an interrupted run from its newest checkpoint, with its own settings.
    #[arg(long, value_name = "DIR")]
    pub resume: Option<PathBuf>,
    /// Print the final step record as JSON.
    #[arg(long)]
    pub json: bool,
}

/// Bootstrap settings shared by `report` and `leaderboard`.
#[derive(Debug, Clone, clap::Args)]
pub struct BootstrapArgs {
    /// Bootstrap resamples per 95% interval.
    #[arg(long, value_name = "B", default_value_t = 2000)]
    pub bootstrap: usize,
    /// Bootstrap seed (same seed, same intervals).
    #[arg(long, value_name = "S", default_value_t = 20_240_601)]
    pub seed: u64,
    /// The judgment set of every run (hash or unique prefix) [default: each run's most recent]
    #[arg(long, value_name = "HASH")]
    pub judge_hash: Option<String>,
}

#[derive(Debug, clap::Args)]
pub struct ReportArgs {
    /// Run directories; the first is the baseline every other run is compared with.
    #[arg(required = true, value_name = "RUN_DIR")]
    pub runs: Vec<PathBuf>,
    /// The HTML file to write (with --json: the JSON file; default stdout).
    #[arg(long, value_name = "FILE")]
    pub out: Option<PathBuf>,
    /// Write the report's numbers as JSON instead of HTML, for CI gates.
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub bootstrap: BootstrapArgs,
}

#[derive(Debug, clap::Args)]
pub struct LeaderboardArgs {
    /// Run directories, one per therapist model (same profiles and seeds for paired tests).
    #[arg(required = true, value_name = "RUN_DIR")]
    pub runs: Vec<PathBuf>,
    /// Output file; its extension picks the format: `.html`, `.md` or `.json`. [default: Markdown
    /// on stdout]
    #[arg(long, value_name = "FILE")]
    pub out: Option<PathBuf>,
    #[command(flatten)]
    pub bootstrap: BootstrapArgs,
}

#[derive(Debug, clap::Args)]
pub struct ViewArgs {
    /// The run directory to browse.
    #[arg(value_name = "RUN_DIR")]
    pub run: PathBuf,
    /// Address to serve on; anything but loopback needs --allow-remote. Port 0 picks a free
    /// one. The address is printed as `viewer on http://HOST:PORT/`.
    #[arg(long, default_value = "127.0.0.1:8710")]
    pub addr: String,
    /// Serve on a non-loopback address (the viewer has no authentication: anyone who can reach
    /// it reads every transcript).
    #[arg(long)]
    pub allow_remote: bool,
    /// Write the viewer as static files into this new directory instead of serving it.
    #[arg(long, value_name = "DIR")]
    pub export: Option<PathBuf>,
}

/// The flags a user typed on the command line (not defaults), by argument id, with how they are
/// written (`--judge-max-tokens`). Commands that continue a run use it to tell a setting the
/// user asked for from a default, and to name the flag in messages.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Given {
    flags: std::collections::BTreeMap<String, String>,
}

impl Given {
    /// The subcommand's flags given in `matches` (parsed from `cmd`).
    pub fn from_matches(cmd: &clap::Command, matches: &clap::ArgMatches) -> Self {
        let mut flags = std::collections::BTreeMap::new();
        let Some((name, sub)) = matches.subcommand() else {
            return Self { flags };
        };
        let Some(sc) = cmd.find_subcommand(name) else {
            return Self { flags };
        };
        for id in sub.ids() {
            let id = id.as_str();
            if sub.value_source(id) != Some(clap::parser::ValueSource::CommandLine) {
                continue;
            }
            // Ids of argument groups (a derive struct's name) are not flags.
            let Some(arg) = sc.get_arguments().find(|a| a.get_id() == id) else {
                continue;
            };
            let shown = match arg.get_long() {
                Some(l) => format!("--{l}"),
                None => arg.get_id().as_str().to_uppercase(),
            };
            flags.insert(id.to_string(), shown);
        }
        Self { flags }
    }

    pub fn has(&self, id: &str) -> bool {
        self.flags.contains_key(id)
    }

    /// `(id, --flag)` of every flag given.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &str)> {
        self.flags.iter().map(|(k, v)| (k.as_str(), v.as_str()))
    }
}
