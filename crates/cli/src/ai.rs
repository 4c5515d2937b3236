//! `openledger generate` and `openledger chat`: run a model from the terminal with streaming output.

use anyhow::{bail, Context, Result};
use openledger_model::chat::{self, Message};
use openledger_model::device::{self, DeviceKind};
use openledger_model::{
    generate, load, peft, GenerateParams, Generation, Llama, LoraAdapter, SamplingParams, Tokenizer,
};
use std::io::{BufRead, IsTerminal, Write};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

#[derive(clap::Args, Debug)]
pub struct ModelArgs {
    /// GGUF file or Hugging Face model directory (config.json + *.safetensors).
    #[arg(
        long,
        env = "OPENLEDGER_MODEL",
        default_value = openledger_model::DEFAULT_MODEL_PATH
    )]
    pub model: PathBuf,
    /// PEFT LoRA adapter directory (adapter_config.json + adapter_model.safetensors) to apply.
    #[arg(long)]
    pub adapter: Option<PathBuf>,
    /// Worker threads for the matrix kernels (default: all cores).
    #[arg(long)]
    pub threads: Option<usize>,
    /// Device to run the model on (default: cuda when this build has CUDA support and a GPU is
    /// present, else cpu).
    #[arg(long, env = "OPENLEDGER_DEVICE", value_enum)]
    pub device: Option<DeviceArg>,
}

/// `--device`: where the model runs.
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum DeviceArg {
    Cpu,
    /// An NVIDIA GPU; needs a build with `--features cuda`.
    Cuda,
}

impl From<DeviceArg> for DeviceKind {
    fn from(d: DeviceArg) -> Self {
        match d {
            DeviceArg::Cpu => DeviceKind::Cpu,
            DeviceArg::Cuda => DeviceKind::Cuda,
        }
    }
}

#[derive(clap::Args, Debug)]
pub struct SamplingArgs {
    /// Most tokens to generate.
    #[arg(long, default_value_t = 256)]
    pub max_tokens: usize,
    /// 0 = greedy (deterministic); higher = more random.
    #[arg(long, default_value_t = 0.0)]
    pub temperature: f32,
    /// Sample among the k most likely tokens only (0 = all).
    #[arg(long, default_value_t = 0)]
    pub top_k: usize,
    /// Nucleus sampling: the smallest set of tokens with this much probability (1 = off).
    #[arg(long, default_value_t = 1.0)]
    pub top_p: f32,
    /// > 1 discourages repeating recent tokens (1 = off).
    #[arg(long, default_value_t = 1.0)]
    pub repetition_penalty: f32,
    /// Random seed for sampling.
    #[arg(long, default_value_t = 42)]
    pub seed: u64,
    /// Stop when the output contains this text (repeatable); the stop text is not printed.
    #[arg(long)]
    pub stop: Vec<String>,
}

impl SamplingArgs {
    fn params(&self) -> Result<GenerateParams> {
        if !(0.0..=1.0).contains(&self.top_p) || self.top_p == 0.0 {
            bail!("--top-p must be in (0, 1], got {}", self.top_p);
        }
        if self.temperature < 0.0 || self.repetition_penalty <= 0.0 {
            bail!("--temperature must be >= 0 and --repetition-penalty > 0");
        }
        Ok(GenerateParams {
            sampling: SamplingParams {
                temperature: self.temperature,
                top_k: self.top_k,
                top_p: self.top_p,
                repetition_penalty: self.repetition_penalty,
                seed: self.seed,
                ..Default::default()
            },
            max_tokens: self.max_tokens,
            stop: self.stop.clone(),
            stop_at_eos: true,
        })
    }
}

/// A model, its tokenizer and an optional adapter, ready to generate.
pub struct Loaded {
    pub model: Llama,
    pub tokenizer: Tokenizer,
    pub adapter: Option<Arc<LoraAdapter>>,
}

pub fn load_model(args: &ModelArgs) -> Result<Loaded> {
    if let Some(n) = args.threads {
        rayon::ThreadPoolBuilder::new()
            .num_threads(n.max(1))
            .build_global()
            .ok();
    }
    // First, so that an impossible --device is refused before anything is read.
    let device = device::open(args.device.map(DeviceKind::from))?;
    if !args.model.exists() {
        bail!(
            "model {} not found: run ./scripts/fetch-model for the default SmolLM2, or pass --model <file.gguf | hf-dir>",
            args.model.display()
        );
    }
    let t = Instant::now();
    let model = load::load(&args.model, &device)
        .with_context(|| format!("loading {}", args.model.display()))?;
    let tokenizer = Tokenizer::for_model(&args.model)
        .with_context(|| format!("tokenizer of {}", args.model.display()))?;
    let adapter = match &args.adapter {
        Some(dir) => {
            let a =
                peft::load(dir, &device).with_context(|| format!("adapter {}", dir.display()))?;
            model
                .check_adapter(&a)
                .with_context(|| format!("adapter {}", dir.display()))?;
            Some(Arc::new(a))
        }
        None => None,
    };
    eprintln!(
        "loaded {} ({} layers, {:.1} MB of weights{}) on {} in {:.2}s",
        args.model.display(),
        model.config.num_layers,
        model.size_bytes() as f64 / 1e6,
        if adapter.is_some() {
            ", with adapter"
        } else {
            ""
        },
        device::kind_name(&device),
        t.elapsed().as_secs_f64()
    );
    Ok(Loaded {
        model,
        tokenizer,
        adapter,
    })
}

fn chat_prompt(tok: &Tokenizer, messages: &[Message]) -> Result<String> {
    let template = tok.chat_template().unwrap_or(chat::CHATML);
    let name = |id: Option<u32>| id.and_then(|i| tok.id_to_token(i)).unwrap_or_default();
    Ok(chat::render(
        template,
        messages,
        true,
        &name(tok.bos()),
        &name(tok.eos().first().copied()),
    )?)
}

fn stream(l: &Loaded, prompt_ids: Vec<u32>, params: GenerateParams) -> Result<Generation> {
    let t = Instant::now();
    let mut out = std::io::stdout().lock();
    let g = generate(
        &l.model,
        &l.tokenizer,
        prompt_ids,
        params,
        l.adapter.clone(),
        &mut |piece| {
            out.write_all(piece.as_bytes())
                .and_then(|_| out.flush())
                .is_ok()
        },
    )?;
    writeln!(out)?;
    let secs = t.elapsed().as_secs_f64();
    eprintln!(
        "[{} prompt tokens, {} generated in {:.2}s, {:.1} tok/s, finish: {}]",
        g.prompt_tokens,
        g.tokens.len(),
        secs,
        g.tokens.len() as f64 / secs.max(1e-9),
        g.finish.as_str()
    );
    Ok(g)
}

/// `openledger generate`.
pub fn run_generate(
    m: &ModelArgs,
    s: &SamplingArgs,
    prompt: Option<String>,
    use_chat: bool,
    system: Option<String>,
) -> Result<()> {
    let params = s.params()?;
    let prompt = match prompt {
        Some(p) => p,
        None => {
            let mut text = String::new();
            std::io::Read::read_to_string(&mut std::io::stdin(), &mut text)
                .context("reading the prompt from stdin")?;
            text
        }
    };
    if prompt.trim().is_empty() {
        bail!("the prompt is empty (pass it as an argument or on stdin)");
    }
    let l = load_model(m)?;
    let ids = if use_chat {
        let mut msgs = Vec::new();
        if let Some(sys) = system {
            msgs.push(Message::new("system", &sys));
        }
        msgs.push(Message::new("user", &prompt));
        chat_ids(&l.tokenizer, &msgs)?
    } else {
        // A raw prompt is user text: special-token text in it stays text.
        l.tokenizer.encode(&prompt, false)?
    };
    stream(&l, ids, params)?;
    Ok(())
}

/// `openledger chat`: a conversation in the terminal (or over a pipe, one user turn per line).
pub fn run_chat(m: &ModelArgs, s: &SamplingArgs, system: Option<String>) -> Result<()> {
    let params = s.params()?;
    let l = load_model(m)?;
    let interactive = std::io::stdin().is_terminal();
    if interactive {
        eprintln!(
            "chat with {} — /reset clears the conversation, /exit or Ctrl-D quits",
            m.model.display()
        );
    }
    let mut history: Vec<Message> = system.iter().map(|s| Message::new("system", s)).collect();
    let stdin = std::io::stdin();
    let mut lines = stdin.lock().lines();
    loop {
        if interactive {
            eprint!("> ");
            std::io::stderr().flush().ok();
        }
        let Some(line) = lines.next() else { break };
        let line = line.context("reading stdin")?;
        let input = line.trim();
        match input {
            "" => continue,
            "/exit" | "/quit" => break,
            "/reset" => {
                history.retain(|m| m.role == "system");
                eprintln!("(conversation cleared)");
                continue;
            }
            _ => {}
        }
        history.push(Message::new("user", input));
        // The user's words are plain text: special-token text inside them stays text.
        let ids = chat_ids(&l.tokenizer, &history)?;
        if ids.len() + params.max_tokens >= l.model.config.max_position {
            eprintln!(
                "(the conversation is near the model's context length; /reset to start over)"
            );
        }
        let g = stream(&l, ids, params.clone())?;
        history.push(Message::new("assistant", g.text.trim()));
    }
    Ok(())
}

/// Token ids of the chat prompt, where message contents can never inject special tokens: the
/// template is rendered with placeholders, then each content is tokenized as plain text.
pub fn chat_ids(tok: &Tokenizer, messages: &[Message]) -> Result<Vec<u32>> {
    const MARK: &str = "\u{E000}";
    let masked: Vec<Message> = (0..messages.len())
        .map(|i| Message::new(&messages[i].role, &format!("{MARK}{i}{MARK}")))
        .collect();
    let rendered = chat_prompt(tok, &masked)?;
    let mut ids = Vec::new();
    let mut rest = rendered.as_str();
    while let Some(start) = rest.find(MARK) {
        ids.extend(tok.encode(&rest[..start], true)?);
        let after = &rest[start + MARK.len()..];
        let end = after
            .find(MARK)
            .context("chat template dropped a placeholder")?;
        let i: usize = after[..end]
            .parse()
            .context("chat template altered a placeholder")?;
        ids.extend(tok.encode(&messages[i].content, false)?);
        rest = &after[end + MARK.len()..];
    }
    ids.extend(tok.encode(rest, true)?);
    Ok(ids)
}
